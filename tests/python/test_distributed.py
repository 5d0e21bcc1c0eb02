"""Context parallelism on an existing engine (torch.distributed, gloo, CPU): two processes each
hold half of a long KV cache, decode their half with return_lse=True, all-gather outputs and
LSEs, and merge them with gqa.merge_states (sinks added once there). The result equals the
one-process decode over the whole cache within fp32 tolerance.

The processes talk over the loopback interface only (MASTER_ADDR=127.0.0.1,
GLOO_SOCKET_IFNAME=lo) and every wait has a timeout, so a hang fails the test."""

import os
import socket
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")

WORKER = textwrap.dedent('''
    import datetime, os, sys
    import numpy as np
    import torch
    import torch.distributed as dist
    import gqa

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    B, Hq, Hkv, D, T = 2, 8, 2, 64, 3001  # T cached positions, the last one the new token
    rng = np.random.default_rng(0)  # every rank builds the same tensors, then keeps its half
    q = rng.standard_normal((B, 1, Hq, D)).astype(np.float32)
    k_all = rng.standard_normal((B, T, Hkv, D)).astype(np.float32)
    v_all = rng.standard_normal((B, T, Hkv, D)).astype(np.float32)
    sinks = rng.standard_normal(Hq).astype(np.float32)

    # This rank's shard of the sequence: positions [lo, hi). Its last position is passed as the
    # "new" token (decode appends it where it already is), so each shard decodes on its own.
    cuts = [0, T // 2 + 17, T]
    lo, hi = cuts[rank], cuts[rank + 1]
    k_cache, v_cache = k_all[:, lo:hi].copy(), v_all[:, lo:hi].copy()
    out, lse = gqa.decode(q, k_cache[:, -1:].copy(), v_cache[:, -1:].copy(), k_cache, v_cache, hi - lo - 1,
                          return_lse=True)

    outs = [torch.empty(out.shape) for _ in range(world)]
    lses = [torch.empty(lse.shape) for _ in range(world)]
    dist.all_gather(outs, torch.from_numpy(out))
    dist.all_gather(lses, torch.from_numpy(lse))
    merged = gqa.merge_states(torch.stack(outs).numpy(), torch.stack(lses).numpy(), sinks=sinks)

    whole = gqa.decode(q, k_all[:, -1:].copy(), v_all[:, -1:].copy(), k_all.copy(), v_all.copy(), T - 1,
                       sinks=sinks)
    err = float(np.abs(merged - whole).max())
    dist.destroy_process_group()
    print(f"rank {rank}: max |merged - whole| = {err:.3g}")
    sys.exit(0 if err <= 1e-5 else 1)
''')


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_context_parallel_decode_equals_one_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2",
           "GLOO_SOCKET_IFNAME": "lo", "GQA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([sys.executable, str(script)], env={**env, "RANK": str(r)}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for r in range(2)]
    outputs = []
    try:
        for w in workers:
            outputs.append(w.communicate(timeout=180)[0])
    except subprocess.TimeoutExpired:
        for w in workers:
            w.kill()
        pytest.fail("a torch.distributed worker hung (180 s)")
    for rank, (w, text) in enumerate(zip(workers, outputs)):
        assert w.returncode == 0, f"rank {rank} failed:\n{text}"
        assert f"rank {rank}: max" in text
