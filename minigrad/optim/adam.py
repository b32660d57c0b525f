"""Adam and AdamW, with torch's exact update order (bias corrections folded as torch folds them)."""
from __future__ import annotations

from .multi_tensor import FlatState, adam_numpy, adam_torch
from .optimizer import Optimizer, check_hyperparameters


class Adam(Optimizer):
    """t ← t + 1;  g ← g + λθ (Adam's coupled L2; AdamW instead decays θ ← θ(1 - lr·λ));
    m ← β₁m + (1 - β₁)g;  v ← β₂v + (1 - β₂)g²;
    θ ← θ - lr/(1 - β₁ᵗ) · m / (sqrt(v)/sqrt(1 - β₂ᵗ) + ε).

    The update runs for a whole group of parameters at once (``multi_tensor.py``): torch's
    ``_foreach`` kernels on the torch backend, one formula over flat buffers on every core on numpy.
    ``foreach=False`` updates one parameter at a time, as torch's single-tensor path (same math);
    ``fused`` is accepted for torch compatibility (nanoGPT passes it) and means the grouped path.
    """

    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, foreach: bool | None = None, fused: bool | None = None):
        check_hyperparameters(lr, eps, betas, weight_decay)
        if foreach and fused:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")  # torch's message
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self.grouped = foreach is not False
        self._flat: dict[tuple, FlatState] = {}  # numpy moment buffers, per (group, dtype)

    def _step_group(self, index: int, group: dict, params: list) -> None:
        kinds: dict[tuple, list] = {}  # one grouped update per backend, device and dtype
        for p in params:
            kinds.setdefault((p.device, p.dtype), []).append(p)
        for kind, ps in kinds.items():
            for chunk in [ps] if self.grouped else [[p] for p in ps]:
                self._adam(index, kind, group, chunk)

    def _adam(self, index: int, kind: tuple, group: dict, params: list) -> None:
        states = [self._state_for(p) for p in params]
        for p, s in zip(params, states):
            if not s:
                s["step"] = 0
                s["exp_avg"] = p._xp.zeros(p.shape, p.dtype, p.device)
                s["exp_avg_sq"] = p._xp.zeros(p.shape, p.dtype, p.device)
            s["step"] += 1
        steps = [s["step"] for s in states]
        grads = [p.grad._data for p in params]
        if p.device != "cpu":
            adam_torch([p._data for p in params], grads, [s["exp_avg"] for s in states],
                       [s["exp_avg_sq"] for s in states], steps, group, self.decoupled)
            return
        key = (index, kind, len(params) == 1 and id(params[0]))
        flat = self._flat.get(key)
        if flat is None or not flat.fits(params, states):
            flat = self._flat[key] = FlatState(params, states)
        adam_numpy(flat, params, grads, steps, group, self.decoupled, params[0]._xp.kernels.blocks)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): θ ← θ(1 - lr·λ) before the step."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, *, foreach: bool | None = None, fused: bool | None = None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         foreach=foreach, fused=fused)
