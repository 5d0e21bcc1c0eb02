"""Array adapters: NumPy arrays (CPU), PyTorch tensors, and objects exposing
``__cuda_array_interface__`` (CuPy, Numba) or a CUDA ``__dlpack__`` (GPU), all without copies
of the tensors libgqa writes (out, k_cache, v_cache)."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._errors import InvalidArgumentError
from ._ffi import lib

try:  # ml_dtypes provides NumPy's bfloat16
    import ml_dtypes

    _BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - ml_dtypes is a dependency
    _BF16 = None

CPU = lib.GQA_DEVICE_CPU
CUDA = lib.GQA_DEVICE_CUDA

_NUMPY_DTYPES = {np.dtype(np.float16): lib.GQA_DTYPE_F16, np.dtype(np.float32): lib.GQA_DTYPE_F32}
if _BF16 is not None:
    _NUMPY_DTYPES[_BF16] = lib.GQA_DTYPE_BF16
# __cuda_array_interface__ typestrs; bfloat16 has none, so it comes through torch or DLPack.
_TYPESTR_DTYPES = {"<f2": lib.GQA_DTYPE_F16, "<f4": lib.GQA_DTYPE_F32}
DTYPE_NAMES = {lib.GQA_DTYPE_F16: "float16", lib.GQA_DTYPE_BF16: "bfloat16", lib.GQA_DTYPE_F32: "float32"}


@dataclass
class Tensor:
    """What the C call needs from one argument."""

    name: str
    obj: Any  # the array itself (also keeps the memory alive during the call)
    address: int
    shape: tuple
    dtype: int  # GQA_DTYPE_*
    device: int  # GQA_DEVICE_*
    device_id: int = 0
    stream: int | None = None  # producer's current stream (CUDA only)


def _is_torch(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "torch"


def _is_cupy(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "cupy"


def _numpy(name: str, array: np.ndarray, writable: bool) -> Tensor:
    dtype = _NUMPY_DTYPES.get(array.dtype)
    if dtype is None:
        raise InvalidArgumentError(
            f"{name} has dtype {array.dtype}; libgqa takes float16, float32 or ml_dtypes.bfloat16"
        )
    if not array.flags.c_contiguous:
        if writable:
            raise InvalidArgumentError(f"{name} must be C-contiguous: libgqa writes it in place")
        array = np.ascontiguousarray(array)  # inputs only: a documented copy
    if writable and not array.flags.writeable:
        raise InvalidArgumentError(f"{name} is read-only, but libgqa writes it")
    return Tensor(name, array, array.ctypes.data, tuple(array.shape), dtype, CPU)


def _torch(name: str, t: Any, writable: bool) -> Tensor:
    import torch

    dtypes = {torch.float16: lib.GQA_DTYPE_F16, torch.bfloat16: lib.GQA_DTYPE_BF16,
              torch.float32: lib.GQA_DTYPE_F32}
    if t.dtype not in dtypes:
        raise InvalidArgumentError(f"{name} has dtype {t.dtype}; libgqa takes float16, bfloat16 or float32")
    if not t.is_contiguous():
        if writable:
            raise InvalidArgumentError(f"{name} must be contiguous: libgqa writes it in place")
        t = t.contiguous()
    if t.device.type == "cuda":
        index = t.device.index if t.device.index is not None else torch.cuda.current_device()
        stream = torch.cuda.current_stream(t.device).cuda_stream
        return Tensor(name, t, t.data_ptr(), tuple(t.shape), dtypes[t.dtype], CUDA, index, stream)
    if t.device.type != "cpu":
        raise InvalidArgumentError(f"{name} is on device {t.device}; libgqa runs on cpu and cuda")
    return Tensor(name, t, t.data_ptr(), tuple(t.shape), dtypes[t.dtype], CPU)


def _cuda_array_interface(name: str, obj: Any, writable: bool) -> Tensor:
    cai = obj.__cuda_array_interface__
    shape = tuple(cai["shape"])
    dtype = _TYPESTR_DTYPES.get(cai["typestr"])
    if dtype is None:
        raise InvalidArgumentError(f"{name} has typestr {cai['typestr']!r}; libgqa takes '<f2' (float16)")
    strides = cai.get("strides")
    if strides is not None:
        itemsize = 2 if dtype != lib.GQA_DTYPE_F32 else 4
        expected, step = [], itemsize
        for extent in reversed(shape):
            expected.append(step)
            step *= extent
        if tuple(reversed(expected)) != tuple(strides) and int(np.prod(shape)) > 1:
            raise InvalidArgumentError(f"{name} must be C-contiguous (strides {strides})")
    address, read_only = cai["data"]
    if writable and read_only:
        raise InvalidArgumentError(f"{name} is read-only, but libgqa writes it")
    stream = None
    if _is_cupy(obj):
        import cupy

        stream = cupy.cuda.get_current_stream().ptr
    elif isinstance(cai.get("stream"), int):
        stream = cai["stream"]
    return Tensor(name, obj, int(address), shape, dtype, CUDA, 0, stream)


# --- DLPack (only for CUDA objects that have no __cuda_array_interface__) ------------------
class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


_KDL_CUDA = 2
_KDL_FLOAT, _KDL_BFLOAT = 2, 4


def _dlpack(name: str, obj: Any) -> Tensor:
    capsule = obj.__dlpack__()
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    # DLManagedTensor starts with its DLTensor; the capsule keeps it alive while we hold it.
    tensor = _DLTensor.from_address(get_pointer(capsule, b"dltensor"))
    shape = tuple(tensor.shape[i] for i in range(tensor.ndim))
    code, bits = tensor.dtype.code, tensor.dtype.bits
    dtype = {(_KDL_FLOAT, 16): lib.GQA_DTYPE_F16, (_KDL_BFLOAT, 16): lib.GQA_DTYPE_BF16,
             (_KDL_FLOAT, 32): lib.GQA_DTYPE_F32}.get((code, bits))
    if dtype is None:
        raise InvalidArgumentError(f"{name} has DLPack dtype code {code} bits {bits}; libgqa takes f16/bf16")
    if tensor.strides:
        step, ok = 1, True
        for i in reversed(range(tensor.ndim)):
            if shape[i] > 1 and tensor.strides[i] != step:
                ok = False
            step *= shape[i]
        if not ok:
            raise InvalidArgumentError(f"{name} must be C-contiguous")
    address = (tensor.data or 0) + tensor.byte_offset
    return Tensor(name, (obj, capsule), address, shape, dtype, CUDA, tensor.device.device_id)


def as_tensor(name: str, obj: Any, writable: bool = False) -> Tensor:
    """Describe one argument; inputs that are not contiguous may be copied, outputs never."""
    if obj is None:
        raise InvalidArgumentError(f"{name} is None")
    if isinstance(obj, np.ndarray):
        return _numpy(name, obj, writable)
    if _is_torch(obj):
        return _torch(name, obj, writable)
    if hasattr(obj, "__cuda_array_interface__"):
        return _cuda_array_interface(name, obj, writable)
    if hasattr(obj, "__dlpack_device__") and obj.__dlpack_device__()[0] == _KDL_CUDA:
        return _dlpack(name, obj)
    raise InvalidArgumentError(
        f"{name} is a {type(obj).__name__}; libgqa takes NumPy arrays, PyTorch tensors, or CUDA arrays "
        "with __cuda_array_interface__ or __dlpack__"
    )


def common_device_and_dtype(tensors: list[Tensor]) -> tuple[int, int]:
    """All tensors of a call on one device with one dtype, or a clear error."""
    first = tensors[0]
    for t in tensors[1:]:
        if t.device != first.device or t.device_id != first.device_id:
            where = {CPU: "host (CPU) memory", CUDA: "a CUDA device"}
            raise InvalidArgumentError(
                f"{t.name} is in {where[t.device]} (device {t.device_id}) but {first.name} is in "
                f"{where[first.device]} (device {first.device_id}); all tensors of a call must be on one device"
            )
        if t.dtype != first.dtype:
            raise InvalidArgumentError(
                f"{t.name} has dtype {DTYPE_NAMES[t.dtype]} but {first.name} has {DTYPE_NAMES[first.dtype]}; "
                "all tensors of a call must share one dtype"
            )
    return first.device, first.dtype


def empty_like(t: Tensor) -> Any:
    """A new output array like t (same library, device, dtype and shape)."""
    obj = t.obj
    if isinstance(obj, np.ndarray):
        return np.empty(obj.shape, obj.dtype)
    if _is_torch(obj):
        import torch

        return torch.empty_like(obj, memory_format=torch.contiguous_format)
    if _is_cupy(obj):
        import cupy

        return cupy.empty(obj.shape, obj.dtype)
    raise InvalidArgumentError(f"pass out=: cannot allocate an output like {type(obj).__name__}")
