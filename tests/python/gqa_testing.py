"""Shared helpers of the gqa Python tests (imported by them; not a conftest): random inputs,
NaN-poisoned outputs, the error against a reference, and the one tolerance table."""

import ml_dtypes
import numpy as np

BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = [np.dtype(np.float32), np.dtype(np.float16), BF16]
# Largest error allowed against the float64 reference on O(1) data (the team's quality bar), by
# dtype name; the same table as tolerance() of the C tests (tests/support/gqa_test.h).
TOLERANCE = {"float32": 1e-4, "float16": 4e-3, "bfloat16": 3e-2}
# ... and by NumPy dtype.
TOL = {np.dtype(np.float32): TOLERANCE["float32"], np.dtype(np.float16): TOLERANCE["float16"],
       BF16: TOLERANCE["bfloat16"]}


def rand(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def poisoned(shape, dtype):
    return np.full(shape, np.nan, dtype=dtype)


def max_err(got, want):
    return float(np.max(np.abs(got.astype(np.float64) - np.asarray(want, np.float64))))
