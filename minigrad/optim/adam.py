"""Adam and AdamW, with torch's exact update order (bias corrections folded as torch folds them)."""
from __future__ import annotations

import math

from .optimizer import Optimizer, check_hyperparameters


class Adam(Optimizer):
    """t ← t + 1;  g ← g + λθ (Adam's coupled L2; AdamW instead decays θ ← θ(1 - lr·λ));
    m ← β₁m + (1 - β₁)g;  v ← β₂v + (1 - β₂)g²;
    θ ← θ - lr/(1 - β₁ᵗ) · m / (sqrt(v)/sqrt(1 - β₂ᵗ) + ε)."""

    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, foreach=None, fused=None):
        # foreach/fused choose torch's kernels, not the math: accepted (nanoGPT passes fused=) and unused.
        check_hyperparameters(lr, eps, betas, weight_decay)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def _update(self, p, grad, state, group):
        xp, lr, wd = p._xp, group["lr"], group["weight_decay"]
        b1, b2 = group["betas"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros(p.shape, p.dtype, p.device)
            state["exp_avg_sq"] = xp.zeros(p.shape, p.dtype, p.device)
        state["step"] += 1
        t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
        if wd and self.decoupled:
            p._data *= 1 - lr * wd
        elif wd:
            grad = grad + wd * p._data
        m *= b1
        m += (1 - b1) * grad
        v *= b2
        v += (1 - b2) * grad * grad
        denom = xp.sqrt(v) / math.sqrt(1 - b2 ** t) + group["eps"]
        p._data -= (lr / (1 - b1 ** t)) * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): θ ← θ(1 - lr·λ) before the step."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, *, foreach=None, fused=None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
