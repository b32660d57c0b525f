"""Parameter initialisers (in place, outside the graph), with torch's formulas."""
from __future__ import annotations

import math

import numpy as np

from ..autograd import no_grad
from ..random import default_generator
from ..tensor import Tensor


def _fill(t: Tensor, host: np.ndarray) -> Tensor:
    # In place, as torch's initialisers: views of t (t.data) see the new values, its version moves.
    with no_grad():
        return t.copy_(host)


def _rng():
    # Initialisation draws on the host generator whatever the device, so a model initialises to
    # the same numbers on every backend.
    return default_generator("cpu")


def normal_(t: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    return _fill(t, _rng().normal(mean, std, t.shape))


def uniform_(t: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
    return _fill(t, _rng().uniform(a, b, t.shape))


def zeros_(t: Tensor) -> Tensor:
    return _fill(t, np.zeros(t.shape))


def ones_(t: Tensor) -> Tensor:
    return _fill(t, np.ones(t.shape))


def kaiming_uniform_(t: Tensor, a: float = 0.0) -> Tensor:
    """U(-bound, bound), bound = gain·sqrt(3 / fan_in), gain = sqrt(2 / (1 + a²)) (leaky-relu)."""
    fan_in = _fans(t)[0] if t.ndim > 1 else t.shape[0]
    bound = math.sqrt(2.0 / (1 + a * a)) * math.sqrt(3.0 / fan_in)
    return uniform_(t, -bound, bound)


def constant_(t: Tensor, val: float) -> Tensor:
    return _fill(t, np.full(t.shape, val))


def _fans(t: Tensor) -> tuple[int, int]:
    """torch's fan_in, fan_out: dims 1 and 0 times the receptive field (the dims after them)."""
    if t.ndim < 2:
        raise ValueError(f"fan in and fan out need a tensor with at least 2 dims, got shape {t.shape}")
    field = int(np.prod(t.shape[2:]))
    return t.shape[1] * field, t.shape[0] * field


def xavier_uniform_(t: Tensor, gain: float = 1.0) -> Tensor:
    """U(-a, a), a = gain·sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio)."""
    fan_in, fan_out = _fans(t)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -bound, bound)


def xavier_normal_(t: Tensor, gain: float = 1.0) -> Tensor:
    """N(0, std²), std = gain·sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(t)
    return normal_(t, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))
