"""dtypes and torch's type promotion.

minigrad's dtypes are numpy dtypes on every backend (``minigrad.float32 is np.dtype('float32')``).
Integers are always int64: minigrad keeps one integer type, as torch does by default.

torch's promotion differs from numpy's, so the numpy backend's operands are cast before an op
(the torch backend gets torch's rules from torch itself). torch's rule, per operand *category*
(bool < integer < float):
  - the result's category is the highest among the operands;
  - within it, dimensioned tensors outrank 0-d tensors, which outrank Python/numpy scalars
    ("weak": ``t_float32 * np.float64(2)`` stays float32);
  - a category held only by scalars gives the default type: float32 for floats, int64 for ints.
  So ``int64 tensor * 0.5`` is float32 (numpy: float64) and int / int true division is float32.
"""
from __future__ import annotations

import numpy as np

float16, float32, float64, int64, bool_ = (np.dtype(n) for n in ("float16", "float32", "float64", "int64", "bool"))
DEFAULT_FLOAT = float32
finfo = np.finfo  # finfo(float32).min / .eps / .max, as torch.finfo
FLOATS = (float16, float32, float64)
_CATEGORY = {"b": 0, "i": 1, "u": 1, "f": 2}
_DEFAULT = {0: bool_, 1: int64, 2: DEFAULT_FLOAT}


def canonical(dtype) -> np.dtype:
    """numpy dtype for anything numpy understands; every integer type is int64."""
    dt = np.dtype(dtype)
    return int64 if dt.kind in "iu" else dt


def _describe(x) -> tuple[int, int, np.dtype | None]:
    """(category, rank, dtype) of an operand; rank 2 = dimensioned array, 1 = 0-d array, 0 = scalar."""
    if isinstance(x, (bool, np.bool_)):
        return 0, 0, None
    if isinstance(x, (int, np.integer)):
        return 1, 0, None
    if isinstance(x, (float, np.floating)):
        return 2, 0, None
    dt = x.dtype
    return _CATEGORY[dt.kind], (2 if x.ndim else 1), dt


def result_type(*operands, true_divide: bool = False) -> np.dtype:
    """The dtype torch gives ``op(*operands)`` (operands: numpy arrays or Python/numpy scalars)."""
    described = [_describe(x) for x in operands]
    category = max(c for c, _, _ in described)
    if true_divide and category < 2:
        return DEFAULT_FLOAT
    rank = max(r for c, r, _ in described if c == category)
    if rank == 0:
        return _DEFAULT[category]
    out = None
    for c, r, dt in described:
        if c == category and r == rank:
            out = dt if out is None else np.promote_types(out, dt)
    return out
