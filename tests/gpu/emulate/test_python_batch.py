"""gqa.batch_attention's CUDA path in Python, run by emulate.sh against the emulated CUDA backend
(GQA_LIBRARY = the emulation's libgqa_emu.so, whose cudaMalloc hands out host memory it treats
as device memory). Arrays reach the binding as __cuda_array_interface__ objects, as CuPy's or
Numba's would: the device-metadata path (int32 CUDA arrays), error_flags, the workspace,
max_q_len and GQA_VALIDATE_METADATA, checked against the float64 reference one sequence at a
time (float16 only: bfloat16 has no typestr). What a GPU adds is in tests/python/test_gpu_batch.py.
"""
import ctypes
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
import gqa  # noqa: E402
from batch_support import expected, make_case  # noqa: E402
from gqa_testing import TOL, max_err  # noqa: E402

_runtime = ctypes.CDLL(os.environ["GQA_LIBRARY"])  # the same library gqa loaded: its cudaMalloc
_runtime.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
_runtime.cudaFree.argtypes = [ctypes.c_void_p]

F16 = np.dtype(np.float16)
MIXED = ([1, 9, 0, 13, 70, 5, 1], [30, 17, 5, 0, 3, 300, 0])


class DeviceArray:
    """Emulated device memory holding a copy of a NumPy array, seen through
    __cuda_array_interface__ (version 3, C-contiguous)."""

    def __init__(self, array):
        array = np.ascontiguousarray(array)
        self.shape, self.dtype = array.shape, array.dtype
        pointer = ctypes.c_void_p()
        assert _runtime.cudaMalloc(ctypes.byref(pointer), max(array.nbytes, 1)) == 0
        self.address = pointer.value
        self.numpy()[...] = array

    def numpy(self):
        """A NumPy view of the emulated device memory (host memory underneath)."""
        size = int(np.prod(self.shape)) * self.dtype.itemsize
        raw = (ctypes.c_char * max(size, 1)).from_address(self.address)
        return np.frombuffer(raw, np.uint8)[:size].view(self.dtype).reshape(self.shape)

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.address, False), "version": 3,
                "strides": None}

    def __del__(self):
        _runtime.cudaFree(self.address)


def on_device(case):
    d = {name: DeviceArray(getattr(case, name)) for name in ("q", "k", "v", "k_cache", "v_cache")}
    d.update({name: DeviceArray(getattr(case, name).astype(np.int32)) for name in ("q_indptr", "kv_lens", "page_table")})
    d["out"] = DeviceArray(np.full(case.q.shape, np.nan, case.q.dtype))
    d["error_flags"] = DeviceArray(np.zeros(1, np.int32))
    return d


def run(d, **options):
    gqa.batch_attention(d["q"], d["k"], d["v"], d["k_cache"], d["v_cache"], q_indptr=d["q_indptr"],
                        kv_lens=d["kv_lens"], page_table=d["page_table"], out=d["out"],
                        error_flags=d["error_flags"], **options)
    return d["out"].numpy()


def workspace(case, num_splits=0):
    total_q, Hq, D = case.q.shape
    size = gqa.batch_workspace_size(case.batch, total_q, Hq, case.k.shape[1], D, case.page_size,
                                    case.k_cache.shape[0], case.page_table.shape[1], num_splits=num_splits)
    return DeviceArray(np.zeros(max(size, 1), np.uint8)), size


def test_the_binding_runs_device_metadata():
    assert gqa.cuda_available(), gqa.cuda_unavailable_reason()
    case = make_case(np.random.default_rng(1), *MIXED, 14, 2, 64, F16, 7)
    d = on_device(case)
    ws, size = workspace(case)
    assert size > 0  # seven sequences on an emulated 132-SM device: split-KV pays
    out = run(d, workspace=ws)
    want, want_k, want_v = expected(case)
    assert max_err(out, want) <= TOL[F16]
    assert d["k_cache"].numpy().tobytes() == want_k.tobytes() and d["v_cache"].numpy().tobytes() == want_v.tobytes()
    assert d["error_flags"].numpy()[0] == 0


@pytest.mark.parametrize("num_splits", [1, 3])
def test_explicit_splits_and_max_q_len(num_splits):
    case = make_case(np.random.default_rng(2), [1, 2, 8, 0], [500, 90, 64, 3], 8, 2, 64, F16, 16)
    d = on_device(case)
    ws, _ = workspace(case, num_splits)
    out = run(d, workspace=ws, num_splits=num_splits, max_q_len=8)  # the decode kernel only
    assert max_err(out, expected(case)[0]) <= TOL[F16]


def test_out_of_range_metadata_is_flagged():
    case = make_case(np.random.default_rng(3), *MIXED, 14, 2, 64, F16, 7)
    want = expected(case)[0]
    case.kv_lens[1] = -5
    d = on_device(case)
    out = run(d, max_q_len=70)
    assert d["error_flags"].numpy()[0] == gqa.BATCH_FLAG_BAD_KV_LEN
    assert np.isnan(out[case.rows(1)]).all()
    assert max_err(out[case.rows(0)], want[case.rows(0)]) <= TOL[F16]
    case2 = make_case(np.random.default_rng(3), *MIXED, 14, 2, 64, F16, 7)
    d2 = on_device(case2)
    run(d2, max_q_len=13)  # sequence 4 (70 rows) exceeds it: skipped
    assert d2["error_flags"].numpy()[0] == gqa.BATCH_FLAG_BAD_INDPTR


def test_validation_mode_raises_and_writes_nothing(monkeypatch):
    case = make_case(np.random.default_rng(4), *MIXED, 14, 2, 64, F16, 7)
    case.page_table[5, 3] = case.k_cache.shape[0]
    d = on_device(case)
    before = d["k_cache"].numpy().tobytes()
    monkeypatch.setenv("GQA_VALIDATE_METADATA", "1")
    with pytest.raises(gqa.InvalidArgumentError, match=r"page_table\[5\]\[3\]"):
        run(d)
    assert np.isnan(d["out"].numpy()).all() and d["k_cache"].numpy().tobytes() == before
    monkeypatch.setenv("GQA_VALIDATE_METADATA", "on")
    with pytest.raises(gqa.InvalidArgumentError, match="GQA_VALIDATE_METADATA"):
        run(d)


def test_host_metadata_for_a_cuda_call_is_refused():
    case = make_case(np.random.default_rng(5), [1, 2], [4, 5], 4, 2, 64, F16, 16)
    d = on_device(case)
    with pytest.raises(gqa.InvalidArgumentError, match="q_indptr must be in device memory"):
        gqa.batch_attention(d["q"], d["k"], d["v"], d["k_cache"], d["v_cache"], q_indptr=case.q_indptr,
                            kv_lens=d["kv_lens"], page_table=d["page_table"], out=d["out"])
    assert np.isnan(d["out"].numpy()).all()
