"""fork() after libgqa's CPU thread pool has run: the default start method of multiprocessing
and PyTorch DataLoader workers on Linux, and what pre-forking servers do. A child must get
working calls and a clean exit; the parent must be unaffected. Each scenario runs in its own
interpreter under a timeout, so a hang fails the test instead of stalling the suite."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

TIMEOUT_S = 120

# Starts the pool's workers (4 threads, 12 prefill tasks) and defines check(), which runs a
# prefill and compares it with the float64 reference.
PRELUDE = textwrap.dedent("""
    import multiprocessing, os, sys
    import numpy as np
    import gqa
    gqa.set_num_threads(4)
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, 37, 8, 64)).astype(np.float32)
    k = rng.standard_normal((2, 37, 2, 64)).astype(np.float32)
    v = rng.standard_normal((2, 37, 2, 64)).astype(np.float32)
    want = gqa.reference.prefill(q, k, v)

    def check(_=None):
        got = gqa.prefill(q, k, v, out=np.full_like(q, np.nan))
        assert np.max(np.abs(got - want)) < 1e-4, np.max(np.abs(got - want))
        return os.getpid()

    check()

    def wait(pid):
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
""")

SCENARIOS = {
    # sys.exit in the child: the interpreter finalises and exit() runs libgqa's static destructors.
    "child calls libgqa": """
        pid = os.fork()
        if pid == 0:
            check()
            sys.exit(0)
        wait(pid)
        check()
    """,
    "child only exits": """
        pid = os.fork()
        if pid == 0:
            sys.exit(0)
        wait(pid)
        check()
    """,
    "multiprocessing fork pool": """
        with multiprocessing.get_context("fork").Pool(3) as pool:
            pids = pool.map(check, range(12))
        assert os.getpid() not in pids
        check()
    """,
}


def run_isolated(program: str, timeout: float) -> subprocess.CompletedProcess:
    """Runs a Python program in a new session; on timeout kills its whole process group, so no
    hung forked child outlives the test. Returns None on timeout."""
    proc = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env=dict(os.environ, GQA_LOG_LEVEL="WARNING"))
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group, if any
        except ProcessLookupError:
            pass
        proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_fork(scenario):
    program = PRELUDE + textwrap.dedent(SCENARIOS[scenario]) + "print('done')\n"
    done = run_isolated(program, TIMEOUT_S)
    if done is None:
        pytest.fail(f"{scenario}: hung (killed after {TIMEOUT_S} s)")
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr
