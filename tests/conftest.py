"""Shared fixtures and helpers for the engine tests.

Two oracles, both computed inside the tests, never copied from our own output:
  * torch autograd, in float32 on the same inputs (``check_against_torch``);
  * central finite differences in float64 (``gradcheck_op``, a thin wrapper of ``mg.gradcheck``).

Every op test runs on each ``device``: "cpu" (numpy), "torch:cpu", and "cuda" where torch sees
a GPU.
An op is written once as ``fn(ns, *tensors)`` where ``ns`` is ``minigrad`` or ``torch``: the two
share the Tensor API, ``ns.nn.functional`` and ``ns.where/cat/stack``, so one lambda serves both.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigrad as mg

CUDA = torch.cuda.is_available()
_NEEDS_GPU = [pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason="torch sees no CUDA GPU")]
DEVICES = ["cpu", "torch:cpu", pytest.param("cuda", marks=_NEEDS_GPU)]

# float32 parity tolerances.
# Elementwise: numpy and torch may round a transcendental function differently by a few ulp
# (float32 ulp = 1.2e-7 relative; the numpy float32 erf is within 7 ulp), so rtol=1e-5 leaves two
# orders of margin; atol=1e-6 covers results near 0, where a relative error means nothing.
ELEMENTWISE = dict(rtol=1e-5, atol=1e-6)
# Reductions, matmul, normalisations, losses: the backends sum in different orders (pairwise vs
# blocked/vectorised), each partial sum rounding by up to an ulp; for the O(1) values and <= ~100
# terms used here that stays below 1e-5 absolute, so rtol=1e-4/atol=1e-5 (still ~100x tighter
# than any real gradient bug, which is O(1) wrong).
REDUCTION = dict(rtol=1e-4, atol=1e-5)

# Hypothesis: modest example counts so the suite stays fast; no deadline (the machine is shared);
# the ``device`` fixture is a read-only string, so reusing it across examples is safe.
HYPOTHESIS = settings(max_examples=25, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


# ---- conversion and comparison -------------------------------------------------------------------
def as_numpy(x) -> np.ndarray:
    """Host numpy copy of a minigrad Tensor, a torch tensor, or anything array-like."""
    if isinstance(x, mg.Tensor):
        return x.numpy()
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def to_torch(x, requires_grad: bool = False) -> torch.Tensor:
    """A fresh CPU torch leaf holding the same values (a minigrad Tensor or a numpy array)."""
    return torch.tensor(as_numpy(x), requires_grad=requires_grad)


def assert_close(actual, expected, rtol: float, atol: float, what: str = "") -> None:
    a, e = as_numpy(actual), as_numpy(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} vs expected {e.shape}"
    np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=what)


def _outputs(out) -> list:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _leaves(ns, arrays, device, float_dtype, transpose: bool):
    """(leaves, inputs): float arrays become leaves requiring grad, others constants.

    With ``transpose`` every float leaf of >= 2 dims is stored with its last two dims swapped and
    handed to the op through ``.transpose(-1, -2)``: the op then sees a non-contiguous view.
    """
    leaves, inputs = [], []
    for a in arrays:
        a = np.asarray(a)
        is_float = a.dtype.kind == "f"
        flip = transpose and is_float and a.ndim >= 2
        host = np.ascontiguousarray(a.swapaxes(-1, -2)) if flip else a
        if is_float:
            host = host.astype(float_dtype)
        if ns is mg:
            leaf = mg.tensor(host, requires_grad=is_float, device=device)
        else:
            leaf = torch.tensor(host, requires_grad=is_float)
        leaves.append(leaf)
        inputs.append(leaf.transpose(-1, -2) if flip else leaf)
    return leaves, inputs


def check_against_torch(fn: Callable, *arrays, device: str, tol: dict = ELEMENTWISE,
                        grad_tol: dict | None = None, transpose: bool = False, seed: int = 0):
    """Compare ``fn(mg, ...)`` on ``device`` with ``fn(torch, ...)`` on the CPU, both float32.

    Float arrays become leaves that require grad; integer and bool arrays are constants. Compares
    every output (integer outputs exactly), then backpropagates one random upstream gradient
    through both graphs and compares every leaf's gradient, including its dtype.
    Returns the minigrad outputs.
    """
    mg_leaves, mg_in = _leaves(mg, arrays, device, np.float32, transpose)
    th_leaves, th_in = _leaves(torch, arrays, device, np.float32, transpose)
    mg_out, th_out = _outputs(fn(mg, *mg_in)), _outputs(fn(torch, *th_in))
    assert len(mg_out) == len(th_out)
    rng = np.random.default_rng(seed)
    mg_seeded, th_seeded = [], []
    for k, (m, t) in enumerate(zip(mg_out, th_out)):
        assert m.device == (device if device != "cuda" else "cuda:0")
        if not t.dtype.is_floating_point:
            np.testing.assert_array_equal(as_numpy(m), as_numpy(t), err_msg=f"output {k}")
            continue
        assert m.dtype == np.float32, f"output {k} is {m.dtype}, torch gives float32"
        assert_close(m, t, **tol, what=f"output {k}")
        if t.requires_grad:
            g = rng.standard_normal(t.shape).astype(np.float32)
            mg_seeded.append((m, g))
            th_seeded.append((t, torch.tensor(g)))
    if not th_seeded:
        return mg_out
    torch.autograd.backward([t for t, _ in th_seeded], [g for _, g in th_seeded])
    if len(mg_seeded) == 1:
        m, g = mg_seeded[0]
        m.backward(mg.tensor(g, device=m.device))
    else:  # several outputs: d/dx of Σ_k <g_k, out_k> is the sum of their vector-Jacobian products
        sum(((m * mg.tensor(g, device=m.device)).sum() for m, g in mg_seeded)).backward()
    for k, (m, t) in enumerate(zip(mg_leaves, th_leaves)):
        if not t.requires_grad:
            continue
        if t.grad is None:
            assert m.grad is None or not as_numpy(m.grad).any(), f"input {k}: torch has no grad"
            continue
        assert m.grad is not None, f"input {k}: no gradient reached it"
        assert m.grad.dtype == m.dtype, f"input {k}: grad dtype {m.grad.dtype} != {m.dtype}"
        assert m.grad.device == m.device
        assert_close(m.grad, t.grad, **(grad_tol or tol), what=f"grad of input {k}")
    return mg_out


def gradcheck_op(fn: Callable, *arrays, device: str, **kwargs) -> None:
    """``mg.gradcheck`` of ``fn(mg, ...)`` in float64 on ``device`` (float arrays are the inputs
    that require grad; integer and bool arrays are constants)."""
    _, inputs = _leaves(mg, arrays, device, np.float64, transpose=False)
    assert mg.gradcheck(lambda *ts: fn(mg, *ts), inputs, **kwargs)


# ---- hypothesis strategies -----------------------------------------------------------------------
def shapes(min_dims: int = 0, max_dims: int = 3, max_side: int = 3):
    """Small shapes; min_side=1 makes size-1 dims common (the broadcasting edge cases)."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=max_side)


def broadcast_pairs(max_dims: int = 3):
    """Pairs of mutually broadcastable shapes, e.g. (3, 1) and (2, 1, 4)."""
    return hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=max_dims,
                                             min_side=1, max_side=3).map(lambda b: b.input_shapes)


seeds = st.integers(0, 2**32 - 1)


def randn(seed: int, shape, lo: float | None = None) -> np.ndarray:
    """Standard normal float64 values (|x| >= lo when given: away from kinks and poles)."""
    x = np.random.default_rng(seed).standard_normal(shape)
    if lo is not None:
        x = np.where(x >= 0, x + lo, x - lo)
    return x


@pytest.fixture
def crashed_run(monkeypatch):
    """``crashed_run(cfg, n)``: ``mini_bert.finetune.train(cfg)`` with its n-th ``AdamW.step``
    raising KeyboardInterrupt, a crash in the middle of a training run; checks that the run stopped
    there, and puts the real step back for what follows (typically a ``--resume`` of cfg's output)."""
    from mini_bert import finetune as FT

    real_step = mg.optim.AdamW.step

    def run(cfg, n: int) -> None:
        calls = {"n": 0}

        def crashing_step(self):
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt("simulated crash")
            real_step(self)

        monkeypatch.setattr(mg.optim.AdamW, "step", crashing_step)
        try:
            with pytest.raises(KeyboardInterrupt):
                FT.train(cfg)
        finally:
            monkeypatch.setattr(mg.optim.AdamW, "step", real_step)

    return run

