"""PyTorch idioms from real tutorials and model code, each run with torch and with minigrad.

Every idiom (in idioms_models.py, idioms_training.py, idioms_semantics.py; registered through
idioms_kit.py) is one small function written once against an environment ``e`` whose ``e.T`` is
either ``torch`` or ``minigrad`` (``e.F`` its nn.functional, ``e.tensor(...)`` a tensor on the device under
test). It returns what a user would look at (values, dtypes, shapes, gradients, Python scalars, the
type of an error raised); the test runs it with torch (the oracle) and with minigrad on both
backends, ``cpu`` (numpy) and ``torch:cpu``, and compares the two results structurally.

Sources: micrograd's tests, the PyTorch 60-minute blitz and CIFAR tutorial, nanoGPT (model.py,
train.py), the Annotated Transformer, makemore (parts 1-4), HF's collators and BERT's attention
mask, sentence-transformers' mean pooling, and the manual-SGD loops every course starts with.

Idioms that minigrad does not support on purpose are marked ``xfail(strict=True)`` with the reason,
so the suite fails if one starts passing.
"""
from __future__ import annotations

import math

import idioms_models  # noqa: F401 - each idiom module registers its idioms on import
import idioms_semantics  # noqa: F401
import idioms_training  # noqa: F401
import numpy as np
import pytest
import torch
from idioms_kit import IDIOMS, env

import minigrad as mg

MG_DEVICES = ["cpu", "torch:cpu"]
# float32 on both sides; results are sums/products of O(1) values over <= a few hundred terms,
# summed in different orders by numpy and torch, so 1e-4 relative / 1e-5 absolute (as
# conftest.REDUCTION) is ~100x looser than rounding and ~1000x tighter than any real bug.
RTOL, ATOL = 1e-4, 1e-5


# ---- the harness ----------------------------------------------------------------------------------------
def _canon(x):
    """A comparable, backend-free form of an idiom's result."""
    if isinstance(x, (mg.Tensor, torch.Tensor)):
        arr = x.numpy() if isinstance(x, mg.Tensor) else x.detach().cpu().numpy()
        dtype = str(x.dtype).replace("torch.", "")
        return ("tensor", dtype, tuple(arr.shape), arr)
    if isinstance(x, (tuple, list)):  # torch.Size and torch.return_types are tuples too
        return ("seq", [_canon(v) for v in x])
    if isinstance(x, np.ndarray):
        return ("ndarray", str(x.dtype), x.shape, x)
    if isinstance(x, (torch.dtype, np.dtype)):
        return ("py", "dtype", str(x).replace("torch.", ""))
    if isinstance(x, dict):
        return ("dict", sorted(x), [_canon(v) for v in x.values()])
    return ("py", type(x).__name__, x)


def _compare(got, want, path: str = "result") -> None:
    assert got[0] == want[0], f"{path}: minigrad gave a {got[0]}, torch a {want[0]}"
    if got[0] in ("tensor", "ndarray"):
        assert got[1] == want[1], f"{path}: dtype {got[1]}, torch {want[1]}"
        assert got[2] == want[2], f"{path}: shape {got[2]}, torch {want[2]}"
        if got[3].dtype.kind == "f":
            np.testing.assert_allclose(got[3], want[3], rtol=RTOL, atol=ATOL, err_msg=path)
        else:
            np.testing.assert_array_equal(got[3], want[3], err_msg=path)
    elif got[0] == "seq":
        assert len(got[1]) == len(want[1]), f"{path}: {len(got[1])} items, torch {len(want[1])}"
        for i, (g, w) in enumerate(zip(got[1], want[1])):
            _compare(g, w, f"{path}[{i}]")
    elif got[0] == "dict":
        assert got[1] == want[1], f"{path}: keys {got[1]}, torch {want[1]}"
        for k, g, w in zip(got[1], got[2], want[2]):
            _compare(g, w, f"{path}[{k!r}]")
    else:
        assert got[1] == want[1], f"{path}: Python {got[1]}, torch {want[1]}"
        if isinstance(want[2], float):
            assert math.isclose(got[2], want[2], rel_tol=RTOL, abs_tol=ATOL) or got[2] == want[2], \
                f"{path}: {got[2]} vs torch {want[2]}"
        else:
            assert got[2] == want[2], f"{path}: {got[2]!r} vs torch {want[2]!r}"


def _cases():
    for name, (fn, source, unsupported) in IDIOMS.items():
        for device in MG_DEVICES:
            marks = [pytest.mark.xfail(strict=True, reason=unsupported)] if unsupported else []
            yield pytest.param(name, device, marks=marks, id=f"{name}-{device}")


@pytest.mark.parametrize("name, device", list(_cases()))
def test_idiom(name: str, device: str) -> None:
    fn, source, _ = IDIOMS[name]
    want = _canon(fn(env(torch, "cpu")))
    got = _canon(fn(env(mg, device)))
    _compare(got, want, f"{name} ({source})")


def test_suite_size() -> None:
    assert len(IDIOMS) >= 60, f"only {len(IDIOMS)} idioms"
