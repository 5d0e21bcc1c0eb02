"""C log messages to ``logging.getLogger("gqa")``, and the C log level kept in step with it.

From Python the "gqa" logger is the one control: the C level is always the lowest level the
logger keeps (OFF when it keeps nothing), so C formats no message that Python would drop, and
every message the logger would keep is sent. ``gqa.set_log_level`` and ``GQA_LOG_LEVEL`` set
the logger's level. The level is compared with the one last given to C before each call,
without a C call unless it changed; so set it through the logger or gqa.set_log_level, not
through ``lib.gqa_set_log_level``, which the next call may undo.

A handler that raises an ordinary exception is not allowed to fail an attention call (the
exception is dropped, as a broken log handler must not take inference down); one that raises
KeyboardInterrupt or SystemExit gets it delivered: it cannot cross C, so it is kept and
re-raised by ``raise_pending()`` once the C call has returned.
"""

from __future__ import annotations

import logging
import os
import threading

from ._ffi import ffi, lib

logger = logging.getLogger("gqa")

# The levels C logs at, lowest first.
_C_LEVELS = (lib.GQA_LOG_DEBUG, lib.GQA_LOG_INFO, lib.GQA_LOG_WARNING, lib.GQA_LOG_ERROR)

# Each C level's next lower one: C's level is the logger's when the logger keeps the first
# and not the second (isEnabledFor is monotone in the level).
_OFF = lib.GQA_LOG_OFF
_LOWER = dict(zip(_C_LEVELS + (_OFF,), (None,) + _C_LEVELS))


class _Pending(threading.local):
    exc = None  # an interrupt raised in a handler during this thread's call (a class default: cheap to read)


pending = _Pending()  # public: the plain calls read .exc inline
_c_level = None  # the level this module last gave C


@ffi.callback("void(int32_t, const char*, void*)")
def _log_callback(level, message, _user_data):
    try:
        logger.log(int(level), "%s", ffi.string(message).decode("utf-8", "replace"))
    except Exception:  # noqa: BLE001 - a broken handler must not fail the call
        pass
    except BaseException as exc:  # KeyboardInterrupt, SystemExit: for the caller, after C returns
        if pending.exc is None:
            pending.exc = exc


def raise_pending() -> None:
    """Re-raise an interrupt a log handler raised during this thread's last C call."""
    exc = pending.exc
    if exc is not None:
        pending.exc = None
        raise exc


def wanted_level() -> int:
    """The C level that sends exactly what the "gqa" logger keeps."""
    for level in _C_LEVELS:
        if logger.isEnabledFor(level):
            return level
    return lib.GQA_LOG_OFF


def sync_level() -> None:
    """Before a C call: give C the logger's level if it changed (no C call otherwise)."""
    global _c_level
    level, cache = _c_level, logger._cache
    # Unchanged: the logger keeps C's level and not the one below. Read from isEnabledFor's own
    # cache of its answers (emptied whenever any level changes; 0.1 us less than two calls);
    # what it does not hold (a level changed, C at DEBUG or OFF) takes the calls.
    if not logger.disabled and cache.get(level) is True and cache.get(_LOWER[level]) is False:
        return
    enabled = logger.isEnabledFor
    if level is not None:
        lower = _LOWER[level]
        if (level == _OFF or enabled(level)) and (lower is None or not enabled(lower)):
            return
    want = wanted_level()
    if want != _c_level:
        lib.gqa_set_log_level(want)
        _c_level = want


def set_logger_level(c_level: int) -> None:
    """The logger keeps messages of C level c_level and above (0..100; OFF keeps none)."""
    logger.setLevel(max(c_level, 1))  # 0 would be logging.NOTSET: inherit instead of "all"
    sync_level()


lib.gqa_set_log_callback(_log_callback, ffi.NULL)  # a pending GQA_LOG_LEVEL warning arrives here
if os.environ.get("GQA_LOG_LEVEL", "").strip() and logger.level == logging.NOTSET:
    set_logger_level(lib.gqa_get_log_level())  # what C made of it (WARNING, with a warning, if nothing)
