"""onnxruntime peer: one com.microsoft.GroupQueryAttention node (built with the onnx package) on
the CPU execution provider, intra-op threads = the benchmark's thread count.

GroupQueryAttention is causal. Query/key/value are [B, S, H*D] (the BSHD arrays libgqa reads,
reshaped without a copy). Prefill passes no past. Decode passes the BNSH caches (cache_len + 1
positions, the new token's row included) as past_key/past_value and binds the same buffers as
present_key/present_value, so onnxruntime appends in place (its shared-buffer mode, as
onnxruntime-genai runs it) instead of copying the cache every call; seqlens_k = cache_len
(total length - 1), total_sequence_length = cache_len + 1. The CPU provider has f32 and f16
kernels only.

Between runs onnxruntime's pool spins (allow_spinning, its default) for tens of milliseconds or
more, holding a core through the next backend's timing (measured: libgqa 1.1-1.7x slower right
after it). So the interleaved rounds use a session with session.force_spinning_stop=1 (workers
still spin inside a run, and stop when it returns), and cpu_run times a default session once
more on its own, closing it before anything else runs; the report keeps the faster of the two.
"""
from __future__ import annotations

import numpy as np

from .runners import Inputs, Runner, Unavailable

_IR_VERSION = 10  # onnxruntime 1.31 reads IR <= 13; the onnx package writes newer by default


def _modules():
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise Unavailable(f"{e.name} is not installed (pip install onnx onnxruntime)")
    return onnx, onnxruntime


def _model(inputs: Inputs) -> bytes:
    onnx, _ = _modules()
    from onnx import TensorProto, helper

    cfg = inputs.cfg
    t = {"f32": TensorProto.FLOAT, "f16": TensorProto.FLOAT16}[cfg.dtype]
    b, s, hq, hkv, d = cfg.batch, cfg.seq_len, cfg.num_q_heads, cfg.num_kv_heads, cfg.head_dim
    decode = cfg.op == "decode"
    cache = [b, hkv, cfg.cache_len + 1, d]
    info = helper.make_tensor_value_info
    ins = [info("query", t, [b, s, hq * d]), info("key", t, [b, s, hkv * d]), info("value", t, [b, s, hkv * d])]
    if decode:
        ins += [info("past_key", t, cache), info("past_value", t, cache)]
    ins += [info("seqlens_k", TensorProto.INT32, [b]), info("total_sequence_length", TensorProto.INT32, [])]
    outs = [info("output", t, [b, s, hq * d])]
    if decode:
        outs += [info("present_key", t, cache), info("present_value", t, cache)]
    past = ["past_key", "past_value"] if decode else ["", ""]
    node = helper.make_node("GroupQueryAttention", ["query", "key", "value", *past, "seqlens_k", "total_sequence_length"],
                            [o.name for o in outs], domain="com.microsoft", num_heads=hq, kv_num_heads=hkv,
                            scale=float(cfg.head_dim) ** -0.5)
    graph = helper.make_graph([node], "gqa", ins, outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = _IR_VERSION
    return model.SerializeToString()


def runner(inputs: Inputs, threads: int, spin_between_runs: bool = False) -> Runner:
    cfg = inputs.cfg
    if cfg.dtype not in ("f32", "f16"):
        raise Unavailable(f"no {cfg.dtype} kernel for GroupQueryAttention on the CPU provider")
    _, ort = _modules()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not spin_between_runs:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    try:
        session = ort.InferenceSession(_model(inputs), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/NotImplemented types
        raise Unavailable(f"session refused: {str(e).splitlines()[0][:160]}")
    b, s = cfg.batch, cfg.seq_len
    total = cfg.cache_len + 1 if cfg.op == "decode" else s
    binding = session.io_binding()
    out = np.empty(inputs.q.shape, inputs.q.dtype)
    # The binding points at these arrays' memory without owning it: the Runner keeps them.
    keep = [inputs.q.reshape(b, s, -1), inputs.k.reshape(b, s, -1), inputs.v.reshape(b, s, -1),
            np.full(b, total - 1, np.int32), np.array(total, np.int32), out]
    for name, a in zip(("query", "key", "value", "seqlens_k", "total_sequence_length"), keep):
        binding.bind_cpu_input(name, a)
    binding.bind_output("output", "cpu", 0, out.dtype, [b, s, out.shape[2] * out.shape[3]], out.ctypes.data)
    note = "prefill without past"
    if cfg.op == "decode":
        _, k, v = inputs.bhsd()  # BNSH caches, the new token's row already in place
        for name, a in (("key", k), ("value", v)):
            value = ort.OrtValue.ortvalue_from_numpy(a)
            keep.append(value)
            binding.bind_ortvalue_input(f"past_{name}", value)
            binding.bind_ortvalue_output(f"present_{name}", value)
        note = "past = present buffers (in-place append)"
    return Runner(lambda: session.run_with_iobinding(binding), lambda: out.astype(np.float32), note=note, keep=keep)
