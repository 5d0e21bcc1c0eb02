"""Benchmarks of libgqa against PyTorch's CPU SDPA: ``python -m gqa.bench --device cpu``.

Modules: ``configs`` (what is measured), ``timing`` (median timer, copy bandwidth),
``runners`` (libgqa and torch calls), ``report`` (JSON, RESULTS.md, PNG), ``progress``.
"""
