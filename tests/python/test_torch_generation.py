"""A Hugging Face Qwen2 model with its attention run by libgqa generates the same greedy tokens
as with PyTorch's SDPA.

The model is randomly initialised and tiny (2 layers) but keeps Qwen2.5-0.5B's attention shape:
14 query heads sharing 2 KV heads, head_dim 64. On the CPU in float32.
"""
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gt = pytest.importorskip("gqa.torch")
import gqa  # noqa: E402

if not hasattr(transformers, "AttentionInterface"):
    pytest.skip("this transformers cannot register attention functions", allow_module_level=True)

NEW_TOKENS = 24
LOGIT_TOLERANCE = 1e-3  # float32 libgqa vs float32 SDPA, logits of O(1..10)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = transformers.Qwen2Config(
        vocab_size=512, hidden_size=14 * 64, intermediate_size=1024, num_hidden_layers=2,
        num_attention_heads=14, num_key_value_heads=2, head_dim=64, max_position_embeddings=256,
        rope_theta=10000.0, initializer_range=0.1, tie_word_embeddings=False)
    model = transformers.Qwen2ForCausalLM(config).eval()
    gt.register_hf_attention("gqa")
    return model


def greedy(model, attention, input_ids, attention_mask=None):
    model.set_attn_implementation(attention)
    with torch.no_grad():
        result = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=NEW_TOKENS,
                                min_new_tokens=NEW_TOKENS, do_sample=False, num_beams=1,
                                return_dict_in_generate=True, output_logits=True,
                                pad_token_id=0, eos_token_id=None)
    return result.sequences, torch.stack(result.logits, dim=1)


@pytest.fixture
def calls(monkeypatch):
    """Counts the libgqa calls made through gqa.torch, proving the model really used it."""
    counts = {"prefill": 0, "decode": 0}
    for name in counts:
        original = getattr(gqa, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(gqa, name, counted)
    return counts


@pytest.mark.parametrize("batch,prompt_len", [(1, 11), (2, 7)])
def test_greedy_tokens_match_sdpa(model, calls, batch, prompt_len):
    prompt = torch.randint(1, 512, (batch, prompt_len), generator=torch.Generator().manual_seed(batch))
    mask = torch.ones_like(prompt)
    want_tokens, want_logits = greedy(model, "sdpa", prompt, mask)
    got_tokens, got_logits = greedy(model, "gqa", prompt, mask)
    assert got_tokens.tolist() == want_tokens.tolist()
    assert (got_logits - want_logits).abs().max().item() <= LOGIT_TOLERANCE
    # One prefill per layer for the prompt, then one decode per layer and new token.
    layers = model.config.num_hidden_layers
    assert calls == {"prefill": layers, "decode": layers * (NEW_TOKENS - 1)}


def test_padding_mask_is_refused_not_ignored(model):
    prompt = torch.randint(1, 512, (2, 6), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(prompt)
    mask[1, :2] = 0  # left padding on the second sequence
    with pytest.raises(NotImplementedError, match="mask"):
        greedy(model, "gqa", prompt, mask)
