"""Scalar arguments of the Python API: a value that is not what the parameter means raises
InvalidArgumentError naming the parameter and the value, before anything is written; it is
never truncated (3.5 -> 3), wrapped (2**40), or taken for an integer (True, "3", 3.0)."""

import numpy as np
import pytest

import gqa
from gqa_testing import TOL, rand

B, S, HQ, HKV, D, M = 2, 3, 4, 2, 16, 12


def tensors(dtype=np.float32, seq=S):
    rng = np.random.default_rng(1)
    return dict(q=rand(rng, (B, seq, HQ, D), dtype), k=rand(rng, (B, seq, HKV, D), dtype),
                v=rand(rng, (B, seq, HKV, D), dtype), k_cache=rand(rng, (B, M, HKV, D), dtype),
                v_cache=rand(rng, (B, M, HKV, D), dtype), out=np.full((B, seq, HQ, D), np.nan, dtype))


def rejects(call, a, name, shown):
    """call() raises InvalidArgumentError naming `name` and showing `shown`; nothing in `a` changed."""
    before = {n: x.tobytes() for n, x in a.items()}
    with pytest.raises(gqa.InvalidArgumentError) as info:
        call()
    for n, x in a.items():
        assert x.tobytes() == before[n], f"{n} was written by a rejected call"
    message = str(info.value)
    assert name in message and shown in message, message


def decode(a, cache_len, **kw):
    return gqa.decode(a["q"], a["k"], a["v"], a["k_cache"], a["v_cache"], cache_len, out=a["out"], **kw)


def prefill(a, **kw):
    return gqa.prefill(a["q"], a["k"], a["v"], a["k_cache"], a["v_cache"], out=a["out"], **kw)


BAD_CACHE_LEN = {
    "float": (3.5, "3.5"), "integral float": (3.0, "3.0"), "numpy float": (np.float64(3.0), "3.0"),
    "0-d float array": (np.array(3.5), "3.5"), "float list": ([3.7, 4.2], "3.7"),
    "float array": (np.array([3.0, 4.0]), "3."), "bool": (True, "True"), "bool list": ([True, False], "True"),
    "str": ("3", "'3'"), "str list": (["3", "4"], "'3'"), "beyond int32": (2**40, str(2**40)),
    "list beyond int32": ([3, 2**40], str(2**40)), "beyond int64": ([3, 2**70], str(2**70)),
    "None": (None, "None"), "nested": ([[3], [4]], "shape"),
}


@pytest.mark.parametrize("case", sorted(BAD_CACHE_LEN))
def test_decode_cache_len_rejected(case):
    value, shown = BAD_CACHE_LEN[case]
    a = tensors(seq=1)
    rejects(lambda: decode(a, value), a, "cache_len", shown)


@pytest.mark.parametrize("value", [3, np.int64(3), np.uint8(3), np.array(3), [3, 4], (3, 4),
                                   np.array([3, 4], np.int64), np.array([3, 4], np.uint16)])
def test_decode_cache_len_integers_accepted(value):
    a = tensors(seq=1)
    want = gqa.reference.decode(a["q"], a["k"], a["v"], a["k_cache"].copy(), a["v_cache"].copy(), value)
    got = decode(a, value)
    assert np.max(np.abs(got - want)) < TOL[np.dtype(np.float32)]


BAD_PREFILL = {
    "start_pos float": (dict(start_pos=2.5), "start_pos", "2.5"),
    "start_pos integral float": (dict(start_pos=2.0), "start_pos", "2.0"),
    "start_pos beyond int32": (dict(start_pos=2**33), "start_pos", str(2**33)),
    "start_pos bool": (dict(start_pos=True), "start_pos", "True"),
    "start_pos str": (dict(start_pos="1"), "start_pos", "'1'"),
    "causal str": (dict(causal="no"), "causal", "'no'"),
    "causal 2": (dict(causal=2), "causal", "2"),
    "causal float": (dict(causal=0.5), "causal", "0.5"),
    "causal None": (dict(causal=None), "causal", "None"),
    "scale str": (dict(scale="0.1"), "scale", "'0.1'"),
    "scale bool": (dict(scale=True), "scale", "True"),
    "scale list": (dict(scale=[0.1]), "scale", "[0.1]"),
    "scale beyond fp32": (dict(scale=1e39), "scale", "1e+39"),
    "scale overflows the logits": (dict(scale=3e38), "scale", "3e+38"),  # the C bound (gqa.h)
}


@pytest.mark.parametrize("case", sorted(BAD_PREFILL))
def test_prefill_scalar_rejected(case):
    kwargs, name, shown = BAD_PREFILL[case]
    a = tensors()
    rejects(lambda: prefill(a, **kwargs), a, name, shown)


@pytest.mark.parametrize("kwargs", [dict(start_pos=np.int32(2)), dict(start_pos=np.array(2)),
                                    dict(causal=np.bool_(False)), dict(causal=0), dict(causal=np.int64(1)),
                                    dict(scale=np.float32(0.25)), dict(scale=1), dict(scale=np.float16(0.5))])
def test_prefill_scalar_forms_accepted(kwargs):
    a = tensors()
    want = gqa.reference.prefill(a["q"], a["k"], a["v"], a["k_cache"].copy(), a["v_cache"].copy(), **kwargs)
    assert np.max(np.abs(prefill(a, **kwargs) - want)) < TOL[np.dtype(np.float32)]


BAD_DECODE = {
    "num_splits beyond int32": (dict(num_splits=2**40), "num_splits", str(2**40)),
    "num_splits float": (dict(num_splits=1.5), "num_splits", "1.5"),
    "num_splits str": (dict(num_splits="2"), "num_splits", "'2'"),
    "num_splits bool": (dict(num_splits=True), "num_splits", "True"),
    "scale str": (dict(scale="0.1"), "scale", "'0.1'"),
    "scale beyond fp32": (dict(scale=-1e39), "scale", "-1e+39"),
}


@pytest.mark.parametrize("case", sorted(BAD_DECODE))
def test_decode_scalar_rejected(case):
    kwargs, name, shown = BAD_DECODE[case]
    a = tensors(seq=1)
    rejects(lambda: decode(a, 3, **kwargs), a, name, shown)


@pytest.mark.parametrize("value, shown", [(2**40, str(2**40)), (2.0, "2.0"), ("2", "'2'"), (True, "True"),
                                          (None, "None")])
def test_set_num_threads_rejected(value, shown):
    before = gqa.get_num_threads()
    rejects(lambda: gqa.set_num_threads(value), {}, "num_threads", shown)
    assert gqa.get_num_threads() == before


def test_set_num_threads_numpy_integer():
    gqa.set_num_threads(0)
    before = gqa.get_num_threads()
    try:
        gqa.set_num_threads(np.int64(3))
        assert gqa.get_num_threads() == 3
    finally:
        gqa.set_num_threads(0)
    assert gqa.get_num_threads() == before


@pytest.mark.parametrize("value, shown", [("nonsense", "'nonsense'"), (2**40, str(2**40)), (10.0, "10.0"),
                                          (True, "True"), (None, "None"), (-1, "-1")])
def test_set_log_level_rejected(value, shown):
    from gqa._ffi import lib

    before = lib.gqa_get_log_level()
    rejects(lambda: gqa.set_log_level(value), {}, "level", shown)
    assert lib.gqa_get_log_level() == before


@pytest.mark.parametrize("value, level", [("debug", 10), (" Info ", 20), ("WARN", 30), (np.int64(40), 40),
                                          ("off", 100), (30, 30)])
def test_set_log_level_accepted(value, level):
    import logging

    from gqa import _logging
    from gqa._ffi import lib

    logger = logging.getLogger("gqa")
    before = logger.level
    try:
        gqa.set_log_level(value)
        assert lib.gqa_get_log_level() == level
    finally:
        logger.setLevel(before)
        _logging.sync_level()


@pytest.mark.parametrize("kwargs, name, shown", [
    (dict(batch_size=2.5), "batch_size", "2.5"), (dict(head_dim=2**40), "head_dim", str(2**40)),
    (dict(dtype="float64"), "dtype", "'float64'"), (dict(device="tpu"), "device", "'tpu'"),
])
def test_decode_workspace_size_rejected(kwargs, name, shown):
    args = dict(batch_size=1, num_q_heads=4, num_kv_heads=2, head_dim=16, max_seq_len=64, dtype="float16", device="cpu")
    args.update(kwargs)
    rejects(lambda: gqa.decode_workspace_size(**args), {}, name, shown)


# ---- gqa.torch: the same checks and the same error classes -----------------------------------

torch = pytest.importorskip("torch")
gt = pytest.importorskip("gqa.torch")


def torch_tensors(seq=1):
    return {n: torch.from_numpy(x) for n, x in tensors(seq=seq).items()}


def torch_rejects(call, t, name, shown):
    before = {n: x.clone() for n, x in t.items()}
    with pytest.raises(gqa.InvalidArgumentError) as info:
        call()
    for n, x in t.items():
        assert torch.equal(x, before[n]) or (x.isnan() & before[n].isnan()).all(), f"{n} was written"
    assert name in str(info.value) and shown in str(info.value), str(info.value)


@pytest.mark.parametrize("value, shown", [(torch.tensor([3.7, 4.2]), "3.7"), (torch.tensor([3.0, 4.0]), "3.0"),
                                          (torch.tensor(3.5), "3.5"), (torch.tensor([True, False]), "True"),
                                          (3.5, "3.5"), ([3.7, 4.2], "3.7"), (2**40, str(2**40)),
                                          (torch.tensor([3, 2**40]), str(2**40))])
def test_torch_decode_cache_len_rejected(value, shown):
    t = torch_tensors()
    torch_rejects(lambda: gt.decode(t["q"], t["k"], t["v"], t["k_cache"], t["v_cache"], value, out=t["out"]), t,
                  "cache_len", shown)


@pytest.mark.parametrize("value", [torch.tensor([3, 4]), torch.tensor([3, 4], dtype=torch.int32), torch.tensor(3),
                                   3, [3, 4]])
def test_torch_decode_cache_len_integers_accepted(value):
    t = torch_tensors()
    out = gt.decode(t["q"], t["k"], t["v"], t["k_cache"], t["v_cache"], value)
    assert not out.isnan().any()


def test_torch_prefill_scalars_rejected():
    t = torch_tensors(seq=S)
    call = lambda **kw: gt.prefill(t["q"], t["k"], t["v"], t["k_cache"], t["v_cache"], out=t["out"], **kw)
    torch_rejects(lambda: call(start_pos=2.5), t, "start_pos", "2.5")
    torch_rejects(lambda: call(causal="no"), t, "causal", "'no'")
    torch_rejects(lambda: call(scale="0.1"), t, "scale", "'0.1'")


def test_torch_errors_are_gqa_errors():
    q, k, v = torch.randn(1, 1, 4, 16), torch.randn(1, 1, 2, 16), torch.randn(1, 1, 2, 16)
    cache = torch.zeros(1, 8, 2, 16)
    strided = torch.zeros(1, 2, 8, 16).transpose(1, 2)
    cases = {
        "float64": lambda: gt.prefill(q.double(), k.double(), v.double()),
        "int tensor": lambda: gt.prefill(q.int(), k.int(), v.int()),
        "not a tensor": lambda: gt.prefill(q.numpy(), k, v),
        "strided cache": lambda: gt.decode(q, k, v, strided, cache.clone(), 0),
        "one cache": lambda: gt.prefill(q, k, v, cache.clone(), None),
        "out shape": lambda: gt.prefill(q, k, v, out=torch.empty(1, 1, 4, 8)),
        "meta q, cpu k, v": lambda: gt.prefill(q.to("meta"), k, v),  # meta alone runs the fake kernel
    }
    for name, call in cases.items():
        with pytest.raises(gqa.GQAError) as info:
            call()
        assert isinstance(info.value, gqa.InvalidArgumentError), (name, type(info.value))
