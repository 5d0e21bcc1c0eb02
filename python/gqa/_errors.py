"""Exceptions raised by gqa: one class per gqa_status, each carrying the C library's message."""

from __future__ import annotations


class GQAError(Exception):
    """Base class of every libgqa error. ``status`` is the gqa_status value (int)."""

    status = None

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status


class InvalidArgumentError(GQAError, ValueError):
    """A pointer, shape, dtype or config field is wrong (GQA_STATUS_INVALID_ARGUMENT)."""

    status = 1


class CacheOverflowError(GQAError):
    """A cache position would reach max_seq_len (GQA_STATUS_CACHE_OVERFLOW)."""

    status = 2


class UnsupportedError(GQAError):
    """Valid, but not supported by the chosen backend (GQA_STATUS_UNSUPPORTED)."""

    status = 3


class DeviceError(GQAError):
    """No usable CUDA device, or the CUDA runtime failed (DEVICE_UNAVAILABLE, CUDA_ERROR)."""

    status = 4


class VersionMismatchError(GQAError):
    """The config struct or ABI version does not match this libgqa (GQA_STATUS_VERSION_MISMATCH)."""

    status = 6


class InternalError(GQAError):
    """Out of host memory or a bug in libgqa (GQA_STATUS_OUT_OF_MEMORY, INTERNAL_ERROR)."""

    status = 8


_BY_STATUS = {
    1: InvalidArgumentError,
    2: CacheOverflowError,
    3: UnsupportedError,
    4: DeviceError,
    5: DeviceError,
    6: VersionMismatchError,
    7: InternalError,
    8: InternalError,
}


def error_for_status(status: int, message: str) -> GQAError:
    """The exception for a non-zero gqa_status, with the C message."""
    cls = _BY_STATUS.get(status, GQAError)
    return cls(message or f"libgqa returned status {status}", status)
