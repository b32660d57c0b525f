"""torch's top-level math functions (``torch.exp(x)``, ``torch.max(x, dim=1)``, ...): each is the
Tensor method of the same name, so the two spellings cannot disagree."""
from __future__ import annotations

import numpy as np

from .tensor import Tensor


def matmul(a: Tensor, b: Tensor) -> Tensor:
    return a @ b


def softmax(x: Tensor, dim: int) -> Tensor:
    return x.softmax(dim)


def log_softmax(x: Tensor, dim: int) -> Tensor:
    return x.log_softmax(dim)


def exp(x: Tensor) -> Tensor: return x.exp()
def log(x: Tensor) -> Tensor: return x.log()
def sqrt(x: Tensor) -> Tensor: return x.sqrt()
def abs(x: Tensor) -> Tensor: return x.abs()
def tanh(x: Tensor) -> Tensor: return x.tanh()
def sigmoid(x: Tensor) -> Tensor: return x.sigmoid()
def relu(x: Tensor) -> Tensor: return x.relu()
def sin(x: Tensor) -> Tensor: return x.sin()
def cos(x: Tensor) -> Tensor: return x.cos()
def tril(x: Tensor, diagonal: int = 0) -> Tensor: return x.tril(diagonal)
def triu(x: Tensor, diagonal: int = 0) -> Tensor: return x.triu(diagonal)
def norm(x: Tensor, p: float = 2, dim=None, keepdim: bool = False) -> Tensor: return x.norm(p, dim, keepdim)
def all(x: Tensor, dim=None, keepdim: bool = False) -> Tensor: return x.all(dim, keepdim)
def any(x: Tensor, dim=None, keepdim: bool = False) -> Tensor: return x.any(dim, keepdim)
def topk(x: Tensor, k: int, dim: int = -1, largest: bool = True, sorted: bool = True): return x.topk(k, dim, largest)
def var(x: Tensor, dim=None, unbiased=None, keepdim: bool = False) -> Tensor: return x.var(dim, unbiased, keepdim)
def std(x: Tensor, dim=None, unbiased=None, keepdim: bool = False) -> Tensor: return x.std(dim, unbiased, keepdim)
def chunk(x: Tensor, chunks: int, dim: int = 0) -> tuple: return x.chunk(chunks, dim)
def split(x: Tensor, split_size, dim: int = 0) -> tuple: return x.split(split_size, dim)
def permute(x: Tensor, dims) -> Tensor: return x.permute(dims)
def maximum(a: Tensor, b: Tensor) -> Tensor: return a.maximum(b)
def minimum(a: Tensor, b: Tensor) -> Tensor: return a.minimum(b)
def clamp(x: Tensor, min=None, max=None) -> Tensor: return x.clamp(min, max)
def pow(x: Tensor, exponent) -> Tensor: return x ** exponent
def sum(x: Tensor, dim=None, keepdim: bool = False) -> Tensor: return x.sum(dim, keepdim)
def mean(x: Tensor, dim=None, keepdim: bool = False) -> Tensor: return x.mean(dim, keepdim)
def max(x: Tensor, dim=None, keepdim: bool = False): return x.max(dim, keepdim)
def min(x: Tensor, dim=None, keepdim: bool = False): return x.min(dim, keepdim)
def argmax(x: Tensor, dim=None, keepdim: bool = False) -> Tensor: return x.argmax(dim, keepdim)
def argmin(x: Tensor, dim=None, keepdim: bool = False) -> Tensor: return x.argmin(dim, keepdim)
def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor: return x.flatten(start_dim, end_dim)
def transpose(x: Tensor, dim0: int, dim1: int) -> Tensor: return x.transpose(dim0, dim1)
def reshape(x: Tensor, *shape) -> Tensor: return x.reshape(*shape)
def squeeze(x: Tensor, dim=None) -> Tensor: return x.squeeze(dim)
def unsqueeze(x: Tensor, dim: int) -> Tensor: return x.unsqueeze(dim)
def clone(x: Tensor) -> Tensor: return x.clone()


def allclose(a: Tensor, b: Tensor, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False) -> bool:
    return bool(np.allclose(a.numpy(), b.numpy(), rtol=rtol, atol=atol, equal_nan=equal_nan))


def equal(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a.numpy(), b.numpy()))
