"""numpy's compiled kernels (minigrad/backend/jit.py) in float32, against torch.

test_kernels.py checks them against the ops' numpy formulas in float64 (to 1e-12); here the float32
arithmetic itself: the rational erf, the vectorised exp, float64 row sums, NaN and inf, odd
layouts and dtypes, the thread count, and the package without numba. The oracle is torch's kernel
run in float64 on the same float32 inputs (the exact answer to float32 precision), and each bound
counts the float32 roundings the kernel makes.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import minigrad as mg
from minigrad.backend import jit, parallel

pytestmark = pytest.mark.skipif(not jit.available(), reason="numba is not installed")
F32_EPS = float(np.finfo(np.float32).eps)


@pytest.fixture(autouse=True)
def _small_arrays_too(monkeypatch):
    """The kernels decline arrays under jit.MIN_ELEMENTS; these tests' arrays are smaller."""
    monkeypatch.setattr(jit, "MIN_ELEMENTS", 0)


def _x(*shape, scale=3.0, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _close(ours, theirs, ulps: float, what: str):
    """|ours - theirs| <= ulps float32 ulps of max(|theirs|, 1): a few roundings apart."""
    theirs = np.asarray(theirs, dtype=np.float64)
    bound = ulps * F32_EPS * np.maximum(np.abs(theirs), 1.0)
    err = np.abs(np.asarray(ours, dtype=np.float64) - theirs)
    assert np.all(err <= bound), f"{what}: worst {float((err / bound).max()):.2f} of the bound"


def _f64(*arrays):
    return [None if a is None else torch.from_numpy(np.asarray(a, dtype=np.float64)) for a in arrays]


def test_exp32_is_within_3_ulp_and_keeps_nan_and_inf():
    from minigrad.backend import _jit_loops as loops

    x = np.concatenate([np.linspace(-87, 88, 200_001, dtype=np.float32), _x(10_000)])
    out = np.empty_like(x)
    loops.exp_loop(x, out)
    ref = np.exp(x.astype(np.float64))
    assert ref.min() >= np.finfo(np.float32).tiny  # normal results only: subnormals have fewer digits
    # The polynomial's own error (~1 ulp), 2^k exact, a few roundings in the reduction: numpy's
    # SIMD exp measures 1.7 ulp on the same points.
    assert float(np.max(np.abs(out - ref) / ref)) <= 3 * F32_EPS
    special = np.array([np.nan, np.inf, -np.inf, -100.0, 100.0, 0.0], np.float32)
    out = np.empty_like(special)
    loops.exp_loop(special, out)
    np.testing.assert_array_equal(out, np.exp(special.astype(np.float64)).astype(np.float32))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_and_its_backward_match_torch_in_float32(approximate):
    # Inputs up to ~15: the erf's clamp at ±4 (erf(4/√2) = 1 - 6e-5... for Φ: x = 5.66) is exercised.
    x, g = _x(64, 257, scale=4.0), _x(64, 257, scale=1.0, seed=1)
    tx, tg = _f64(x, g)
    # The float32 erf is within 4.2e-7 of erf (test_backend_erf), so Φ within 2.1e-7, and x·Φ
    # within 2.1e-7·|x| + a rounding; the backward adds x·φ (exp: 3 ulp) and a sum, times g.
    ours = jit._gelu(x, approximate), jit._gelu_backward(g, x, approximate)
    theirs = (torch.nn.functional.gelu(tx, approximate=approximate).numpy(),
              torch.ops.aten.gelu_backward(tg, tx, approximate=approximate).numpy())
    bounds = (2.2e-7 * np.abs(x) + F32_EPS * np.abs(theirs[0]), np.abs(g) * (2.2e-7 + 8 * F32_EPS))
    for a, b, bound, what in zip(ours, theirs, bounds, ("forward", "backward")):
        assert np.all(np.abs(a - b) <= bound), f"{what}: worst {float(np.max(np.abs(a - b) / bound)):.2f}"


def test_gelu_special_values_match_torch():
    # Also what the fit alone got wrong: erf beyond ±3.9192 is exactly ±1 (gelu(-40) = 0, not -1e-6).
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 40.0, -40.0, 6.0, -6.0], np.float32)
    t = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(jit._gelu(x, "none"), t)
    np.testing.assert_array_equal(mg.nn.functional.gelu(mg.tensor(x)).numpy(), t)  # the same, from the op


@pytest.mark.parametrize("dim", [-1, 1])
def test_softmax_and_its_backward_match_torch(dim):
    x, g = _x(6, 9, 300), _x(6, 9, 300, seed=1)
    x[0, 0, :5] = np.finfo(np.float32).min  # masked positions, as mini_bert's mask writes them
    tx, tg = _f64(x, g)
    y = jit._softmax(x, dim)
    # Each probability: e^(x - max) (3 ulp), times the reciprocal of a float64 sum, rounded once.
    _close(y, torch.softmax(tx, dim), 4, "forward")
    # The backward from our own float32 y: s (g - Σ g s), its sum in float64; the oracle uses the
    # same y, so only the kernel's roundings (a product, a difference, a product) are counted,
    # relative to max(|g|)·s scale: bound 4 ulp of max(|result|, 1).
    _close(jit._softmax_backward(g, y, dim),
           torch.ops.aten._softmax_backward_data(tg, *_f64(y), dim, torch.float64), 4, "backward")


def test_softmax_of_a_fully_masked_row_is_nan_as_in_torch():
    x = np.full((2, 4), -np.inf, np.float32)
    x[1] = 0.0
    np.testing.assert_array_equal(jit._softmax(x, -1), torch.softmax(torch.from_numpy(x), -1).numpy())


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_and_its_backward_match_torch(affine):
    x, g = _x(4, 33, 384, scale=2.0) + 5.0, _x(4, 33, 384, seed=1)
    w, b = (_x(384, seed=2), _x(384, seed=3)) if affine else (None, None)
    t = _f64(x, g, w, b)
    y, mean, rstd = jit._layer_norm(x, w, b, 1, 1e-12)
    ty, tmean, trstd = torch.ops.aten.native_layer_norm(t[0], [384], t[2], t[3], 1e-12)
    # Statistics in float64, rounded once; y = (x - μ) rstd w + b rounds (x - μ) (|x| up to ~11:
    # 1 ulp of |x|, i.e. ~4 ulp of |x - μ|), then three operations: 8 ulp of max(|y|, 1).
    for ours, theirs, ulps, what in ((y, ty, 8, "y"), (mean, tmean, 1, "mean"), (rstd, trstd, 1, "rstd")):
        _close(ours, theirs, ulps, what)
    grads = jit._layer_norm_backward(g, x, mean, rstd, w, b, 1, (True, affine, affine))
    tgrads = torch.ops.aten.native_layer_norm_backward(t[1], t[0], [384], *_f64(mean, rstd), t[2], t[3],
                                                       [True, affine, affine])
    # dx: x̂ recomputed in float32 as above (~4 ulp) times the row means (float64 sums), ~8 more
    # roundings of |dx|-sized terms; dw, db: float64 sums over 132 rows, rounded once.
    for ours, theirs, ulps, what in zip(grads, tgrads, (16, 2, 2), ("dx", "dw", "db")):
        assert (ours is None) == (theirs is None), what
        if ours is not None:
            _close(ours, theirs, ulps, what)


def test_attention_matches_torchs_fused_kernel():
    rng = np.random.default_rng(0)
    q, k, v, g = (rng.standard_normal((5, 3, 17, 8)).astype(np.float32) for _ in range(4))
    mask = np.zeros((5, 1, 1, 17), np.float32)
    mask[2, ..., 11:] = np.finfo(np.float32).min
    t = _f64(q, k, v, mask, g)
    out, lse = jit._attention(q, k, v, mask, 8 ** -0.5)
    tout, tlse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(*t[:3], 0.0, False, attn_mask=t[3],
                                                                           scale=8 ** -0.5)[:2]
    # Scores are float32 dot products of 8 terms (~8 ulp of Σ|q||k|, |q|,|k| ~ 3 → ~30 ulp of a
    # score of size ~1); they move each probability by as much relatively, and the output is a
    # 17-term float32 sum of p v: 64 ulp of max(|out|, 1).
    _close(out, tout, 64, "output")
    _close(lse, tlse, 64, "log-sum-exp")
    ours = jit._attention_backward(g, q, k, v, out, lse, mask, 8 ** -0.5)
    theirs = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        t[4], *t[:3], tout, tlse, 0.0, False, attn_mask=t[3], scale=8 ** -0.5)
    # Two more products of 8 and 17 terms after p: 4x the forward's bound.
    for a, b, what in zip(ours, theirs, ("dq", "dk", "dv")):
        _close(a, b, 256, what)


def test_odd_layouts_and_dtypes():
    x = _x(40, 70)
    for view in (x.T, x[::2, 1:], x[..., None][:, 3]):
        np.testing.assert_array_equal(jit._gelu(view, "none"), jit._gelu(np.ascontiguousarray(view), "none"))
    half = x.astype(np.float16)  # computed in float32, returned in float16 (as torch's CPU kernel)
    y = jit._gelu(half, "none")
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, jit._gelu(half.astype(np.float32), "none").astype(np.float16))
    assert jit._gelu(np.float32(1.5) * np.ones(()), "none").shape == ()
    assert jit._softmax(np.zeros((3, 0), np.float32), -1).shape == (3, 0)


def test_results_do_not_depend_on_the_thread_count():
    x = _x(64, 128, 384)
    saved = mg.get_num_threads()
    try:
        runs = []
        for n in (1, 2, 3):
            mg.set_num_threads(n)
            runs.append((jit._gelu(x, "none"), jit._softmax(x, -1), jit._layer_norm(x, None, None, 1, 1e-5)[0]))
    finally:
        mg.set_num_threads(saved)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)
    assert parallel.num_threads() == saved


def test_small_arrays_run_the_formulas_and_never_load_numba():
    """A program of small arrays only (a lesson's toy graph) never pays numba's start-up."""
    code = ("import sys, numpy as np, minigrad as mg\n"
            "from minigrad.backend import jit\n"
            "assert jit._gelu(np.ones(100, np.float32), 'none') is NotImplemented\n"
            "x = mg.tensor(np.linspace(-3, 3, 600, dtype=np.float32).reshape(2, 3, 10, 10), requires_grad=True)\n"
            "y = mg.nn.functional.layer_norm(mg.nn.functional.gelu(x), (10,)).softmax(-1)\n"
            "mg.nn.functional.scaled_dot_product_attention(y, y, y).sum().backward()\n"
            "assert 'numba' not in sys.modules, 'numba was loaded'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_numba_the_ops_run_their_formulas():
    """MINIGRAD_JIT=0 (as without numba): no compiled kernel, numba never imported, same results."""
    code = ("import sys, numpy as np, minigrad as mg\n"
            "from minigrad.backend import numpy_backend as nb\n"
            "assert nb.kernels.gelu is None and nb.kernels.attention is None, nb.kernels\n"
            "x = mg.tensor(np.linspace(-6, 6, 70_001, dtype=np.float32))\n"
            "y = mg.nn.functional.gelu(x).softmax(-1)\n"
            "assert 'numba' not in sys.modules\n"
            "np.save(sys.argv[1], y.numpy())\n")
    out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"jit-off-{os.getpid()}.npy")
    subprocess.run([sys.executable, "-c", code, out], check=True, env={**os.environ, "MINIGRAD_JIT": "0"})
    x = mg.tensor(np.linspace(-6, 6, 70_001, dtype=np.float32))
    _close(np.load(out), mg.nn.functional.gelu(x).softmax(-1).numpy(), 8, "jit off vs on")
    os.remove(out)
