"""C log messages through logging.getLogger("gqa"): an interrupt raised by a handler reaches the
caller once the C call has returned, and the C level follows the logger both ways (it formats
only what the logger keeps) without a C call when nothing changed."""

import logging
import os
import subprocess
import sys

import numpy as np
import pytest

import gqa
from gqa import _logging
from gqa_testing import rand
from gqa._ffi import lib

LOGGER = logging.getLogger("gqa")


@pytest.fixture
def gqa_logger():
    """The "gqa" logger and C level restored after the test."""
    level, disabled = LOGGER.level, LOGGER.disabled
    yield LOGGER
    LOGGER.setLevel(level)
    LOGGER.disabled = disabled
    _logging.sync_level()


def small_call(out=None):
    rng = np.random.default_rng(0)
    q = rand(rng, (1, 2, 2, 8), np.float32)
    return gqa.prefill(q, q[:, :, :1].copy(), q[:, :, :1].copy(), out=out)


class Raising(logging.Handler):
    def __init__(self, exc):
        super().__init__(logging.DEBUG)
        self.exc, self.calls = exc, 0

    def emit(self, record):
        self.calls += 1
        raise self.exc


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_interrupt_in_handler_reaches_caller(gqa_logger, capfd, exc):
    handler = Raising(exc())
    gqa_logger.addHandler(handler)
    out = np.full((1, 2, 2, 8), np.nan, np.float32)
    try:
        gqa_logger.setLevel(logging.DEBUG)
        with pytest.raises(exc):
            small_call(out)
    finally:
        gqa_logger.removeHandler(handler)
    assert handler.calls >= 1
    assert np.isfinite(out).all(), "the call itself must have completed before the interrupt"
    assert "cffi callback" not in capfd.readouterr().err
    small_call()  # nothing left pending


def test_ordinary_exception_in_handler_is_contained(gqa_logger, capfd):
    handler = Raising(RuntimeError("handler failure"))
    gqa_logger.addHandler(handler)
    try:
        gqa_logger.setLevel(logging.DEBUG)
        assert np.isfinite(small_call()).all()
    finally:
        gqa_logger.removeHandler(handler)
    assert handler.calls >= 1


def test_c_level_follows_the_logger_both_ways(gqa_logger):
    gqa_logger.setLevel(logging.DEBUG)
    small_call()
    assert lib.gqa_get_log_level() == lib.GQA_LOG_DEBUG
    gqa_logger.setLevel(logging.WARNING)
    small_call()
    assert lib.gqa_get_log_level() == lib.GQA_LOG_WARNING, "C still formats DEBUG messages nobody keeps"
    gqa_logger.setLevel(logging.ERROR)
    small_call()
    assert lib.gqa_get_log_level() == lib.GQA_LOG_ERROR
    gqa_logger.disabled = True
    small_call()
    assert lib.gqa_get_log_level() == lib.GQA_LOG_OFF
    gqa_logger.disabled = False
    gqa_logger.setLevel(logging.INFO)
    small_call()
    assert lib.gqa_get_log_level() == lib.GQA_LOG_INFO


def test_logging_disable_turns_c_off(gqa_logger):
    logging.disable(logging.CRITICAL)
    try:
        small_call()
        assert lib.gqa_get_log_level() == lib.GQA_LOG_OFF
    finally:
        logging.disable(logging.NOTSET)
    gqa_logger.setLevel(logging.WARNING)
    small_call()
    assert lib.gqa_get_log_level() == lib.GQA_LOG_WARNING


class CountingLib:
    """Delegates to the real binding, counting the log-level calls."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        attr = getattr(lib, name)
        if name in ("gqa_set_log_level", "gqa_get_log_level"):
            def counted(*args):
                self.calls.append(name)
                return attr(*args)
            return counted
        return attr


@pytest.mark.parametrize("level", [logging.DEBUG, logging.WARNING])
def test_no_c_call_when_nothing_changed(gqa_logger, monkeypatch, level):
    gqa_logger.setLevel(level)
    small_call()  # in step now
    counting = CountingLib()
    monkeypatch.setattr(_logging, "lib", counting)
    for _ in range(50):
        small_call()
    assert counting.calls == []
    gqa_logger.setLevel(logging.ERROR)
    small_call()
    assert counting.calls == ["gqa_set_log_level"]


def test_set_log_level_sets_the_logger(gqa_logger):
    gqa.set_log_level("DEBUG")
    assert gqa_logger.level == logging.DEBUG and lib.gqa_get_log_level() == lib.GQA_LOG_DEBUG
    gqa.set_log_level("OFF")
    assert not gqa_logger.isEnabledFor(logging.CRITICAL) and lib.gqa_get_log_level() == lib.GQA_LOG_OFF
    gqa.set_log_level(0)  # everything, not logging's NOTSET (which would inherit)
    assert gqa_logger.isEnabledFor(logging.DEBUG) and lib.gqa_get_log_level() == lib.GQA_LOG_DEBUG


@pytest.mark.parametrize("env, level", [("DEBUG", 10), ("error", 40), ("OFF", 100)])
def test_env_level_applies_to_the_logger(env, level):
    program = ("import logging, gqa; from gqa._ffi import lib; from gqa import _logging; _logging.sync_level(); "
               "print(logging.getLogger('gqa').getEffectiveLevel(), lib.gqa_get_log_level())")
    done = subprocess.run([sys.executable, "-c", program], env=dict(os.environ, GQA_LOG_LEVEL=env),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    py_level, c_level = map(int, done.stdout.split())
    assert c_level == level and py_level == max(level, 1)
