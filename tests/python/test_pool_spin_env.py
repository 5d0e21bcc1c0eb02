"""GQA_CPU_SPIN_US (how long the CPU pool's workers poll after a call): values that are not
0..1000000 microseconds log a WARNING naming the value and keep the default; every value gives
the same results; a process exits promptly whatever its workers are doing."""
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import logging, sys
import numpy as np
import gqa
messages = []
class Collect(logging.Handler):
    def emit(self, record): messages.append(record.getMessage())
logging.getLogger("gqa").addHandler(Collect())
gqa.set_num_threads(2)
rng = np.random.default_rng(0)
q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((1, 1, 8, 64), (1, 1, 2, 64), (1, 1, 2, 64)))
kc, vc = (rng.standard_normal((1, 2001, 2, 64)).astype(np.float32) for _ in range(2))
want = gqa.reference.decode(q, k, v, kc.copy(), vc.copy(), 2000)
for _ in range(3):
    out = gqa.decode(q, k, v, kc, vc, 2000)
print(float(np.abs(out - want).max()))
print("|".join(m for m in messages if "GQA_CPU_SPIN_US" in m))
"""


def _run(value):
    env = {**os.environ, "GQA_CPU_SPIN_US": value}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    err, warnings = done.stdout.splitlines()
    return float(err), warnings


@pytest.mark.parametrize("value", ["0", "1", "20000", "1000000", ""])
def test_valid_values_run_and_do_not_warn(value):
    err, warnings = _run(value)
    assert err <= 1e-4 and warnings == ""


@pytest.mark.parametrize("value", ["-1", "1000001", "fast", "10us", "1e3", "5 "])
def test_bad_values_warn_with_the_value_and_keep_working(value):
    err, warnings = _run(value)
    assert err <= 1e-4
    assert f"GQA_CPU_SPIN_US='{value}'" in warnings and "using 20000" in warnings
