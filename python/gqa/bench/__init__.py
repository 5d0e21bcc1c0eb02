"""Benchmarks of libgqa against PyTorch SDPA.

CPU: ``python -m gqa.bench --device cpu``. Modules: ``configs`` (what is measured), ``timing``
(median timer, copy bandwidth), ``runners`` (libgqa and torch calls), ``report`` (JSON,
RESULTS.md, PNG), ``progress``.

GPU: ``python -m gqa.bench {decode,prefill,all} --device cuda``. Modules: ``gpu_main`` (CLI and
the run), ``gpu_configs`` (grid, bytes, FLOPs, rotation), ``gpu_timing`` (CUDA events, copy
bandwidth, matmul rate), ``gpu_runners`` (libgqa and SDPA calls, CUDA graphs), ``gpu_check``
(float32 reference), ``gpu_report`` (metrics, misses, RESULTS.md sections, JSON), ``gpu_plot``.
"""
