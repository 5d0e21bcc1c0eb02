"""Checks of scalar arguments, shared by gqa and gqa.torch.

Each returns the value as C will see it, or raises InvalidArgumentError naming the parameter
and the value as the caller wrote it, before anything is written. Nothing is truncated,
wrapped or guessed:

* an integer is a Python int or a NumPy integer (anything with ``__index__``), in int32 range.
  bool is not an integer here, nor is str, nor is a float, even an integral one (3.0): a
  length computed in floating point has already lost the caller's intent somewhere.
* a flag is True/False (also NumPy's bool), or the integer 0 or 1.
* a real number is an int or float (also NumPy's), never bool or str, and must fit in fp32.
"""

from __future__ import annotations

import numbers
import operator
from typing import Any

import numpy as np

from ._errors import InvalidArgumentError

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)

_INTEGER_RULE = "a Python int or NumPy integer, not a bool, str or float (not even 3.0)"


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_)) or (isinstance(value, np.ndarray) and value.dtype == np.bool_)


def _shown(value: Any) -> str:
    """The value in messages: repr, so that '3' and 3 differ; a 0-d array as its element."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return repr(value.item())
    return repr(value)


def _integer(name: str, value: Any, meaning: str) -> int:
    """operator.index(value), refusing bool (an int subclass); else an error: must be `meaning`."""
    if not _is_bool(value):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise InvalidArgumentError(f"{name} ({_shown(value)}) must be {meaning}")


def int32(name: str, value: Any) -> int:
    """An int32 parameter (see the module docstring)."""
    if type(value) is int and INT32_MIN <= value <= INT32_MAX:  # the common case, checked cheaply
        return value
    n = _integer(name, value, f"an integer: {_INTEGER_RULE}")
    if not INT32_MIN <= n <= INT32_MAX:
        raise InvalidArgumentError(f"{name} ({n}) does not fit in int32 ({INT32_MIN} .. {INT32_MAX})")
    return n


def int32_array(name: str, values: Any, length: int) -> np.ndarray:
    """`length` int32 values (a sequence or array of integers) as a C-contiguous int32 array."""
    try:
        array = np.asarray(values)
    except (ValueError, OverflowError):
        array = np.asarray(values, dtype=object)
    if array.shape != (length,):
        raise InvalidArgumentError(
            f"{name} has shape {array.shape}; give one integer or {length} (one per sequence)")
    if array.dtype.kind == "O":  # Python ints too large for int64, or mixed objects
        return np.array([int32(f"{name}[{i}]", v) for i, v in enumerate(array.tolist())], dtype=np.int32)
    if array.dtype.kind not in "iu":  # bool ("b"), float, str...: not integers
        raise InvalidArgumentError(f"{name} ({_shown(values)}) must be integers: {_INTEGER_RULE}")
    outside = (array < INT32_MIN) | (array > INT32_MAX)
    if outside.any():
        i = int(np.argmax(outside))
        int32(f"{name}[{i}]", array[i])  # raises, naming the element
    return np.ascontiguousarray(array, dtype=np.int32)


def address(name: str, value: Any) -> int:
    """A pointer given as an integer (a CUDA stream or buffer address): 0 .. 2**64 - 1."""
    n = _integer(name, value, "an integer address (not a bool)")
    if not 0 <= n < 2**64:
        raise InvalidArgumentError(f"{name} ({n}) is not an address (0 .. 2**64 - 1)")
    return n


def flag(name: str, value: Any) -> bool:
    """A boolean parameter: True/False (also NumPy's), or the integer 0 or 1."""
    if value is True or value is False:
        return value
    if _is_bool(value) and np.ndim(value) == 0:
        return bool(value)
    try:
        n = operator.index(value)
    except TypeError:
        n = None
    if n not in (0, 1):
        raise InvalidArgumentError(f"{name} ({_shown(value)}) must be True or False")
    return bool(n)


def float32(name: str, value: Any) -> float:
    """A real parameter that C takes as a float: an int or float (also NumPy's) within fp32."""
    if type(value) is float and -FLOAT32_MAX <= value <= FLOAT32_MAX:  # the common case
        return value
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise InvalidArgumentError(f"{name} ({_shown(value)}) must be a real number (int or float)")
    x = float(value)
    if abs(x) > FLOAT32_MAX:  # NaN is not > anything: C rejects it with its own message
        raise InvalidArgumentError(f"{name} ({x:g}) does not fit in float32 (|{name}| <= {FLOAT32_MAX:g})")
    return x


def choice(name: str, value: Any, choices: dict) -> Any:
    """value must be one of the keys of `choices` (strings are matched without case or
    surrounding spaces); returns its entry."""
    key = value.strip().lower() if isinstance(value, str) else value
    try:
        return choices[key]
    except (KeyError, TypeError):
        names = ", ".join(repr(c) for c in choices)
        raise InvalidArgumentError(f"{name} ({_shown(value)}) must be one of {names}") from None
