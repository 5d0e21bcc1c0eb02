"""OpenVINO peers: models built from opset13 ScaledDotProductAttention, compiled for the CPU
plugin with the benchmark's thread count and the config's dtype as inference precision, except
f16 on a CPU without f16 arithmetic (no AVX512-FP16): there the plugin's f16 precision was off by
0.013 against float64 on a Zen 5 EPYC (beyond the f16 tolerance of 0.01; the size of a bf16
rounding, that CPU's only 16-bit arithmetic), so f16 runs at f32 precision with f16 storage and
KV cache, as libgqa's f16 path does.

  openvino      the LLM form OpenVINO runs its own models in: K/V in model state (ReadValue ->
                Gather(beam_idx) -> Concat -> Assign), GQA as Unsqueeze -> Broadcast -> Reshape.
                The CPU plugin fuses this into its ScaledDotProductAttention node with the KV
                cache inside (KV_CACHE_PRECISION = the dtype, so nothing is quantized).
                Prefill: the state is reset before every call (a new prompt), inside the timed call.
                Decode: before each burst the state is set to the cache_len cached positions and one
                untimed call appends the new token; each timed call appends one more, so a burst of
                n calls reads up to n + 1 positions more than the others (<= 0.9% at L = 1024).
  openvino-mha  prefill only: the plain model (K/V as inputs), which the plugin tokenizes into its
                MHA snippet (brgemm; AMX for bf16). Its decode form ran 5-10x slower than the
                stateful one in a trial, so it is not a decode peer.
"""
from __future__ import annotations

import numpy as np

from . import machine
from .runners import Inputs, Runner, Unavailable, numpy_dtype

_core = None


def _openvino():
    try:
        import openvino
        import openvino.opset13  # noqa: F401
    except ImportError:
        raise Unavailable("openvino is not installed (pip install openvino)")
    return openvino


def inference_precision(dtype: str) -> str:
    """The plugin's arithmetic for a model of `dtype` (see the module docstring)."""
    return "f32" if dtype == "f16" and "avx512_fp16" not in machine.isa_flags() else dtype


def _compile(model, dtype: str, threads: int):
    global _core
    ov = _openvino()
    if _core is None:
        _core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": inference_precision(dtype), "KV_CACHE_PRECISION": dtype,
              "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
    try:
        return _core.compile_model(model, "CPU", config)
    except RuntimeError as e:
        raise Unavailable(f"the CPU plugin refused the model: {str(e).splitlines()[0][:160]}")


def _element_type(dtype: str):
    ov = _openvino()
    return {"f32": ov.Type.f32, "bf16": ov.Type.bf16, "f16": ov.Type.f16}[dtype]


def _tensor(a: np.ndarray, dtype: str, keep: list):
    """An ov.Tensor sharing the memory of a (or of its contiguous copy; bf16 through its bit
    pattern). The tensor does not own that memory: the array goes into keep, which the caller
    holds as long as the tensor is used."""
    ov = _openvino()
    a = np.ascontiguousarray(a)
    keep.append(a)
    if dtype == "bf16":
        return ov.Tensor(a.view(np.uint16), list(a.shape), ov.Type.bf16)
    return ov.Tensor(a, shared_memory=True)


def _output(request, dtype: str) -> np.ndarray:
    """The model's [B, Hq, S, D] output as float32 BSHD."""
    data = request.get_output_tensor(0).data
    if dtype == "bf16":
        data = data.view(numpy_dtype("bf16"))
    return data.astype(np.float32).transpose(0, 2, 1, 3)


def _repeat_heads(x, group: int, num_q_heads: int, head_dim: int):
    """[B, Hkv, L, D] -> [B, Hq, L, D], each KV head repeated group times, in the
    Unsqueeze -> Broadcast -> Reshape form the plugin recognises."""
    import openvino.opset13 as ops

    if group == 1:
        return x
    x = ops.unsqueeze(x, ops.constant(np.array([2], np.int64)))
    x = ops.broadcast(x, ops.constant(np.array([1, 1, group, 1, 1], np.int64)), broadcast_spec="BIDIRECTIONAL")
    return ops.reshape(x, ops.constant(np.array([0, num_q_heads, -1, head_dim], np.int64)), special_zero=True)


def _qkv_parameters(cfg):
    """The model's inputs: this call's q [B, Hq, S, D] and new k, v [B, Hkv, S, D]."""
    import openvino.opset13 as ops

    et = _element_type(cfg.dtype)
    b, s, hq, hkv, d = cfg.batch, cfg.seq_len, cfg.num_q_heads, cfg.num_kv_heads, cfg.head_dim
    return (ops.parameter([b, hq, s, d], et, name="q"), ops.parameter([b, hkv, s, d], et, name="k"),
            ops.parameter([b, hkv, s, d], et, name="v"))


def _stateful_model(inputs: Inputs):
    ov = _openvino()
    import openvino.opset13 as ops
    from openvino.op.util import Variable, VariableInfo

    cfg = inputs.cfg
    et = _element_type(cfg.dtype)
    b, hq, hkv, d = cfg.batch, cfg.num_q_heads, cfg.num_kv_heads, cfg.head_dim
    q, k, v = _qkv_parameters(cfg)
    beam_idx = ops.parameter([b], ov.Type.i32, name="beam_idx")
    sinks = []

    def cached(new, name):
        info = VariableInfo()
        info.data_shape = ov.PartialShape([b, hkv, -1, d])
        info.data_type = et
        info.variable_id = name
        variable = Variable(info)
        empty = ops.constant(np.zeros([b, hkv, 0, d], np.float32), dtype=et)
        past = ops.gather(ops.read_value(empty, variable), beam_idx, ops.constant(np.array(0, np.int64)))
        present = ops.concat([past, new], 2)
        sinks.append(ops.assign(present, variable))
        return _repeat_heads(present, cfg.group, hq, d)

    attention = ops.scaled_dot_product_attention(q, cached(k, "k_cache"), cached(v, "v_cache"),
                                                 causal=cfg.op == "prefill")
    return ov.Model([ops.result(attention)], sinks, [q, k, v, beam_idx], "gqa_stateful")


def _plain_model(inputs: Inputs):
    ov = _openvino()
    import openvino.opset13 as ops

    cfg = inputs.cfg
    hq, d = cfg.num_q_heads, cfg.head_dim
    q, k, v = _qkv_parameters(cfg)
    attention = ops.scaled_dot_product_attention(q, _repeat_heads(k, cfg.group, hq, d),
                                                 _repeat_heads(v, cfg.group, hq, d), causal=True)
    return ov.Model([ops.result(attention)], [q, k, v], "gqa_plain")


def _fused_layers(compiled) -> str:
    layers = {op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ordered_ops()}
    return "+".join(sorted(layers - {"Const", "Input", "Output", "MemoryInput", "MemoryOutput"}))


def stateful_runner(inputs: Inputs, threads: int) -> Runner:
    ov = _openvino()
    cfg = inputs.cfg
    compiled = _compile(_stateful_model(inputs), cfg.dtype, threads)
    request = compiled.create_infer_request()
    q, k, v = inputs.bhsd()
    if cfg.op == "prefill":
        new_k, new_v = k, v
    else:
        new_k, new_v = k[:, :, cfg.cache_len:], v[:, :, cfg.cache_len:]
    keep: list = []  # the arrays behind the tensors: the Runner holds them
    for i, a in enumerate((q, new_k, new_v)):
        request.set_input_tensor(i, _tensor(a, cfg.dtype, keep))
    request.set_input_tensor(3, ov.Tensor(np.arange(cfg.batch, dtype=np.int32)))
    note = f"stateful KV, {inference_precision(cfg.dtype)} arithmetic, layers {_fused_layers(compiled)}"

    if cfg.op == "prefill":
        def call():
            request.reset_state()
            request.infer()
        return Runner(call, lambda: _output(request, cfg.dtype), note=note, keep=keep)

    # The cached positions: a view (region of interest) of the BHSD caches, no copy.
    cached = [cfg.batch, cfg.num_kv_heads, cfg.cache_len, cfg.head_dim]
    past = {name: ov.Tensor(_tensor(a, cfg.dtype, keep), [0, 0, 0, 0], cached)
            for name, a in (("k_cache", k), ("v_cache", v))}

    def reset():
        for state in request.query_state():
            state.state = past[state.name]
        request.infer()  # appends the new token: the state now holds cache_len + 1 positions

    def output():  # the first call after a reset: the same keys libgqa attends to
        reset()
        return _output(request, cfg.dtype)

    return Runner(request.infer, output, reset=reset, max_burst=8, note=note, keep=keep)


def mha_runner(inputs: Inputs, threads: int) -> Runner:
    cfg = inputs.cfg
    if cfg.op != "prefill":
        raise Unavailable("prefill only (its decode form is far slower than the stateful one)")
    compiled = _compile(_plain_model(inputs), cfg.dtype, threads)
    request = compiled.create_infer_request()
    keep: list = []
    for i, a in enumerate(inputs.bhsd()):
        request.set_input_tensor(i, _tensor(a, cfg.dtype, keep))
    return Runner(request.infer, lambda: _output(request, cfg.dtype),
                  note=f"K/V as inputs, {inference_precision(cfg.dtype)} arithmetic, layers {_fused_layers(compiled)}",
                  keep=keep)
