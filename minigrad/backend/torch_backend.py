"""The torch backend: the same flat functions as ``numpy_backend``, on torch tensors (CPU or CUDA).

torch is used purely as an array library: minigrad keeps its own graph and never creates a torch
tensor that requires grad, so torch's autograd records nothing. dtypes are spoken as
numpy dtypes on both backends, so ``Tensor.dtype`` is the same object whichever backend computes.
"""
from __future__ import annotations

import numpy as np
import torch

from .kernels import Kernels

_TO_TORCH = {np.dtype("float32"): torch.float32, np.dtype("float64"): torch.float64,
             np.dtype("int64"): torch.int64, np.dtype("bool"): torch.bool,
             np.dtype("float16"): torch.float16}
_TO_NUMPY = {v: k for k, v in _TO_TORCH.items()}


def check_device(name: str) -> str:
    """Canonical device string for 'cpu' / 'cuda' / 'cuda:N', or a clear error without a GPU."""
    if name == "cpu":
        return "torch:cpu"
    if not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but torch sees no CUDA GPU on this machine")
    index = int(name.split(":")[1]) if ":" in name else 0
    if index >= torch.cuda.device_count():
        raise RuntimeError(f"device {name!r} asked for, but only {torch.cuda.device_count()} "
                           "CUDA device(s) exist")
    return f"cuda:{index}"


def _dev(device):
    if device is None or device == "torch:cpu":
        return "cpu"
    return device


def _td(dtype):
    return _TO_TORCH[np.dtype(dtype)] if dtype is not None else None


# ---- creation and conversion ------------------------------------------------------------------
def array(data, dtype=None, device=None):
    """A new tensor (always a copy) on ``device``."""
    if isinstance(data, torch.Tensor):
        return data.to(device=_dev(device), dtype=_td(dtype) or data.dtype, copy=True)
    arr = np.array(data, dtype=dtype)
    return torch.from_numpy(arr).to(_dev(device))


def to_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def dtype_of(x) -> np.dtype:
    return _TO_NUMPY[x.dtype]


def astype(x, dtype):
    return x.to(_td(dtype))


def zeros(shape, dtype, device=None):
    return torch.zeros(shape, dtype=_td(dtype), device=_dev(device))


def ones(shape, dtype, device=None):
    return torch.ones(shape, dtype=_td(dtype), device=_dev(device))


def full(shape, value, dtype, device=None):
    return torch.full(shape, value, dtype=_td(dtype), device=_dev(device))


def zeros_like(x):
    return torch.zeros_like(x)


def arange(start, end=None, step=1, dtype=np.dtype("int64"), device=None):
    """torch.arange: [0, start) when ``end`` is None, else [start, end) by ``step``."""
    if end is None:
        start, end = 0, start
    return torch.arange(start, end, step, dtype=_td(dtype), device=_dev(device))


def eye(n, m, dtype, device=None):
    return torch.eye(n, m, dtype=_td(dtype), device=_dev(device))


def linspace(start, end, steps, dtype, device=None):
    return torch.linspace(start, end, steps, dtype=_td(dtype), device=_dev(device))


def copy(x):
    return x.clone()


def fill_(x, value):
    """x[...] = value in place; a fresh tensor for an expanded view (torch refuses to write where
    several elements share one memory location)."""
    if 0 in x.stride() and x.numel() > 1:
        return torch.full_like(x, value)
    return x.fill_(value)


def write_(dst, src):
    """dst[...] = src (cast to dst's dtype) in place; returns dst (see ``fill_`` for expanded views)."""
    src = _t(src, dst)
    if 0 in dst.stride() and dst.numel() > 1:
        return torch.broadcast_to(src, dst.shape).to(dst.dtype).clone()
    return dst.copy_(src)


def setitem_(x, key, value):
    """x[key] = value in place; returns x."""
    x[_idx(key, x.device)] = value
    return x


def shares_memory(a, b) -> bool:
    """Whether two tensors use one storage (a view op's result that does is a view)."""
    return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
            and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr())


# ---- elementwise -------------------------------------------------------------------------------
exp, log, sqrt, abs, tanh, sign = torch.exp, torch.log, torch.sqrt, torch.abs, torch.tanh, torch.sign
sin, cos = torch.sin, torch.cos
erf, normal_cdf = torch.special.erf, torch.special.ndtr


def _t(v, like):
    return v if isinstance(v, torch.Tensor) else torch.as_tensor(v, dtype=like.dtype, device=like.device)


def x_normal_cdf(x):
    """x·Φ(x), exact GELU's forward."""
    return x * torch.special.ndtr(x)


def exp_(x):
    """e^x written into x itself: for fresh temporaries the engine owns (saves an allocation)."""
    return x.exp_()


def maximum(a, b):
    if not isinstance(b, torch.Tensor):
        return torch.clamp(a, min=b)
    return torch.maximum(a, _t(b, a))


def minimum(a, b):
    if not isinstance(b, torch.Tensor):
        return torch.clamp(a, max=b)
    return torch.minimum(a, _t(b, a))


def clip(x, lo, hi):
    return torch.clamp(x, lo, hi)


def where(cond, a, b):
    return torch.where(cond, a, b)


def nonzero(x):
    return torch.nonzero(x, as_tuple=True)


def sigmoid(x):
    return torch.sigmoid(x)  # torch's kernel is already stable for large |x|


# ---- reductions --------------------------------------------------------------------------------
def _reduce(fn, x, axis, keepdims):
    if axis == ():  # numpy reduces over no axis (identity); torch would reduce over all of them
        return x
    if axis is None:
        return fn(x) if not keepdims else fn(x, dim=tuple(range(x.ndim)), keepdim=True)
    return fn(x, dim=axis, keepdim=keepdims)


def sum(x, axis=None, keepdims=False):
    return _reduce(torch.sum, x, axis, keepdims)


def mean(x, axis=None, keepdims=False):
    return _reduce(torch.mean, x, axis, keepdims)


def amax(x, axis=None, keepdims=False):
    return _reduce(torch.amax, x, axis, keepdims)


def argmax(x, axis, keepdims=False):
    return torch.argmax(x, dim=axis, keepdim=keepdims)


def argmin(x, axis, keepdims=False):
    return torch.argmin(x, dim=axis, keepdim=keepdims)


def _over(fn, x, axis, keepdims):
    if axis is None:
        return fn(x) if not keepdims else fn(x).reshape((1,) * x.ndim)
    for a in sorted((axis,) if isinstance(axis, int) else axis, reverse=True):
        x = fn(x, dim=a, keepdim=keepdims)
    return x


def reduce_all(x, axis=None, keepdims=False):
    return _over(torch.all, x, axis, keepdims)


def reduce_any(x, axis=None, keepdims=False):
    return _over(torch.any, x, axis, keepdims)


def topk_indices(x, k, axis, largest):
    return torch.topk(x, k, dim=axis, largest=largest, sorted=True).indices


def tri(n, m, k, device=None):
    """The bool [n, m] mask of j <= i + k."""
    return torch.ones(n, m, dtype=torch.bool, device=_dev(device)).tril(k)


# ---- shape -------------------------------------------------------------------------------------
def reshape(x, shape):
    return torch.reshape(x, shape)


def permute(x, axes):
    return x.permute(*axes)


def broadcast_to(x, shape):
    return torch.broadcast_to(x, shape)


def concatenate(xs, axis):
    return torch.cat(xs, dim=axis)


def matmul(a, b):
    return torch.matmul(a, b)


# ---- indexing ----------------------------------------------------------------------------------
def _idx(key, device):
    """numpy-style index keys (lists, numpy arrays) as torch tensors on the right device."""
    if isinstance(key, tuple):
        return tuple(_idx(k, device) for k in key)
    if isinstance(key, (list, np.ndarray)):
        return torch.as_tensor(np.asarray(key), device=device)
    return key


def take_along_axis(x, idx, axis):
    return torch.take_along_dim(x, idx, dim=axis)


def scatter(x, idx, src, axis):
    """A copy of x with src written at idx along axis (torch.scatter)."""
    return x.scatter(axis, idx, src)


def gather(x, idx, axis):
    return torch.gather(x, axis, idx)


def put_along_axis(shape, idx, values, axis):
    return torch.zeros(shape, dtype=values.dtype, device=values.device).scatter_(axis, idx, values)


def getitem(x, key):
    return x[_idx(key, x.device)]


def index_add(target, index, values):
    """target[index] += values, summing repeated indices.

    Any numpy-style key is turned into flat positions by indexing an arange of the target's size;
    a flat index_add_ then accumulates repeats correctly.
    """
    positions = torch.arange(target.numel(), device=target.device).reshape(target.shape)
    picked = getitem(positions, index)
    values = torch.broadcast_to(values, picked.shape)
    target.view(-1).index_add_(0, picked.reshape(-1), values.reshape(-1))
    return target


def embedding_backward(grad, ids, num_embeddings):
    out = torch.zeros((num_embeddings, grad.shape[-1]), dtype=grad.dtype, device=grad.device)
    return out.index_add_(0, ids.reshape(-1), grad.reshape(-1, grad.shape[-1]))


# ---- randomness --------------------------------------------------------------------------------
def generator(seed, device=None):
    g = torch.Generator(device=_dev(device))
    g.manual_seed(seed)
    return g


def rand(gen, shape, dtype):
    return torch.rand(shape, generator=gen, dtype=_td(dtype), device=gen.device)


def randn(gen, shape, dtype):
    return torch.randn(shape, generator=gen, dtype=_td(dtype), device=gen.device)


def randint(gen, low, high, shape):
    return torch.randint(low, high, shape, generator=gen, device=gen.device)


def generator_state(gen):
    return gen.get_state().numpy()


def set_generator_state(gen, state):
    gen.set_state(torch.from_numpy(np.asarray(state, dtype=np.uint8)))


# ---- timing ------------------------------------------------------------------------------------
def synchronize(device=None) -> None:
    """Wait until queued work on ``device`` has finished. CUDA kernels run asynchronously, so a
    timer read without this measures only the launch; on the CPU torch is eager and this is a no-op."""
    if device is not None and str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


# ---- native kernels ----------------------------------------------------------------------------
# torch's own fused forward and backward kernels for minigrad's fused ops (see kernels.py). Each
# computes exactly the math of the op's docstring in one pass, where the op's formula composes
# several; minigrad still owns the graph (nothing here requires grad, so torch records nothing).
_aten = torch.ops.aten


def _layer_norm(x, w, b, n, eps):
    """(y, mean, rstd) over the last ``n`` dims; mean and rstd keep x's rank (size 1 there)."""
    return _aten.native_layer_norm(x, x.shape[x.ndim - n:], w, b, eps)


def _layer_norm_backward(g, x, mean, rstd, w, b, n, mask):
    """(dx, dw, db), each None where ``mask`` (which gradients are needed) says so."""
    return _aten.native_layer_norm_backward(g, x, x.shape[x.ndim - n:], mean, rstd, w, b, list(mask))


def _linear(x, w, b):
    """x Wᵀ + b with the leading dims folded into one GEMM (addmm adds the bias in it)."""
    x2 = x.reshape(-1, x.shape[-1])
    y = torch.mm(x2, w.t()) if b is None else torch.addmm(b, x2, w.t())
    return y.reshape(x.shape[:-1] + (w.shape[0],))


def _embedding_backward(g, ids, num_weights, padding_idx):
    """dW: rows of g summed per id (repeats add up); the padding row (if any) gets none."""
    pad = -1 if padding_idx is None else padding_idx % num_weights  # aten's "no padding" is -1
    return _aten.embedding_dense_backward(g, ids, num_weights, pad, False)


def _no_dropout(keep) -> None:
    """torch's kernels would draw their own mask: a given one must not be silently dropped."""
    if keep is not None:
        raise ValueError("torch's fused attention kernel takes no dropout mask (attention_on refuses dropout)")


def _attention(q, k, v, mask, scale, keep=None, keep_scale=1.0):
    """(softmax(q kᵀ scale + mask) v, the log-sum-exp of each score row): torch's CPU flash kernel
    (never given a dropout mask: ``attention_on`` says no when dropout applies)."""
    _no_dropout(keep)
    return _aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=mask, scale=scale)


def _attention_backward(g, q, k, v, out, lse, mask, scale, keep=None, keep_scale=1.0):
    """(dq, dk, dv) of ``_attention``, the probabilities recomputed from q, k and the log-sum-exp."""
    _no_dropout(keep)
    return _aten._scaled_dot_product_flash_attention_for_cpu_backward(
        g, q, k, v, out, lse, 0.0, False, attn_mask=mask, scale=scale)


# attention: CPU only, without dropout. CUDA's fused kernels (flash, memory-efficient) take other
# arguments and need a GPU to be tested, and torch's kernels draw a dropout mask from torch's own
# generator, not minigrad's: there ``attention_on`` says no and the composed attention runs.
kernels = Kernels(
    gelu=lambda x, approximate: torch.nn.functional.gelu(x, approximate=approximate),
    gelu_backward=lambda g, x, approximate: _aten.gelu_backward(g, x, approximate=approximate),
    softmax=lambda x, dim: torch._softmax(x, dim, False),
    softmax_backward=lambda g, y, dim: _aten._softmax_backward_data(g, y, dim, y.dtype),
    log_softmax=lambda x, dim: torch._log_softmax(x, dim, False),
    log_softmax_backward=lambda g, y, dim: _aten._log_softmax_backward_data(g, y, dim, y.dtype),
    layer_norm=_layer_norm,
    layer_norm_backward=_layer_norm_backward,
    linear=_linear,
    embedding=lambda w, ids: torch.embedding(w, ids),
    embedding_backward=_embedding_backward,
    attention=_attention,
    attention_backward=_attention_backward,
    attention_on=lambda q, dropout: q.device.type == "cpu" and not dropout,
)

