"""Assignment 2: the seed article's §4.2 — binary cross-entropy, naive and fused; softmax; cross-entropy
(lessons 3-4).

The fused losses are single Functions with a hand-derived backward: the point of §4.2 is that the
chain rule's σ'(z) cancels the naive gradient's denominator, so the fused gradient is σ(z) − y and
never divides by anything. The checks include saturated logits (|z| ~ 100) where that matters.
"""
from __future__ import annotations

import numpy as np

from .. import checks as C
from ..framework import Assignment, Task

LOSS = "minigrad/ops/loss.py"
NN = "minigrad/ops/nn.py"
LESSON3 = "lessons/03_bce_derivation.py"


def _targets_weights(rng, shape):
    y = rng.integers(0, 2, shape).astype(np.float64)
    w = rng.uniform(0.5, 2.0, shape)
    return y, w


def check_bce(rng):
    shape = C.rand_shape(rng, 2)
    p = rng.uniform(0.02, 0.98, shape)
    y, w = _targets_weights(rng, shape)
    for red in ("mean", "sum", "none"):
        C.both(f"BinaryCrossEntropy.backward (reduction={red})",
               lambda ns, p, y: ns.F.binary_cross_entropy(p, y, reduction=red),
               [C.Arg(p, "p"), C.Arg(y, "y", grad=False)], rng,
               "dL/dp = (p - y) / (p (1 - p)), times the reduction's 1/N")
    C.both("BinaryCrossEntropy.backward (with weight)",
           lambda ns, p, y, w: ns.F.binary_cross_entropy(p, y, weight=w),
           [C.Arg(p, "p"), C.Arg(y, "y", grad=False), C.Arg(w, "weight", grad=False)], rng,
           "each element's gradient is scaled by its weight")
    # Saturated probabilities: torch divides by max(p (1 - p), 1e-12) rather than by 0.
    edge = np.array([0.0, 1.0, 0.0, 1.0, 0.5])
    C.compare("BinaryCrossEntropy.backward (p exactly 0 or 1)",
              lambda ns, p, y: ns.F.binary_cross_entropy(p, y, reduction="sum"),
              [C.Arg(edge, "p"), C.Arg(np.array([0.0, 1.0, 1.0, 0.0, 1.0]), "y", grad=False)], rng,
              hint="guard the denominator with max(p (1 - p), 1e-12), as torch does")


def _logits(rng, shape, scale=3.0):
    z = C.values(rng, shape) * scale
    z.flat[0], z.flat[-1] = 100.0, -100.0  # σ(z) saturates in float32: the stable forms must hold
    return z


def check_bce_logits_forward(rng):
    shape = C.rand_shape(rng, 2, 2, 5)
    z = _logits(rng, shape)
    y, w = _targets_weights(rng, shape)
    for red in ("none", "mean", "sum"):
        for dtype in ("float64", "float32"):
            C.compare(f"BCEWithLogits.forward (reduction={red})",
                      lambda ns, z, y: ns.F.binary_cross_entropy_with_logits(z, y, reduction=red),
                      [C.Arg(z, "z"), C.Arg(y, "y", grad=False)], rng, dtype=dtype, backward=False,
                      hint="max(z, 0) - z y + log(1 + e^(-|z|)): never exponentiate a positive number")
    C.compare("BCEWithLogits.forward (with weight)",
              lambda ns, z, y, w: ns.F.binary_cross_entropy_with_logits(z, y, weight=w),
              [C.Arg(z, "z"), C.Arg(y, "y", grad=False), C.Arg(w, "weight", grad=False)], rng,
              backward=False)


def check_bce_logits_backward(rng):
    shape = C.rand_shape(rng, 2, 2, 5)
    z = _logits(rng, shape)
    y, w = _targets_weights(rng, shape)
    for red in ("mean", "sum", "none"):
        for dtype in ("float64", "float32"):
            C.compare(f"BCEWithLogits.backward (reduction={red})",
                      lambda ns, z, y: ns.F.binary_cross_entropy_with_logits(z, y, reduction=red),
                      [C.Arg(z, "z"), C.Arg(y, "y", grad=False)], rng, dtype=dtype,
                      hint="derive dL/dz for ŷ = σ(z): σ'(z) cancels the denominator")
    C.both("BCEWithLogits.backward (with weight)",
           lambda ns, z, y, w: ns.F.binary_cross_entropy_with_logits(z, y, weight=w),
           [C.Arg(z / 50, "z"), C.Arg(y, "y", grad=False), C.Arg(w, "weight", grad=False)], rng)


def _rows(rng, big=False):
    x = C.values(rng, C.rand_shape(rng, 3, 2, 5)) * 3
    if big:
        x = x + 1000.0 * rng.choice([-1.0, 1.0])  # e^1000 overflows: subtract the max first
    return x


def check_softmax_forward(rng):
    for big in (False, True):
        x = _rows(rng, big)
        for dim in (-1, int(rng.integers(0, 3))):
            for dtype in ("float64", "float32"):
                C.compare(f"Softmax.forward (dim={dim}{', logits near ±1000' if big else ''})",
                          lambda ns, a, d=dim: ns.F.softmax(a, dim=d), [C.Arg(x, "x")], rng,
                          dtype=dtype, backward=False,
                          hint="subtract the max along the dim before exp, so nothing overflows")


def check_softmax_backward(rng):
    x = _rows(rng)
    for dim in (-1, int(rng.integers(0, 3))):
        C.both(f"Softmax.backward (dim={dim})", lambda ns, a, d=dim: ns.F.softmax(a, dim=d),
               [C.Arg(x, "x")], rng, "vjp = s ⊙ (g - Σ_j g_j s_j) along the dim")


def check_log_softmax(rng):
    for big in (False, True):
        x = _rows(rng, big)
        for dim in (-1, int(rng.integers(0, 3))):
            C.compare(f"LogSoftmax (dim={dim}{', logits near ±1000' if big else ''})",
                      lambda ns, a, d=dim: ns.F.log_softmax(a, dim=d), [C.Arg(x, "x")], rng,
                      dtype="float32", hint="x - max - log Σ e^(x - max); vjp = g - softmax · Σ g")
    C.both("LogSoftmax.backward", lambda ns, a: ns.F.log_softmax(a, dim=-1), [C.Arg(_rows(rng), "x")],
           rng)


def _ce_case(rng):
    n, c = (int(v) for v in rng.integers(3, 7, 2))
    z = C.values(rng, (n, c)) * 3
    z[0] += 500.0  # one row of huge logits
    t = rng.integers(0, c, n)
    t[1] = -100  # ignored: adds nothing, is not counted in the mean
    return z, t


def check_cross_entropy_forward(rng):
    z, t = _ce_case(rng)
    for red in ("mean", "sum", "none"):
        for dtype in ("float64", "float32"):
            C.compare(f"CrossEntropy.forward (reduction={red})",
                      lambda ns, z, t: ns.F.cross_entropy(z, t, reduction=red),
                      [C.Arg(z, "logits"), C.Arg(t, "target", grad=False)], rng, dtype=dtype,
                      backward=False, hint="-log_softmax(z)[t]; rows with target -100 count as 0 "
                      "and are left out of the mean")


def check_cross_entropy_backward(rng):
    z, t = _ce_case(rng)
    for red in ("mean", "sum", "none"):
        C.compare(f"CrossEntropy.backward (reduction={red})",
                  lambda ns, z, t: ns.F.cross_entropy(z, t, reduction=red),
                  [C.Arg(z, "logits"), C.Arg(t, "target", grad=False)], rng, dtype="float32",
                  hint="softmax(z) - onehot(t), 0 on ignored rows, / the number of counted rows")
    z[0] -= 500.0
    C.both("CrossEntropy.backward", lambda ns, z, t: ns.F.cross_entropy(z, t),
           [C.Arg(z, "logits"), C.Arg(t, "target", grad=False)], rng)


def check_lesson3(rng):
    """The lesson checks grad_simple against the article's formula, minigrad and torch itself."""
    C.run_lesson(LESSON3)


ASSIGNMENT = Assignment("a2", "Binary cross-entropy, softmax and cross-entropy (the article's §4.2)", [
    Task("a2.bce", "BCE on probabilities: backward (the naive form)", 3,
         [f"{LOSS}:BinaryCrossEntropy.backward"],
         "dL/dp = (p - y) / max(p (1 - p), 1e-12), times weight and the reduction's 1/N", check_bce),
    Task("a2.bce_logits_forward", "BCE with logits: a forward that never overflows", 3,
         [f"{LOSS}:BCEWithLogits.forward"],
         "max(z, 0) - z y + log(1 + e^(-|z|)); save what backward needs; reduce", check_bce_logits_forward),
    Task("a2.bce_logits_backward", "BCE with logits: the fused backward (§4.2)", 4,
         [f"{LOSS}:BCEWithLogits.backward"],
         "lesson 3's dL/dz (σ'(z) cancels the denominator), times weight and the reduction's 1/N",
         check_bce_logits_backward),
    Task("a2.softmax_forward", "Softmax forward, stable", 2, [f"{NN}:Softmax.forward"],
         "subtract the max along the axis, exp, normalise; save the output", check_softmax_forward),
    Task("a2.softmax_backward", "Softmax backward", 3, [f"{NN}:Softmax.backward"],
         "vjp of the Jacobian s_i (δ_ij - s_j)", check_softmax_backward),
    Task("a2.log_softmax", "LogSoftmax forward and backward", 3,
         [f"{NN}:LogSoftmax.forward", f"{NN}:LogSoftmax.backward"],
         "x - max - log Σ e^(x - max); vjp = g - e^y Σ g", check_log_softmax),
    Task("a2.cross_entropy_forward", "Cross-entropy forward (ignore_index, reductions)", 3,
         [f"{LOSS}:CrossEntropy.forward"],
         "log-softmax per row, pick the target, skip ignore_index rows in sum and count",
         check_cross_entropy_forward),
    Task("a2.cross_entropy_backward", "Cross-entropy backward", 3, [f"{LOSS}:CrossEntropy.backward"],
         "softmax - onehot(target), zero on ignored rows, scaled by the reduction",
         check_cross_entropy_backward),
    Task("a2.lesson3_logreg", "Lesson 3: the simplified logistic-regression gradient", 2,
         [f"{LESSON3}#a2-logreg-grad"],
         "grad_simple = ∂L/∂w written as (σ(z) − y)/N times the features (numpy, one line)",
         check_lesson3),
])
