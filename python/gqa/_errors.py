"""Exceptions raised by gqa: one class per gqa_status, each carrying the C library's message.

The status values are the library's own (``lib.GQA_STATUS_*``, read from gqa.h)."""

from __future__ import annotations

from ._ffi import lib


class GQAError(Exception):
    """Base class of every libgqa error. ``status`` is the gqa_status value (int)."""

    status = None

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status


class InvalidArgumentError(GQAError, ValueError):
    """A pointer, shape, dtype or config field is wrong (GQA_STATUS_INVALID_ARGUMENT)."""

    status = lib.GQA_STATUS_INVALID_ARGUMENT


class CacheOverflowError(GQAError):
    """A cache position would reach max_seq_len (GQA_STATUS_CACHE_OVERFLOW)."""

    status = lib.GQA_STATUS_CACHE_OVERFLOW


class UnsupportedError(GQAError):
    """Valid, but not supported by the chosen backend (GQA_STATUS_UNSUPPORTED)."""

    status = lib.GQA_STATUS_UNSUPPORTED


class DeviceError(GQAError):
    """No usable CUDA device, or the CUDA runtime failed (DEVICE_UNAVAILABLE, CUDA_ERROR)."""

    status = lib.GQA_STATUS_DEVICE_UNAVAILABLE


class VersionMismatchError(GQAError):
    """The config struct or ABI version does not match this libgqa (GQA_STATUS_VERSION_MISMATCH)."""

    status = lib.GQA_STATUS_VERSION_MISMATCH


class InternalError(GQAError):
    """Out of host memory or a bug in libgqa (GQA_STATUS_OUT_OF_MEMORY, INTERNAL_ERROR)."""

    status = lib.GQA_STATUS_INTERNAL_ERROR


_BY_STATUS = {
    lib.GQA_STATUS_INVALID_ARGUMENT: InvalidArgumentError,
    lib.GQA_STATUS_CACHE_OVERFLOW: CacheOverflowError,
    lib.GQA_STATUS_UNSUPPORTED: UnsupportedError,
    lib.GQA_STATUS_DEVICE_UNAVAILABLE: DeviceError,
    lib.GQA_STATUS_CUDA_ERROR: DeviceError,
    lib.GQA_STATUS_VERSION_MISMATCH: VersionMismatchError,
    lib.GQA_STATUS_OUT_OF_MEMORY: InternalError,
    lib.GQA_STATUS_INTERNAL_ERROR: InternalError,
}


def error_for_status(status: int, message: str) -> GQAError:
    """The exception for a non-zero gqa_status, with the C message."""
    cls = _BY_STATUS.get(status, GQAError)
    return cls(message or f"libgqa returned status {status}", status)
