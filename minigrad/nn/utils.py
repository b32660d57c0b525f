"""Gradient utilities: clipping (by global norm or by value) and zeroing, with torch's semantics."""
from __future__ import annotations

import functools
import math
from typing import Iterable

from ..autograd import no_grad
from ..tensor import Tensor


def _grads(parameters: Tensor | Iterable[Tensor]) -> list[Tensor]:
    if isinstance(parameters, Tensor):  # one tensor, as torch accepts (iterating it would give rows)
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def zero_grads_(parameters: Iterable[Tensor], set_to_none: bool = True) -> None:
    """``Module.zero_grad`` and ``Optimizer.zero_grad``: drop each ``.grad`` (torch's default) or,
    with ``set_to_none=False``, zero it in place."""
    for p in parameters:
        if set_to_none or p.grad is None:
            p.grad = None
        else:
            p.grad.zero_()


def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False, foreach=None) -> Tensor:
    """Scale all gradients together so that their global norm is at most ``max_norm``.

    total = (Σ_p Σ_i |g_pi|^q)^(1/q) for ``norm_type`` q (max_i |g_pi| for q = inf); every g is then
    multiplied in place by min(1, max_norm / (total + 1e-6)) (torch's formula and epsilon).
    Returns the total norm before clipping as a 0-d Tensor, as torch does. Like torch's, it never
    reads the norm back to the host (so a GPU never waits here) unless ``error_if_nonfinite`` asks
    for the check; ``foreach`` is accepted for torch's signature and ignored.
    """
    grads = _grads(parameters)
    if not grads:
        return Tensor(0.0)
    q = float(norm_type)
    if q <= 0:
        raise ValueError(f"clip_grad_norm_: norm_type must be positive, got {norm_type}")
    xp = grads[0]._xp
    if q == math.inf:
        total = functools.reduce(xp.maximum, [xp.amax(xp.abs(g._data)) for g in grads])
    elif q == 2.0:
        total = sum(xp.sum(g._data * g._data) for g in grads) ** 0.5
    else:
        total = sum(xp.sum(xp.abs(g._data) ** q) for g in grads) ** (1.0 / q)
    total_norm = Tensor(total)
    if error_if_nonfinite and not math.isfinite(float(total)):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is "
                           "non-finite, so it cannot be clipped. To disable this error and scale the "
                           "gradients by the non-finite norm anyway, set `error_if_nonfinite=False`")
    # min(coef, 1) on the device (NaN stays NaN, as torch's clamp): every gradient is multiplied,
    # by 1 when the norm is within bounds, rather than branching on a value read from the device.
    coef = Tensor(xp.minimum(max_norm / (total + 1e-6), 1.0))
    with no_grad():
        for g in grads:
            g.mul_(coef)
    return total_norm


def clip_grad_value_(parameters: Tensor | Iterable[Tensor], clip_value: float, foreach=None) -> None:
    """Clamp every gradient element into [-clip_value, clip_value], in place."""
    with no_grad():
        for g in _grads(parameters):
            g.clamp_(-float(clip_value), float(clip_value))
