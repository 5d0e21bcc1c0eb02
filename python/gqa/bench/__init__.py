"""Benchmarks of libgqa against its peers, with the machine's own ceilings measured in the same run.

CPU: ``python -m gqa.bench --device cpu`` (``pip install ".[bench]"`` brings the peers).
Modules: ``configs`` (the grid, bytes, FLOPs, targets), ``machine`` (CPU model, ISA flags, copy
bandwidth, matmul rates), ``timing`` (interleaved bursts, spread, calls after idle), ``runners``
(inputs, libgqa, torch SDPA, libgqa's ISA path), ``peer_openvino``, ``peer_onnxruntime``,
``cpu_run`` (one config: build, check, time), ``report`` (ratios, targets, Markdown, JSON),
``cpu_plot``, ``progress``.

GPU: ``python -m gqa.bench {decode,prefill,all} --device cuda``. Modules: ``gpu_main`` (CLI and
the run), ``gpu_configs`` (grid, bytes, FLOPs, rotation), ``gpu_timing`` (CUDA events, copy
bandwidth, matmul rate), ``gpu_runners`` (libgqa and SDPA calls, CUDA graphs), ``gpu_check``
(float32 reference), ``gpu_report`` (metrics, misses, RESULTS.md sections, JSON), ``gpu_plot``.
"""
