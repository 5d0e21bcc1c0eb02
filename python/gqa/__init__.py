"""libgqa: Grouped-Query Attention (prefill + decode with a KV cache) for LLM inference.

NumPy arrays (float16, float32, ml_dtypes.bfloat16) run on the CPU backend; PyTorch CUDA
tensors and CUDA arrays (__cuda_array_interface__ / __dlpack__) run on the CUDA backend.
``gqa.reference`` is the float64 NumPy oracle with the same signatures.
"""

from . import reference
from ._batch import (
    BATCH_FLAG_BAD_INDPTR,
    BATCH_FLAG_BAD_KV_LEN,
    BATCH_FLAG_BAD_PAGE,
    batch_attention,
    batch_workspace_size,
)
from .paged import BatchStep, PagedKVCache
from ._api import (
    built_with_cuda,
    cuda_available,
    cuda_unavailable_reason,
    decode,
    decode_workspace_size,
    get_num_threads,
    merge_states,
    prefill,
    set_log_level,
    set_num_threads,
    version,
)
from ._paths import get_include, get_library, get_library_dir, get_pkg_config_dir
from ._errors import (
    CacheOverflowError,
    DeviceError,
    GQAError,
    InternalError,
    InvalidArgumentError,
    UnsupportedError,
    VersionMismatchError,
)

__version__ = version()

__all__ = [
    "prefill", "decode", "merge_states", "decode_workspace_size", "reference", "batch_attention", "batch_workspace_size", "PagedKVCache", "BatchStep",
    "BATCH_FLAG_BAD_INDPTR", "BATCH_FLAG_BAD_KV_LEN", "BATCH_FLAG_BAD_PAGE", "version", "cuda_available",
    "cuda_unavailable_reason", "built_with_cuda", "set_num_threads", "get_num_threads", "set_log_level",
    "GQAError", "InvalidArgumentError", "CacheOverflowError", "UnsupportedError", "DeviceError",
    "VersionMismatchError", "InternalError",
    "get_include", "get_library", "get_library_dir", "get_pkg_config_dir",
]
