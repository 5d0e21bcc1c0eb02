"""GQA_LOG_LEVEL: `import gqa` must never hang, whatever the variable holds. Each value runs in a
fresh interpreter (the level is read once per process) under a timeout, so a hang fails."""

import os
import subprocess
import sys

import pytest

TIMEOUT_S = 60

# value -> the C level after import; None: not a level (WARNING, and one warning naming it).
CASES = {
    "nonsense": None, "verbose": None, "-5": None, "1000": None, "10x": None,
    "DEBUG ": 10, "OFF": 100, "": 30,
}

PROGRAM = "import gqa; from gqa._ffi import lib; print(lib.gqa_get_log_level())"


@pytest.mark.parametrize("value", sorted(CASES))
def test_import_with_log_level_env(value):
    env = dict(os.environ, GQA_LOG_LEVEL=value)
    try:
        done = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`import gqa` with GQA_LOG_LEVEL={value!r} hung (killed after {TIMEOUT_S} s)")
    assert done.returncode == 0, done.stderr
    expected = CASES[value]
    assert int(done.stdout) == (30 if expected is None else expected)
    warnings = [line for line in done.stderr.splitlines() if "GQA_LOG_LEVEL" in line]
    if expected is None:
        # Through the "gqa" logger (Python's last-resort handler prints WARNING to stderr).
        assert len(warnings) == 1 and value in warnings[0], done.stderr
    else:
        assert not warnings, done.stderr
