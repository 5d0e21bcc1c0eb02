"""Shared helpers of the gqa Python tests: random inputs, NaN-poisoned outputs, tolerances."""

import ml_dtypes
import numpy as np

BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = [np.dtype(np.float32), np.dtype(np.float16), BF16]
# Tolerances vs the float64 reference on O(1) data (team quality bar).
TOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float16): 4e-3, BF16: 3e-2}


def rand(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def poisoned(shape, dtype):
    return np.full(shape, np.nan, dtype=dtype)


def max_err(got, want):
    return float(np.max(np.abs(got.astype(np.float64) - np.asarray(want, np.float64))))
