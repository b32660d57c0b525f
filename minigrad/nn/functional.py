"""``minigrad.nn.functional``: torch's functional API as thin wrappers over the ops.

Each function checks its arguments (shapes, ranges, ``reduction``), turns torch's arguments into the
op's (a negative ``dim`` into an axis, a target Tensor into its raw array) and calls one
``Function`` from ``minigrad.ops``: the math and the hand-derived backwards live there
(``ops/nn.py`` for the layers, ``ops/loss.py`` for the losses).
"""
from __future__ import annotations

from ..ops.elementwise import Gelu
from ..ops.loss import BCEWithLogits, BinaryCrossEntropy, CrossEntropy
from ..ops.nn import Dropout, Embedding, LayerNorm, Linear
from ..random import default_generator
from ..tensor import Tensor

_REDUCTIONS = ("mean", "sum", "none")


def softmax(input: Tensor, dim: int) -> Tensor:
    """e^x / Σ e^x along ``dim`` (the fused ``ops.nn.Softmax``, shared with ``Tensor.softmax``)."""
    return input.softmax(dim)


def log_softmax(input: Tensor, dim: int) -> Tensor:
    """x - log Σ e^x along ``dim`` (the fused ``ops.nn.LogSoftmax``)."""
    return input.log_softmax(dim)


def layer_norm(x: Tensor, normalized_shape, weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if x.shape[max(x.ndim - len(shape), 0):] != shape:
        raise ValueError(f"layer_norm: normalized_shape {shape} is not the trailing shape of the "
                         f"input {x.shape}")
    return LayerNorm.apply(x, weight, bias, len(shape), eps)


def dropout(x: Tensor, p: float = 0.5, training: bool = True, generator=None) -> Tensor:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    return Dropout.apply(x, p, generator or default_generator(x.device))


def embedding(input, weight: Tensor, padding_idx: int | None = None) -> Tensor:
    """Rows of ``weight`` picked by the integer ids in ``input`` (any shape)."""
    ids = input if isinstance(input, Tensor) else Tensor(input, dtype="int64", device=weight.device)
    if ids.device != weight.device:
        raise RuntimeError(f"embedding: ids are on {ids.device!r} but the weight is on "
                           f"{weight.device!r}")
    n = weight.shape[0]
    if ids.numel():
        lo, hi = int(ids._data.min()), int(ids._data.max())
        if lo < 0 or hi >= n:
            raise IndexError(f"embedding: id {hi if hi >= n else lo} is out of range for a table "
                             f"of {n} rows")
    return Embedding.apply(weight, ids._data, padding_idx)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    return Linear.apply(x, weight, bias)


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    return Gelu.apply(x, approximate=approximate)


def relu(x: Tensor) -> Tensor:
    return x.relu()


def tanh(x: Tensor) -> Tensor:
    return x.tanh()


def sigmoid(x: Tensor) -> Tensor:
    return x.sigmoid()


def _check(reduction, a: Tensor, b: Tensor, name: str):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if a.shape != b.shape:
        raise ValueError(f"{name}: input shape {a.shape} and target shape {b.shape} differ")


def binary_cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                         reduction: str = "mean") -> Tensor:
    _check(reduction, input, target, "binary_cross_entropy")
    return BinaryCrossEntropy.apply(input, target._data, None if weight is None else weight._data,
                                    reduction)


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, weight: Tensor | None = None,
                                     reduction: str = "mean") -> Tensor:
    _check(reduction, input, target, "binary_cross_entropy_with_logits")
    return BCEWithLogits.apply(input, target._data, None if weight is None else weight._data,
                               reduction)


def cross_entropy(input: Tensor, target: Tensor, ignore_index: int = -100,
                  reduction: str = "mean") -> Tensor:
    """Cross-entropy of logits ``input`` [N, C] against class ids ``target`` [N] (fused)."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"cross_entropy: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if input.ndim != 2 or target.ndim != 1 or target.shape[0] != input.shape[0]:
        raise ValueError(f"cross_entropy: expected logits [N, C] and targets [N], got "
                         f"{input.shape} and {target.shape}")
    t = target._data
    return CrossEntropy.apply(input, t, ignore_index, reduction)


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """L = mean (x - y)²: composed from primitive ops, whose gradients the engine chains."""
    _check(reduction, input, target, "mse_loss")
    d = input - target
    sq = d * d
    return sq.mean() if reduction == "mean" else sq.sum() if reduction == "sum" else sq
