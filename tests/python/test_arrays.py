"""The array adapters (gqa/_arrays.py): one path per kind of array, the same answer for the same
memory, and the decode workspace as raw bytes (any dtype, or an explicit (address, nbytes)).

On the CPU the workspace is ignored by libgqa, so these tests check what Python accepts and
rejects; test_gpu.py runs split-KV through the same path on a GPU."""

import numpy as np
import pytest

import gqa
from gqa import _arrays
from gqa_testing import BF16, poisoned, rand

try:
    import torch
except ImportError:  # pragma: no cover - torch is installed in CI
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs PyTorch")

B, HQ, HKV, D, MAXLEN, LEN = 2, 4, 2, 16, 12, 5


def decode_inputs(dtype=np.float16):
    rng = np.random.default_rng(7)
    q, k, v = rand(rng, (B, 1, HQ, D), dtype), rand(rng, (B, 1, HKV, D), dtype), rand(rng, (B, 1, HKV, D), dtype)
    kc, vc = rand(rng, (B, MAXLEN, HKV, D), dtype), rand(rng, (B, MAXLEN, HKV, D), dtype)
    return q, k, v, kc, vc


def test_workspace_any_buffer_kind_is_accepted():
    q, k, v, kc, vc = decode_inputs()
    want = gqa.decode(q, k, v, kc.copy(), vc.copy(), LEN)
    host = np.zeros(1000, np.uint8)
    buffers = [host, np.zeros(250, np.float32), (host.ctypes.data, host.nbytes)]
    if torch is not None:
        buffers.append(torch.zeros(1000, dtype=torch.uint8))
    for ws in buffers:
        got = gqa.decode(q, k, v, kc.copy(), vc.copy(), LEN, workspace=ws, out=poisoned(q.shape, q.dtype))
        assert np.array_equal(got.view(np.uint16), want.view(np.uint16)), type(ws)


def test_buffer_size_is_the_bytes_of_any_dtype():
    assert _arrays.as_buffer("workspace", np.zeros((3, 5), np.float32)).nbytes == 60
    assert _arrays.as_buffer("workspace", np.zeros(7, np.uint8)).nbytes == 7
    assert _arrays.as_buffer("workspace", (4096, 123)).nbytes == 123
    if torch is not None:
        t = torch.zeros(9, dtype=torch.int16)
        b = _arrays.as_buffer("workspace", t)
        assert (b.address, b.nbytes) == (t.data_ptr(), 18)


@pytest.mark.parametrize("workspace, shown", [
    (12345, "bare address without a size"),
    (np.int64(4096), "bare address without a size"),
    ((4096, -1), "workspace[1] (-1)"),
    ((True, 8), "workspace[0]"),
    ("buffer", "workspace is a str"),
])
def test_workspace_rejected_names_it(workspace, shown):
    q, k, v, kc, vc = decode_inputs()
    out, kc0, vc0 = poisoned(q.shape, q.dtype), kc.copy(), vc.copy()
    with pytest.raises(gqa.InvalidArgumentError, match="workspace") as err:
        gqa.decode(q, k, v, kc, vc, LEN, workspace=workspace, out=out)
    assert shown in str(err.value)
    assert np.isnan(out.astype(np.float32)).all()  # nothing written
    assert np.array_equal(kc, kc0) and np.array_equal(vc, vc0)


def test_workspace_must_be_writable_and_contiguous():
    q, k, v, kc, vc = decode_inputs()
    read_only = np.zeros(64, np.uint8)
    read_only.flags.writeable = False
    with pytest.raises(gqa.InvalidArgumentError, match="workspace is read-only"):
        gqa.decode(q, k, v, kc, vc, LEN, workspace=read_only)
    with pytest.raises(gqa.InvalidArgumentError, match="workspace must be contiguous"):
        gqa.decode(q, k, v, kc, vc, LEN, workspace=np.zeros((8, 8), np.uint8)[:, ::2])


def test_tensor_dtype_message_lists_every_dtype_libgqa_takes():
    q, k, v, _, _ = decode_inputs()
    with pytest.raises(gqa.InvalidArgumentError, match="float16, bfloat16 or float32"):
        gqa.prefill(q.astype(np.float64), k, v)
    if torch is not None:
        with pytest.raises(gqa.InvalidArgumentError, match="float16, bfloat16 or float32"):
            gqa.prefill(torch.zeros(1, 2, 2, 8, dtype=torch.float64), k, v)


@needs_torch
@pytest.mark.parametrize("dtype", [np.float16, np.float32, BF16])
def test_torch_cpu_tensor_and_its_numpy_view_are_the_same_tensor(dtype):
    array = rand(np.random.default_rng(1), (2, 3, 4, 8), dtype)
    tensor = torch.from_numpy(array.view(np.int16) if dtype == BF16 else array)
    if dtype == BF16:
        tensor = tensor.view(torch.bfloat16)
    a, t = _arrays.as_tensor("q", array), _arrays.as_tensor("q", tensor)
    assert (a.address, a.shape, a.dtype, a.device) == (t.address, t.shape, t.dtype, t.device)


@needs_torch
def test_non_contiguous_input_is_copied_output_refused():
    strided = torch.randn(1, 4, 3, 8).transpose(1, 2)  # BHSD viewed as BSHD
    assert not strided.is_contiguous()
    assert _arrays.as_tensor("q", strided).address != strided.data_ptr()  # a contiguous copy
    with pytest.raises(gqa.InvalidArgumentError, match="out must be C-contiguous"):
        _arrays.as_tensor("out", strided, writable=True)
