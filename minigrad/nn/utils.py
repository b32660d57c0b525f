"""Gradient utilities."""
from __future__ import annotations

import math
from typing import Iterable

from ..tensor import Tensor


def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float,
                    norm_type: float = 2.0) -> float:
    """Scale all gradients together so that their global L2 norm is at most ``max_norm``.

    total = sqrt(Σ_p ||g_p||²); if total > max_norm every g is multiplied by max_norm/(total + 1e-6)
    (torch's formula, including its epsilon). Returns the norm before clipping.
    """
    if norm_type != 2.0:
        raise NotImplementedError("clip_grad_norm_ implements the L2 norm only")
    if isinstance(parameters, Tensor):  # one tensor, as torch accepts (iterating it would give rows)
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    # One host sync for the whole norm, not one per tensor (it matters on a GPU).
    total = math.sqrt(float(sum(g._xp.sum(g._data * g._data) for g in grads)))
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g in grads:  # rebinding, not in place: a .grad may share memory with another's
            g._data = g._data * coef
    return total
