"""``minigrad.nn.functional``: torch's functional API as thin wrappers over the ops.

Each function checks its arguments (shapes, ranges, ``reduction``), turns torch's arguments into the
op's (a negative ``dim`` into an axis, a target Tensor into its raw array) and calls one
``Function`` from ``minigrad.ops``: the math and the hand-derived backwards live there
(``ops/nn.py`` for the layers, ``ops/loss.py`` for the losses).
"""
from __future__ import annotations

import numpy as np

from ..ops.attention import ScaledDotProductAttention
from ..ops.elementwise import Gelu
from ..ops.loss import NLL, BCEWithLogits, BinaryCrossEntropy, CrossEntropy
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
    """Rows of ``weight`` picked by the integer ids in ``input`` (any shape).

    Ids still on the host (numpy, a list, a tensor on "cpu") are range-checked here, for free. Ids
    already on a torch device are left to torch's embedding kernel, which checks them itself (an
    IndexError on the CPU, a device-side assert on a GPU), as torch does: reading them back here
    would make every forward wait for the GPU.
    """
    if not isinstance(input, Tensor):
        input = np.asarray(input)
        _check_ids(input, weight.shape[0])
    ids = input if isinstance(input, Tensor) else Tensor(input, dtype="int64", device=weight.device)
    if ids.device != weight.device:
        raise RuntimeError(f"embedding: ids are on {ids.device!r} but the weight is on "
                           f"{weight.device!r}")
    if ids.device == "cpu" and input is ids:
        _check_ids(ids._data, weight.shape[0])
    return Embedding.apply(weight, ids._data, padding_idx)


def _check_ids(ids: np.ndarray, n: int) -> None:
    if ids.size:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= n:
            raise IndexError(f"embedding: id {hi if hi >= n else lo} is out of range for a table "
                             f"of {n} rows")


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


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None,
                                 dropout_p: float = 0.0, is_causal: bool = False,
                                 scale: float | None = None) -> Tensor:
    """softmax(q kᵀ · scale + mask) v, scale = 1/sqrt(head dim), composed from the fused ops.

    As torch's: a bool ``attn_mask`` is True where attention is allowed, a float one is added to
    the scores; ``is_causal`` lets position i see positions ≤ i only (masked scores are -inf, so a
    fully masked row gives NaN, as in torch). ``dropout_p`` applies whenever it is non-zero (pass 0
    in eval, as nanoGPT does). For 4-d inputs with no causal flag and no mask or a float mask that
    needs no gradient, it is one fused op (``ops.attention``) on the backend's kernel, which never
    stores the [.., T, T] probabilities: on torch:cpu without dropout, on numpy with numba also with
    it (the dropout mask drawn as ``dropout`` draws it, from the same generator).
    """
    if is_causal and attn_mask is not None:
        raise ValueError("scaled_dot_product_attention: give attn_mask or is_causal, not both")
    if not 0.0 <= dropout_p <= 1.0:  # checked here, as the fused op below never reaches dropout()
        raise ValueError(f"scaled_dot_product_attention: dropout_p must be in [0, 1], got {dropout_p}")
    scale = scale if scale is not None else query.shape[-1] ** -0.5
    fused = query._xp.kernels.attention_on
    if (fused is not None and query.ndim == 4 and fused(query._data, dropout_p > 0) and dropout_p < 1.0
            and not is_causal and query.dtype == key.dtype == value.dtype
            and (attn_mask is None or (attn_mask.dtype == query.dtype and not attn_mask.requires_grad))):
        return ScaledDotProductAttention.apply(query, key, value, None if attn_mask is None else attn_mask._data,
                                               scale, dropout_p, default_generator(query.device) if dropout_p else None)
    scores = (query @ key.transpose(-2, -1)) * scale
    if is_causal:
        n, m = scores.shape[-2:]
        attn_mask = Tensor(np.tril(np.ones((n, m), dtype=bool)), device=query.device)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == bool else scores + attn_mask
    return dropout(scores.softmax(-1), dropout_p) @ value


def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """int64 [..., C] with a 1 at each id (C = max id + 1 unless given), as torch's."""
    if tensor.dtype.kind not in "iu":
        raise TypeError(f"one_hot: expects integer class ids, got dtype {tensor.dtype}")
    ids = tensor.numpy()
    n = int(ids.max()) + 1 if num_classes == -1 else num_classes
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        raise RuntimeError(f"one_hot: class values must be in [0, {n}), got {ids.min()}..{ids.max()}")
    return Tensor(np.eye(n, dtype=np.int64)[ids], device=tensor.device)


def _check(reduction, a: Tensor, b: Tensor, name: str):
    _check_reduction(reduction, name)
    if a.shape != b.shape:
        raise ValueError(f"{name}: input shape {a.shape} and target shape {b.shape} differ")


def _check_reduction(reduction, name: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _raw(t: Tensor | None, like: Tensor, name: str):
    """A weight/target Tensor's raw array on ``like``'s device (None stays None)."""
    if t is None:
        return None
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(t).__name__}")
    if t.device != like.device:
        raise RuntimeError(f"{name} is on {t.device!r} but the input is on {like.device!r}")
    return t._data


def binary_cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                         reduction: str = "mean") -> Tensor:
    """-w [y log x + (1 - y) log(1 - x)] on probabilities x (each log clamped at -100, as torch)."""
    _check(reduction, input, target, "binary_cross_entropy")
    return BinaryCrossEntropy.apply(input, _raw(target, input, "target"),
                                    _raw(weight, input, "weight"), reduction)


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, weight: Tensor | None = None,
                                     reduction: str = "mean", pos_weight: Tensor | None = None) -> Tensor:
    """BCE of σ(input), computed from the logits without overflow; ``pos_weight`` weighs the positive
    term per class (broadcast over the last dim), as torch's."""
    _check(reduction, input, target, "binary_cross_entropy_with_logits")
    # Passed only when set, so the op keeps its plain signature (the course's tasks implement it).
    extra = {} if pos_weight is None else {"pos_weight": _raw(pos_weight, input, "pos_weight")}
    return BCEWithLogits.apply(input, _raw(target, input, "target"), _raw(weight, input, "weight"),
                               reduction, **extra)


def _class_targets(input: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int, name: str):
    """Checks shared by cross_entropy and nll_loss: [N, C] scores, [N] integer ids, a [C] weight."""
    if input.ndim != 2 or target.ndim != 1 or target.shape[0] != input.shape[0]:
        raise ValueError(f"{name}: expected input [N, C] and targets [N], got {input.shape} and "
                         f"{target.shape}")
    if target.dtype.kind not in "iu":
        raise TypeError(f"{name}: targets must be integer class ids, got dtype {target.dtype}")
    if weight is not None and weight.shape != (input.shape[1],):
        raise ValueError(f"{name}: weight must have shape ({input.shape[1]},), one per class, got "
                         f"{weight.shape}")
    t = _raw(target, input, "target")
    # An id out of range would index another row's class silently or crash later. Checked where the
    # ids are on the host; on a torch device the gather in the op checks them (an error on the CPU,
    # a device-side assert on a GPU, as torch's own loss), since reading them back would stall a GPU.
    if target.numel() and target.device == "cpu":
        ids = target.numpy()
        bad = ids[(ids != ignore_index) & ((ids < 0) | (ids >= input.shape[1]))]
        if bad.size:
            raise IndexError(f"{name}: target {int(bad[0])} is out of bounds for {input.shape[1]} "
                             f"classes (and is not ignore_index={ignore_index})")
    return t, _raw(weight, input, "weight")


def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None, *,
                  ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of logits ``input`` [N, C] against class ids ``target`` [N], fused with the
    log-softmax; torch's ``weight`` (per class), ``ignore_index``, ``reduction`` and
    ``label_smoothing`` (the formula is in ``ops.loss.CrossEntropy``)."""
    _check_reduction(reduction, "cross_entropy")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    t, w = _class_targets(input, target, weight, ignore_index, "cross_entropy")
    # Passed only when set, so the op keeps its plain signature (the course's tasks implement it).
    extra = {} if w is None else {"weight": w}
    if label_smoothing:
        extra["label_smoothing"] = label_smoothing
    return CrossEntropy.apply(input, t, ignore_index, reduction, **extra)


def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None = None, *,
             ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """-input[n, target_n] (weighted): the loss on log-probabilities, as after ``log_softmax``."""
    _check_reduction(reduction, "nll_loss")
    t, w = _class_targets(input, target, weight, ignore_index, "nll_loss")
    return NLL.apply(input, t, ignore_index, reduction, weight=w)


def _reduced(loss: Tensor, reduction: str) -> Tensor:
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """L = mean (x - y)²: composed from primitive ops, whose gradients the engine chains."""
    _check(reduction, input, target, "mse_loss")
    d = input - target
    return _reduced(d * d, reduction)


def l1_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """L = mean |x - y| (composed; the gradient at x = y is 0, as torch's sign(0))."""
    _check(reduction, input, target, "l1_loss")
    return _reduced((input - target).abs(), reduction)
