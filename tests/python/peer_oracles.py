"""Other libraries' attention, as independent oracles of gqa.reference's options.

* onnxruntime's com.microsoft.GroupQueryAttention on the CPU (window through
  local_window_size = window_left + 1, softcap, head_sink, smooth_softmax);
* torch's scaled_dot_product_attention given the equivalent explicit mask, a sink as one more
  key (k = v = 0) whose logit is the sink, and its CPU flash kernel for the LSE.

Each returns float64 NumPy arrays in libgqa's layouts. Callers skip when the package is absent.
"""

from __future__ import annotations

import numpy as np


def _ort_model(B, S, P, Hq, Hkv, D, *, local_window_size, softcap, head_sink, smooth_softmax, scale, causal):
    from onnx import TensorProto, helper

    f32, i32 = TensorProto.FLOAT, TensorProto.INT32
    names = ["query", "key", "value", "past_key" if P else "", "past_value" if P else "", "seqlens_k",
             "total_sequence_length", "", "", "", "", "head_sink" if head_sink else ""]
    while not names[-1]:
        names.pop()
    attrs = dict(num_heads=Hq, kv_num_heads=Hkv, local_window_size=local_window_size, softcap=float(softcap),
                 smooth_softmax=int(smooth_softmax), causal=int(causal))
    if scale:
        attrs["scale"] = float(scale)
    node = helper.make_node("GroupQueryAttention", names, ["output", "present_key", "present_value"],
                            domain="com.microsoft", **attrs)
    info = helper.make_tensor_value_info
    inputs = [info("query", f32, [B, S, Hq * D]), info("key", f32, [B, S, Hkv * D]), info("value", f32, [B, S, Hkv * D])]
    if P:
        inputs += [info("past_key", f32, [B, Hkv, P, D]), info("past_value", f32, [B, Hkv, P, D])]
    inputs += [info("seqlens_k", i32, [B]), info("total_sequence_length", i32, [1])]
    if head_sink:
        inputs.append(info("head_sink", f32, [Hq]))
    outputs = [info(n, f32, None) for n in ("output", "present_key", "present_value")]
    graph = helper.make_graph([node], "gqa", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    return model.SerializeToString()


def ort_group_query_attention(q, k, v, past_k=None, past_v=None, *, window_left=-1, softcap=0.0, sinks=None,
                              smooth_softmax=False, scale=None, causal=True):
    """onnxruntime GroupQueryAttention (float32). q [B, S, Hq, D], k/v [B, S, Hkv, D]; the past
    (optional) [B, P, Hkv, D] in libgqa's cache layout, i.e. the first P cache positions."""
    import onnxruntime

    B, S, Hq, D = q.shape
    Hkv = k.shape[2]
    P = 0 if past_k is None else past_k.shape[1]
    model = _ort_model(B, S, P, Hq, Hkv, D, local_window_size=window_left + 1 if window_left >= 0 else -1,
                       softcap=softcap, head_sink=sinks is not None, smooth_softmax=smooth_softmax, scale=scale,
                       causal=causal)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    f32 = lambda x: np.ascontiguousarray(np.asarray(x, np.float32))  # noqa: E731
    feeds = {"query": f32(q).reshape(B, S, -1), "key": f32(k).reshape(B, S, -1), "value": f32(v).reshape(B, S, -1),
             "seqlens_k": np.full(B, P + S - 1, np.int32), "total_sequence_length": np.array([P + S], np.int32)}
    if P:
        feeds["past_key"] = f32(np.asarray(past_k).transpose(0, 2, 1, 3))  # BNSH
        feeds["past_value"] = f32(np.asarray(past_v).transpose(0, 2, 1, 3))
    if sinks is not None:
        feeds["head_sink"] = f32(sinks)
    return session.run(["output"], feeds)[0].reshape(B, S, Hq, D).astype(np.float64)


def _bshd_to_bhsd(x):
    import torch

    return torch.from_numpy(np.asarray(x, np.float64)).transpose(1, 2)


def torch_sdpa_masked(q, keys, values, visible, *, scale=None, sinks=None, return_lse=False):
    """torch SDPA over an explicit mask. q [B, S, Hq, D]; keys/values [B, T, Hkv, D]; visible
    [S, T] booleans (the same for every sequence). A sink is one more key, k = v = 0, whose
    logit is set through the float mask. Returns out [B, S, Hq, D] (and lse [B, Hq, S] from
    torch's CPU flash kernel, which computes in float32)."""
    import torch

    B, S, Hq, D = q.shape
    T, Hkv = keys.shape[1], keys.shape[2]
    qt, kt, vt = _bshd_to_bhsd(q), _bshd_to_bhsd(keys), _bshd_to_bhsd(values)
    bias = torch.where(torch.from_numpy(np.asarray(visible)), 0.0, -torch.inf).to(torch.float64).expand(Hq, S, T)
    if sinks is not None:
        kt = torch.cat([kt, torch.zeros(B, Hkv, 1, D, dtype=torch.float64)], 2)
        vt = torch.cat([vt, torch.zeros(B, Hkv, 1, D, dtype=torch.float64)], 2)
        sink_column = torch.as_tensor(np.asarray(sinks, np.float64))[:, None, None].expand(Hq, S, 1)
        bias = torch.cat([bias, sink_column], 2)
    scale = None if scale in (None, 0) else float(scale)
    group = Hq // Hkv
    kt, vt = kt.repeat_interleave(group, 1), vt.repeat_interleave(group, 1)
    mask = bias[None].expand(B, -1, -1, -1)
    if not return_lse:
        # A row with no visible key (and no sink) is NaN in SDPA; libgqa defines it as 0.
        out = torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, scale=scale)
        return np.nan_to_num(out.transpose(1, 2).numpy(), nan=0.0)
    c = lambda x: x.float().contiguous()  # noqa: E731
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(c(qt), c(kt), c(vt), attn_mask=c(mask),
                                                                          scale=scale)
    return out.transpose(1, 2).double().numpy(), lse.double().numpy()
