"""Stochastic gradient descent with momentum and (coupled) weight decay, torch's formulas."""
from __future__ import annotations

from .optimizer import Optimizer, check_hyperparameters


class SGD(Optimizer):
    """g ← g + λθ;  b ← μb + (1 - τ)g (b = g on the first step);  g ← g + μb (Nesterov) or b;
    θ ← θ - lr·g."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, foreach=None, fused=None):
        # foreach/fused choose torch's kernels, not the math: accepted and unused.
        check_hyperparameters(lr, weight_decay=weight_decay, momentum=momentum)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _update(self, p, grad, state, group):
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * p._data
        mu = group["momentum"]
        if mu:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = p._xp.copy(grad)
            else:
                buf *= mu
                buf += (1 - group["dampening"]) * grad
            grad = grad + mu * buf if group["nesterov"] else buf
        p._data -= group["lr"] * grad
