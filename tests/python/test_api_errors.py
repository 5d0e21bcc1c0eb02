"""Every bad call raises the right GQAError and writes NOTHING (out and caches compared bytewise)."""

import logging
import threading

import numpy as np
import pytest

import gqa
from gqa_testing import rand

B, S, HQ, HKV, D, M = 2, 5, 8, 2, 16, 12


def args(dtype=np.float32):
    rng = np.random.default_rng(0)
    return dict(q=rand(rng, (B, S, HQ, D), dtype), k=rand(rng, (B, S, HKV, D), dtype), v=rand(rng, (B, S, HKV, D), dtype),
                k_cache=rand(rng, (B, M, HKV, D), dtype), v_cache=rand(rng, (B, M, HKV, D), dtype),
                out=np.full((B, S, HQ, D), np.nan, dtype))


def dec_args(dtype=np.float32):
    a = args(dtype)
    for n in ("q", "k", "v", "out"):
        a[n] = np.ascontiguousarray(a[n][:, :1])
    return a


def assert_nothing_written(a, call, exc):
    before = {n: x.tobytes() for n, x in a.items() if isinstance(x, np.ndarray)}
    with pytest.raises(exc) as info:
        call()
    for n, x in a.items():
        if isinstance(x, np.ndarray):
            assert x.tobytes() == before[n], f"{n} was written by a rejected call"
    assert str(info.value)  # a message, from Python or the C library
    return info.value


PREFILL_BAD = {
    "q rank": lambda a: a.update(q=a["q"][0]),
    "k seq": lambda a: a.update(k=a["k"][:, :2].copy()),
    "v heads": lambda a: a.update(v=np.zeros((B, S, 1, D), np.float32)),
    "q heads not multiple": lambda a: a.update(q=np.ones((B, S, 3, D), np.float32), out=np.full((B, S, 3, D), np.nan, np.float32)),
    "out shape": lambda a: a.update(out=np.full((B, S, HQ, D + 1), np.nan, np.float32)),
    "cache heads": lambda a: a.update(k_cache=np.zeros((B, M, 1, D), np.float32)),
    "v_cache length": lambda a: a.update(v_cache=np.zeros((B, M + 1, HKV, D), np.float32)),
    "dtype mix": lambda a: a.update(k=a["k"].astype(np.float16)),
    "float64": lambda a: a.update(q=a["q"].astype(np.float64)),
    "int": lambda a: a.update(v=a["v"].astype(np.int16)),
    "out non-contiguous": lambda a: a.update(out=np.full((B, S, HQ, 2 * D), np.nan, np.float32)[..., ::2]),
    "cache non-contiguous": lambda a: a.update(k_cache=np.zeros((B, M, HKV, 2 * D), np.float32)[..., ::2]),
    "one cache only": lambda a: a.update(v_cache=None),
    "q None": lambda a: a.update(q=None),
    "list input": lambda a: a.update(k=a["k"].tolist()),
    "negative start": lambda a: a.update(start_pos=-1),
    "nan scale": lambda a: a.update(scale=float("nan")),
    "negative scale": lambda a: a.update(scale=-1.0),
}


@pytest.mark.parametrize("case", sorted(PREFILL_BAD))
def test_prefill_bad_input_writes_nothing(case):
    a = args()
    PREFILL_BAD[case](a)
    call = lambda: gqa.prefill(a["q"], a["k"], a["v"], a["k_cache"], a["v_cache"], out=a["out"],
                               start_pos=a.get("start_pos", 0), scale=a.get("scale"))
    assert_nothing_written(a, call, gqa.InvalidArgumentError)


def test_prefill_start_without_cache_rejected():
    a = args()
    assert_nothing_written(a, lambda: gqa.prefill(a["q"], a["k"], a["v"], start_pos=1, out=a["out"]), gqa.InvalidArgumentError)


@pytest.mark.parametrize("start", [M - S + 1, M, 10**6])
def test_prefill_cache_overflow(start):
    a = args()
    e = assert_nothing_written(a, lambda: gqa.prefill(a["q"], a["k"], a["v"], a["k_cache"], a["v_cache"], start_pos=start, out=a["out"]),
                               gqa.CacheOverflowError)
    assert e.status == 2 and isinstance(e, gqa.GQAError)


def test_prefill_exact_fit_ok():
    a = args()
    gqa.prefill(a["q"], a["k"], a["v"], a["k_cache"], a["v_cache"], start_pos=M - S, out=a["out"])
    assert np.isfinite(a["out"]).all()


@pytest.mark.parametrize("lens", [M, [0, M], [M + 5, 1]])
def test_decode_cache_overflow(lens):
    a = dec_args()
    assert_nothing_written(a, lambda: gqa.decode(a["q"], a["k"], a["v"], a["k_cache"], a["v_cache"], lens, out=a["out"]),
                           gqa.CacheOverflowError)


DECODE_BAD = {
    "negative len": lambda a: a.update(cache_len=-1),
    "negative per-seq len": lambda a: a.update(cache_len=[0, -3]),
    "lens wrong count": lambda a: a.update(cache_len=[1, 2, 3]),
    "lens too big for int32": lambda a: a.update(cache_len=[2**40, 0]),
    "q seq 2": lambda a: a.update(q=np.ones((B, 2, HQ, D), np.float32)),
    "cache dtype": lambda a: a.update(v_cache=a["v_cache"].astype(np.float16)),
    "cache None": lambda a: a.update(k_cache=None),
    "cache non-contiguous": lambda a: a.update(v_cache=np.zeros((B, 2 * M, HKV, D), np.float32)[:, ::2]),
    "out read-only": lambda a: a["out"].setflags(write=False),
    "negative splits": lambda a: a.update(num_splits=-1),
    "inf scale": lambda a: a.update(scale=float("inf")),
}


@pytest.mark.parametrize("case", sorted(DECODE_BAD))
def test_decode_bad_input_writes_nothing(case):
    a = dec_args()
    a["cache_len"] = 3
    DECODE_BAD[case](a)
    assert_nothing_written(a, lambda: gqa.decode(a["q"], a["k"], a["v"], a["k_cache"], a["v_cache"], a["cache_len"],
                                                 out=a["out"], scale=a.get("scale"), num_splits=a.get("num_splits", 0)),
                           gqa.InvalidArgumentError)


def test_error_hierarchy():
    assert issubclass(gqa.InvalidArgumentError, ValueError)
    for cls in (gqa.InvalidArgumentError, gqa.CacheOverflowError, gqa.UnsupportedError, gqa.DeviceError,
                gqa.VersionMismatchError, gqa.InternalError):
        assert issubclass(cls, gqa.GQAError)


def test_c_message_passes_through():
    a = args()
    with pytest.raises(gqa.CacheOverflowError) as info:
        gqa.prefill(a["q"], a["k"], a["v"], a["k_cache"], a["v_cache"], start_pos=M)
    assert "max_seq_len" in str(info.value) or str(M) in str(info.value)


class FakeCudaArray:
    """A GPU-looking object: its pointer must never be dereferenced on a GPU-less machine."""

    _next = 0x10000000

    def __init__(self, shape, typestr="<f2"):
        FakeCudaArray._next += 0x1000000  # distinct, non-overlapping fake addresses
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (FakeCudaArray._next, False),
                                         "version": 3, "strides": None}


def test_fake_cuda_reaches_c_and_fails_cleanly():
    if gqa.cuda_available():
        pytest.skip("a real GPU is present; the fake pointer would be used")
    fake = lambda s: FakeCudaArray(s)
    with pytest.raises(gqa.GQAError) as info:
        gqa.prefill(fake((1, 4, 2, 8)), fake((1, 4, 1, 8)), fake((1, 4, 1, 8)), out=fake((1, 4, 2, 8)))
    assert isinstance(info.value, (gqa.DeviceError, gqa.UnsupportedError))


def test_mixing_host_and_device_rejected():
    q = np.ones((1, 4, 2, 8), np.float16)
    with pytest.raises(gqa.InvalidArgumentError, match="one device"):
        gqa.prefill(q, FakeCudaArray((1, 4, 1, 8)), np.ones((1, 4, 1, 8), np.float16))


def test_version_and_threads():
    assert isinstance(gqa.version(), str) and gqa.version() == gqa.__version__
    assert isinstance(gqa.cuda_available(), bool)
    with pytest.raises(gqa.InvalidArgumentError):
        gqa.set_num_threads(-1)


def test_logging_bridge(caplog):
    rng = np.random.default_rng(0)
    q, k, v = rand(rng, (1, 3, 14, 64), np.float32), rand(rng, (1, 3, 2, 64), np.float32), rand(rng, (1, 3, 2, 64), np.float32)
    with caplog.at_level(logging.DEBUG, logger="gqa"):
        gqa.set_log_level("DEBUG")
        try:
            gqa.prefill(q, k, v)
        finally:
            gqa.set_log_level("WARNING")
    msgs = [r.getMessage() for r in caplog.records if r.name == "gqa" and r.levelno == logging.DEBUG]
    assert msgs, "no DEBUG message reached the gqa logger"
    text = " ".join(msgs).lower()
    assert "prefill" in text and ("14" in text and "64" in text)


def test_logging_callback_exception_does_not_escape(caplog):
    class Boom(logging.Handler):
        def emit(self, record):
            raise RuntimeError("handler failure")
    h = Boom()
    logging.getLogger("gqa").addHandler(h)
    try:
        gqa.set_log_level("DEBUG")
        rng = np.random.default_rng(0)
        q = rand(rng, (1, 2, 2, 8), np.float32)
        out = gqa.prefill(q, q[:, :, :1].copy(), q[:, :, :1].copy())
        assert np.isfinite(out).all()
    finally:
        gqa.set_log_level("WARNING")
        logging.getLogger("gqa").removeHandler(h)


# Each C config field wrong, through the raw binding (Python cannot produce most of these):
# the status maps to the right exception class and nothing is written.
from gqa._errors import error_for_status  # noqa: E402
from gqa._ffi import ffi, lib  # noqa: E402

PREFILL_FIELDS = {
    "struct_size": (0, gqa.VersionMismatchError), "abi_version": (99, gqa.VersionMismatchError),
    "dtype": (7, gqa.InvalidArgumentError), "device": (0, gqa.InvalidArgumentError),
    "batch_size": (0, gqa.InvalidArgumentError), "seq_len": (-1, gqa.InvalidArgumentError),
    "num_q_heads": (3, gqa.InvalidArgumentError), "num_kv_heads": (0, gqa.InvalidArgumentError),
    "head_dim": (0, gqa.InvalidArgumentError), "max_seq_len": (0, gqa.InvalidArgumentError),
    "start_pos": (-2, gqa.InvalidArgumentError), "causal": (2, gqa.InvalidArgumentError),
    "scale": (float("nan"), gqa.InvalidArgumentError), "reserved": (1, gqa.InvalidArgumentError),
}


@pytest.mark.parametrize("field", sorted(PREFILL_FIELDS))
def test_prefill_config_field_wrong(field):
    a = args()
    cfg = ffi.new("gqa_prefill_config*")
    lib.gqa_prefill_config_init(cfg)
    cfg.dtype, cfg.device = lib.GQA_DTYPE_F32, lib.GQA_DEVICE_CPU
    cfg.batch_size, cfg.seq_len, cfg.num_q_heads, cfg.num_kv_heads, cfg.head_dim, cfg.max_seq_len = B, S, HQ, HKV, D, M
    value, exc = PREFILL_FIELDS[field]
    setattr(cfg, field, value)
    p = lambda n: ffi.cast("void*", a[n].ctypes.data)

    def call():
        status = lib.gqa_attention_prefill(p("out"), p("q"), p("k"), p("v"), p("k_cache"), p("v_cache"), cfg, ffi.NULL)
        if status:
            raise error_for_status(status, ffi.string(lib.gqa_last_error()).decode())

    e = assert_nothing_written(a, call, exc)
    assert type(e) is exc


DECODE_FIELDS = {
    "struct_size": (4, gqa.VersionMismatchError), "dtype": (0, gqa.InvalidArgumentError),
    "batch_size": (-1, gqa.InvalidArgumentError), "num_q_heads": (0, gqa.InvalidArgumentError),
    "num_kv_heads": (3, gqa.InvalidArgumentError), "head_dim": (-5, gqa.InvalidArgumentError),
    "max_seq_len": (0, gqa.InvalidArgumentError), "cache_len": (-1, gqa.InvalidArgumentError),
    "num_splits": (257, gqa.InvalidArgumentError), "scale": (float("-inf"), gqa.InvalidArgumentError),
    "abi_version": (0, gqa.VersionMismatchError), "device": (3, gqa.InvalidArgumentError),
}


@pytest.mark.parametrize("field", sorted(DECODE_FIELDS))
def test_decode_config_field_wrong(field):
    a = dec_args()
    cfg = ffi.new("gqa_decode_config*")
    lib.gqa_decode_config_init(cfg)
    cfg.dtype, cfg.device = lib.GQA_DTYPE_F32, lib.GQA_DEVICE_CPU
    cfg.batch_size, cfg.num_q_heads, cfg.num_kv_heads, cfg.head_dim, cfg.max_seq_len, cfg.cache_len = B, HQ, HKV, D, M, 3
    value, exc = DECODE_FIELDS[field]
    setattr(cfg, field, value)
    p = lambda n: ffi.cast("void*", a[n].ctypes.data)

    def call():
        status = lib.gqa_attention_decode(p("out"), p("q"), p("k"), p("v"), p("k_cache"), p("v_cache"), cfg, ffi.NULL)
        if status:
            raise error_for_status(status, ffi.string(lib.gqa_last_error()).decode())

    e = assert_nothing_written(a, call, exc)
    assert type(e) is exc


@pytest.mark.parametrize("null", ["out", "q", "k", "v", "k_cache", "v_cache"])
def test_decode_null_pointer(null):
    a = dec_args()
    cfg = ffi.new("gqa_decode_config*")
    lib.gqa_decode_config_init(cfg)
    cfg.dtype, cfg.device = lib.GQA_DTYPE_F32, lib.GQA_DEVICE_CPU
    cfg.batch_size, cfg.num_q_heads, cfg.num_kv_heads, cfg.head_dim, cfg.max_seq_len, cfg.cache_len = B, HQ, HKV, D, M, 3
    p = lambda n: ffi.NULL if n == null else ffi.cast("void*", a[n].ctypes.data)
    before = {n: a[n].tobytes() for n in a}
    status = lib.gqa_attention_decode(p("out"), p("q"), p("k"), p("v"), p("k_cache"), p("v_cache"), cfg, ffi.NULL)
    assert status == lib.GQA_STATUS_INVALID_ARGUMENT
    assert all(a[n].tobytes() == before[n] for n in a)


def test_cdef_comes_from_header():
    from gqa._ffi import HEADER_PATH, cdef_from_header
    cdef = cdef_from_header(HEADER_PATH.read_text())
    assert "gqa_attention_prefill" in cdef and "GQA_API" not in cdef and "/*" not in cdef
    assert "#define GQA_ABI_VERSION" in cdef and "#include" not in cdef
    assert lib.gqa_abi_version() == lib.GQA_ABI_VERSION


def test_stream_objects_accepted_for_cpu_arrays():
    class TorchLikeStream:
        cuda_stream = 0

    rng = np.random.default_rng(0)
    q = rand(rng, (1, 2, 2, 8), np.float32)
    k = q[:, :, :1].copy()
    for s in (None, 0, TorchLikeStream()):
        assert np.isfinite(gqa.prefill(q, k, k, stream=s)).all()


# ---- repeat calls: the plain path remembers its last shapes (and config); nothing else -------------

def _outcome(call):
    """(error type, message), or the bytes of the result."""
    try:
        return call().tobytes()
    except gqa.GQAError as e:
        return type(e), str(e)


def _first_call(call):
    """_outcome(call) in a thread that has made no call (remembers nothing)."""
    result = []
    thread = threading.Thread(target=lambda: result.append(_outcome(call)))
    thread.start()
    thread.join()
    return result[0]


def _call_of(op, a):
    if op == "prefill":
        return lambda: gqa.prefill(a["q"], a["k"], a["v"], a["k_cache"], a["v_cache"], out=a["out"],
                                   start_pos=a.get("start_pos", 0), scale=a.get("scale"), causal=a.get("causal", True))
    return lambda: gqa.decode(a["q"], a["k"], a["v"], a["k_cache"], a["v_cache"], a.get("cache_len", 3), out=a["out"],
                              scale=a.get("scale"), num_splits=a.get("num_splits", 0))


def _in_place(name, attr, value):
    """A case that changes array `name` itself (the same object as in the calls before): its
    attribute attr becomes value(the array)."""
    def change(a):
        x = a[name]
        if attr == "writeable":
            x.flags.writeable = value(x)
        else:
            setattr(x, attr, value(x))
    return change


SAME_OBJECT_BAD = {
    "k dtype in place": _in_place("k", "dtype", lambda x: np.int32),
    "out dtype in place": _in_place("out", "dtype", lambda x: np.int32),
    "v shape in place": _in_place("v", "shape", lambda x: (*x.shape[:2], HKV * D)),
    "out shape in place": _in_place("out", "shape", lambda x: (*x.shape[:2], HQ // 2, 2 * D)),
    "k_cache shape in place": _in_place("k_cache", "shape", lambda x: (B, M // 2, HKV, 2 * D)),
    "k_cache read-only in place": _in_place("k_cache", "writeable", lambda x: False),
    "out read-only in place": _in_place("out", "writeable", lambda x: False),
}


@pytest.mark.parametrize("op, case", [("prefill", c) for c in sorted(PREFILL_BAD)]
                         + [("decode", c) for c in sorted(DECODE_BAD)]
                         + [(op, c) for op in ("prefill", "decode") for c in sorted(SAME_OBJECT_BAD)])
def test_a_bad_call_after_good_ones_of_its_shapes_is_refused_as_a_first_call_is(op, case):
    """After plain calls of one shape (the same arrays), a call with one thing changed (another
    array, or the same array with another dtype, shape or writeable flag) is checked in full:
    the same error as in a thread that never called, and nothing written."""
    a = args() if op == "prefill" else dec_args()
    call = _call_of(op, a)
    for _ in range(3):
        call()
    a["out"][...] = np.nan
    (PREFILL_BAD if op == "prefill" else DECODE_BAD).get(case, SAME_OBJECT_BAD.get(case))(a)
    error = assert_nothing_written(a, call, gqa.GQAError)
    assert (type(error), str(error)) == _first_call(call)


@pytest.mark.parametrize("op", ["prefill", "decode"])
def test_repeat_calls_with_other_arrays_and_scalars_give_what_a_first_call_gives(op):
    """Calls of one shape in a row, changing the arrays (new objects) and the scalars a config
    holds (causal, scale, num_splits) or each call sets (start_pos, cache_len): each result is
    bitwise what the same call gives in a thread that never called."""
    a = args() if op == "prefill" else dec_args()
    changes = [{}, {"scale": 0.5}, {"scale": 0.5}, {}, {"q": a["q"] * 2.0}, {"out": np.empty_like(a["out"])}]
    changes += ([{"causal": False}, {"start_pos": 3}, {"causal": False, "scale": 0.25}, {}] if op == "prefill"
                else [{"num_splits": 2}, {"cache_len": 7}, {"num_splits": 2, "scale": 0.25}, {}])
    for change in changes:
        b = dict(a, **change)
        for name in ("k_cache", "v_cache", "out"):  # written: each call starts from the same contents
            b[name] = a[name].copy()
        first = _first_call(_call_of(op, dict(b, k_cache=b["k_cache"].copy(), v_cache=b["v_cache"].copy())))
        assert _outcome(_call_of(op, b)) == first, change
