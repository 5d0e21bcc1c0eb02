"""Array adapters: NumPy arrays (CPU), PyTorch tensors (CPU and CUDA), and objects exposing
``__cuda_array_interface__`` (CuPy, Numba) or a CUDA ``__dlpack__``, all without copies of the
tensors libgqa writes (out, k_cache, v_cache).

One path per kind of array (``_memory``) says where its memory is; ``as_tensor`` turns that
into a libgqa tensor (a dtype libgqa takes, contiguous), ``as_buffer`` into raw bytes (the
decode workspace: any dtype)."""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _args
from ._errors import InvalidArgumentError
from ._ffi import lib

try:  # ml_dtypes provides NumPy's bfloat16
    import ml_dtypes

    _BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - ml_dtypes is a dependency
    _BF16 = None

CPU = lib.GQA_DEVICE_CPU
CUDA = lib.GQA_DEVICE_CUDA
DEVICE_CODES = {"cpu": CPU, "cuda": CUDA}

# The one home of the dtypes libgqa takes: their names, and from those the NumPy and torch maps.
DTYPE_NAMES = {lib.GQA_DTYPE_F16: "float16", lib.GQA_DTYPE_BF16: "bfloat16", lib.GQA_DTYPE_F32: "float32"}
DTYPE_CODES = {name: code for code, name in DTYPE_NAMES.items()}
_TAKES = "libgqa takes float16, bfloat16 or float32"

NUMPY_DTYPES = {np.dtype(np.float16): lib.GQA_DTYPE_F16, np.dtype(np.float32): lib.GQA_DTYPE_F32}
if _BF16 is not None:
    NUMPY_DTYPES[_BF16] = lib.GQA_DTYPE_BF16
_torch_dtypes: dict = {}


def torch_dtypes() -> dict:
    """torch dtype -> GQA_DTYPE_* (imports torch: only for callers that hold torch tensors)."""
    if not _torch_dtypes:
        import torch

        _torch_dtypes.update({getattr(torch, name): code for code, name in DTYPE_NAMES.items()})
    return _torch_dtypes


# __cuda_array_interface__ typestrs; bfloat16 has none, so it comes through torch or DLPack.
_TYPESTR_DTYPES = {"<f2": lib.GQA_DTYPE_F16, "<f4": lib.GQA_DTYPE_F32}


@dataclass
class Tensor:
    """What the C call needs from one tensor argument."""

    name: str
    obj: Any  # the array itself (also keeps the memory alive during the call)
    address: int
    shape: tuple
    dtype: int  # GQA_DTYPE_*
    device: int  # GQA_DEVICE_*
    device_id: int = 0
    stream: int | None = None  # producer's current stream (CUDA only)
    strides: tuple | None = None  # element strides of a view taken in place (strided=True), else None


@dataclass
class Buffer:
    """Raw bytes for the C call (the decode workspace)."""

    name: str
    obj: Any  # keeps the memory alive during the call
    address: int
    nbytes: int


@dataclass
class _Memory:
    """What one array says about its memory, whatever its kind."""

    obj: Any
    address: int
    shape: tuple
    itemsize: int
    dtype: int | None  # GQA_DTYPE_*, None when libgqa has no such dtype
    dtype_text: str  # the array's own name for its dtype, for messages
    contiguous: bool
    read_only: bool
    device: int
    device_id: int = 0
    stream: int | None = None
    copyable: bool = False  # a contiguous copy can be made (NumPy, torch)
    takes: str = _TAKES  # the dtypes this kind can carry to libgqa, for messages
    strides: tuple | None = None  # in elements (NumPy, torch), for views libgqa reads in place

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.itemsize


def _is_torch(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "torch"


def _is_cupy(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "cupy"


def _c_contiguous(shape: tuple, strides, unit: int) -> bool:
    """True when `strides` (in bytes: unit = itemsize; in elements: unit = 1) are those of a
    C-order layout; an extent of 1 may have any stride."""
    step = unit
    for extent, stride in zip(reversed(shape), reversed(tuple(strides))):
        if extent > 1 and stride != step:
            return False
        step *= extent
    return True


def element_strides(shape: tuple, strides, unit: int) -> tuple | None:
    """Element strides of a view libgqa can read in place (the variants' gqa_strides): last axis
    contiguous, the others positive multiples of the item size (extent-1 axes: 0, which libgqa
    reads as "contiguous"); else None. A broadcast axis (stride 0, extent > 1) is None too:
    libgqa would read its 0 as the contiguous stride."""
    strides = tuple(strides)
    if not shape or (shape[-1] > 1 and strides[-1] != unit):
        return None
    out = []
    for extent, stride in zip(shape, strides):
        if extent == 1:
            out.append(0)
        elif stride <= 0 or stride % unit:
            return None
        else:
            out.append(stride // unit)
    return tuple(out)


def _numpy_memory(a: np.ndarray) -> _Memory:
    return _Memory(a, a.ctypes.data, tuple(a.shape), a.itemsize, NUMPY_DTYPES.get(a.dtype), str(a.dtype),
                   a.flags.c_contiguous, not a.flags.writeable, CPU, copyable=True,
                   strides=element_strides(a.shape, a.strides, a.itemsize))


def _torch_memory(name: str, t: Any) -> _Memory:
    if t.device.type == "cuda":
        import torch

        device, index = CUDA, t.get_device()
        stream = torch._C._cuda_getCurrentRawStream(index)
    elif t.device.type == "cpu":
        device, index, stream = CPU, 0, None
    else:
        raise InvalidArgumentError(f"{name} is on device {t.device}; libgqa runs on cpu and cuda")
    return _Memory(t, t.data_ptr(), tuple(t.shape), t.element_size(), torch_dtypes().get(t.dtype), str(t.dtype),
                   t.is_contiguous(), False, device, index, stream, copyable=True,
                   strides=element_strides(tuple(t.shape), t.stride(), 1))


def _cuda_array_interface_memory(obj: Any) -> _Memory:
    cai = obj.__cuda_array_interface__
    shape, typestr = tuple(cai["shape"]), cai["typestr"]
    itemsize = np.dtype(typestr).itemsize
    strides = cai.get("strides")
    contiguous = strides is None or _c_contiguous(shape, strides, itemsize)
    address, read_only = cai["data"]
    stream = None
    if _is_cupy(obj):
        import cupy

        stream = cupy.cuda.get_current_stream().ptr
    elif isinstance(cai.get("stream"), int):
        stream = cai["stream"]
    return _Memory(obj, int(address), shape, itemsize, _TYPESTR_DTYPES.get(typestr), repr(typestr), contiguous,
                   bool(read_only), CUDA, 0, stream,
                   takes="libgqa takes '<f2' (float16) or '<f4' (float32); bfloat16 has no typestr: pass a "
                         "torch tensor or a DLPack array")


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
_DLPACK_DTYPES = {(_KDL_FLOAT, 16): lib.GQA_DTYPE_F16, (_KDL_BFLOAT, 16): lib.GQA_DTYPE_BF16,
                  (_KDL_FLOAT, 32): lib.GQA_DTYPE_F32}


def _dlpack_memory(obj: Any) -> _Memory:
    capsule = obj.__dlpack__()
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    # DLManagedTensor starts with its DLTensor; the capsule keeps it alive while we hold it.
    tensor = _DLTensor.from_address(get_pointer(capsule, b"dltensor"))
    shape = tuple(tensor.shape[i] for i in range(tensor.ndim))
    code, bits, lanes = tensor.dtype.code, tensor.dtype.bits, tensor.dtype.lanes
    contiguous = not tensor.strides or _c_contiguous(shape, [tensor.strides[i] for i in range(tensor.ndim)], 1)
    address = (tensor.data or 0) + tensor.byte_offset
    dtype = _DLPACK_DTYPES.get((code, bits)) if lanes == 1 else None
    return _Memory((obj, capsule), address, shape, bits * lanes // 8, dtype, f"DLPack code {code} bits {bits}",
                   contiguous, False, CUDA, tensor.device.device_id)


def _memory(name: str, obj: Any) -> _Memory:
    """The one place that tells array kinds apart."""
    if obj is None:
        raise InvalidArgumentError(f"{name} is None")
    if isinstance(obj, np.ndarray):
        return _numpy_memory(obj)
    if _is_torch(obj):
        return _torch_memory(name, obj)
    if hasattr(obj, "__cuda_array_interface__"):
        return _cuda_array_interface_memory(obj)
    if hasattr(obj, "__dlpack_device__") and obj.__dlpack_device__()[0] == _KDL_CUDA:
        return _dlpack_memory(obj)
    raise InvalidArgumentError(
        f"{name} is a {type(obj).__name__}; libgqa takes NumPy arrays, PyTorch tensors, or CUDA arrays "
        "with __cuda_array_interface__ or __dlpack__"
    )


def _contiguous_copy(obj: Any) -> Any:
    return np.ascontiguousarray(obj) if isinstance(obj, np.ndarray) else obj.contiguous()


def as_tensor(name: str, obj: Any, writable: bool = False, strided: bool = False) -> Tensor:
    """Describe one tensor argument; inputs that are not contiguous may be copied, outputs never.
    strided (q, k, v, out of prefill and decode): a NumPy / torch view whose last axis is
    contiguous is taken in place, its element strides in Tensor.strides."""
    m = _memory(name, obj)
    if m.dtype is None:
        raise InvalidArgumentError(f"{name} has dtype {m.dtype_text}; {m.takes}")
    if not m.contiguous and strided and m.strides is not None:
        if writable and m.read_only:
            raise InvalidArgumentError(f"{name} is read-only, but libgqa writes it")
        return Tensor(name, m.obj, m.address, m.shape, m.dtype, m.device, m.device_id, m.stream, m.strides)
    if not m.contiguous:
        if writable or not m.copyable:
            why = "libgqa writes it in place" if writable else "libgqa reads it in C order"
            raise InvalidArgumentError(f"{name} must be C-contiguous: {why}")
        m = _memory(name, _contiguous_copy(obj))  # inputs only: a documented copy
    if writable and m.read_only:
        raise InvalidArgumentError(f"{name} is read-only, but libgqa writes it")
    return Tensor(name, m.obj, m.address, m.shape, m.dtype, m.device, m.device_id, m.stream)


def as_buffer(name: str, obj: Any) -> Buffer:
    """Raw bytes libgqa may write: an array of any kind and dtype (e.g. a uint8 torch or CuPy
    array on the device), contiguous and writable, or an explicit (address, nbytes) pair."""
    if isinstance(obj, tuple) and len(obj) == 2:
        address, nbytes = _args.address(f"{name}[0]", obj[0]), _args.address(f"{name}[1]", obj[1])
        return Buffer(name, obj, address, nbytes)
    if isinstance(obj, (int, np.integer)):
        raise InvalidArgumentError(f"{name} ({obj!r}) is a bare address without a size; pass (address, nbytes) "
                                   "or the buffer itself")
    m = _memory(name, obj)
    if not m.contiguous:
        raise InvalidArgumentError(f"{name} must be contiguous: libgqa uses it as one run of bytes")
    if m.read_only:
        raise InvalidArgumentError(f"{name} is read-only, but libgqa writes it")
    return Buffer(name, m.obj, m.address, m.nbytes)


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


def empty_float32(t: Tensor, shape: tuple) -> Any:
    """A new float32 array of `shape` in the library and on the device of t (lse outputs)."""
    obj = t.obj[0] if isinstance(t.obj, tuple) else t.obj
    if isinstance(obj, np.ndarray):
        return np.empty(shape, np.float32)
    if _is_torch(obj):
        import torch

        return torch.empty(shape, dtype=torch.float32, device=obj.device)
    if _is_cupy(obj):
        import cupy

        return cupy.empty(shape, np.float32)
    raise InvalidArgumentError(f"cannot allocate a float32 output like {type(obj).__name__}")


def as_float32(name: str, obj: Any, like: Tensor) -> Any:
    """obj as a float32 array on like's device: NumPy (or a list) for CPU calls, a float32
    torch tensor for torch callers; other CUDA arrays must already be float32."""
    if _is_torch(obj):
        import torch

        return obj.to(dtype=torch.float32).contiguous()
    if like.device == CPU:  # aligned too: C reads it as float* (a NumPy view may sit at any byte)
        return np.require(np.asarray(obj, dtype=np.float32), requirements=("C", "A"))
    return obj
