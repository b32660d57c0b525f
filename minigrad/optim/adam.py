"""Adam and AdamW, with torch's exact update order (bias corrections folded as torch folds them)."""
from __future__ import annotations

import math

from .multi_tensor import FlatState, adam_numpy, adam_torch
from .optimizer import Optimizer, check_hyperparameters


class Adam(Optimizer):
    """t ← t + 1;  g ← g + λθ (Adam's coupled L2; AdamW instead decays θ ← θ(1 - lr·λ));
    m ← β₁m + (1 - β₁)g;  v ← β₂v + (1 - β₂)g²;
    θ ← θ - lr/(1 - β₁ᵗ) · m / (sqrt(v)/sqrt(1 - β₂ᵗ) + ε).

    ``_update`` is that formula for one parameter. By default (``foreach`` None or True, or
    ``fused``) a whole group is updated at once (``multi_tensor.py``): on numpy the same ``_update``
    runs over flat buffers of the group's moments, in cache-sized blocks on every core; on the torch
    backend torch's ``_foreach`` kernels compute it. ``foreach=False`` updates one tensor at a time.
    """

    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, foreach: bool | None = None, fused: bool | None = None):
        check_hyperparameters(lr, eps, betas, weight_decay)
        if foreach and fused:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")  # torch's message
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self.grouped = foreach is not False
        self._flat: dict[tuple, FlatState] = {}  # numpy moment buffers, per (group, device, dtype)

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

    def _step_group(self, index: int, group: dict, params: list) -> None:
        if not self.grouped:
            return super()._step_group(index, group, params)
        kinds: dict[tuple, list] = {}  # one grouped update per device and dtype
        for p in params:
            kinds.setdefault((p.device, p.dtype), []).append(p)
        for kind, ps in kinds.items():
            states = [self._state_for(p) for p in ps]
            for p, s in zip(ps, states):
                if not s:
                    s["step"] = 0
                    s["exp_avg"] = p._xp.zeros(p.shape, p.dtype, p.device)
                    s["exp_avg_sq"] = p._xp.zeros(p.shape, p.dtype, p.device)
                s["step"] += 1
            steps, grads = [s["step"] for s in states], [p.grad._data for p in ps]
            if kind[0] != "cpu":
                adam_torch([p._data for p in ps], grads, [s["exp_avg"] for s in states],
                           [s["exp_avg_sq"] for s in states], steps, group, self.decoupled)
                continue
            flat = self._flat.get((index, kind))
            if flat is None or not flat.fits(ps, states):
                flat = self._flat[(index, kind)] = FlatState(ps, states)
            adam_numpy(self._update, flat, ps, grads, steps, group, self.decoupled, ps[0]._xp)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): θ ← θ(1 - lr·λ) before the step."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, *, foreach: bool | None = None, fused: bool | None = None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         foreach=foreach, fused=fused)
