"""The README's first command ends in `python -m gqa`: the main job must pass on the CPU."""
import subprocess
import sys

import pytest


def run_main_job(*args):
    return subprocess.run([sys.executable, "-m", "gqa", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_main_job_passes_on_the_cpu(dtype):
    done = run_main_job("--device", "cpu", "--dtype", dtype, "--prompt", "113", "--steps", "7", "--batch", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "result: PASS" in done.stdout
    assert "KV cache bytes" in done.stdout and "exact" in done.stdout


def test_main_job_with_its_defaults():
    """Exactly what the README runs (the best device present; the CPU in CI)."""
    done = run_main_job()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "result: PASS" in done.stdout
