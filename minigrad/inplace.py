"""In-place methods of ``Tensor`` (``add_``, ``+=``, ``t[mask] = v``, ``zero_``, ...), with torch's rules.

- Under ``no_grad``, or when nothing involved requires grad, the new values are written into the
  tensor's storage: every view of it (``t[0]``, ``t.data``, ``t.view(...)``) sees them.
- Outside ``no_grad``, a leaf that requires grad refuses (torch's error): its old value is what
  its gradient is for.
- Outside ``no_grad``, on a tensor with history (or with an operand that requires grad), the op is
  recorded: it is computed out of place on a snapshot of the old values, written into the storage,
  and becomes the tensor's ``grad_fn`` (torch "rebases" the history the same way). Recording an
  in-place op on a *view* of such a tensor is not supported (torch rewrites the base's history,
  CopySlices): it raises, naming the out-of-place alternative.
- Every in-place op bumps the storage's version counter (``_version``, shared with its views). Ops
  note the version of what they save; backward refuses to use an array changed since (torch's
  "modified by an inplace operation" error) instead of computing a wrong gradient.
"""
from __future__ import annotations

from . import autograd
from .random import default_generator

_LEAF = "a leaf Variable that requires grad is being used in an in-place operation."
_VIEW_OF_LEAF = "a view of a leaf Variable that requires grad is being used in an in-place operation."
_CATEGORY = {"b": (0, "Bool"), "i": (1, "Long"), "u": (1, "Long"), "f": (2, "Float")}


def _needs_grad(x) -> bool:
    return getattr(x, "requires_grad", False)


class InplaceMixin:
    """The in-place half of Tensor's API (mixed into ``Tensor``; see the module docstring)."""

    __slots__ = ()

    def _recording(self, *operands) -> bool:
        """Whether an in-place op on self must be recorded; raises torch's errors where it cannot."""
        if not autograd.is_grad_enabled() or not (self.requires_grad or any(map(_needs_grad, operands))):
            return False
        base = getattr(self, "_base", None)
        if self.requires_grad and self.grad_fn is None:
            raise RuntimeError(_LEAF)
        if base is not None:
            if base.requires_grad and base.grad_fn is None:
                raise RuntimeError(_VIEW_OF_LEAF)
            raise RuntimeError("minigrad does not record in-place ops on a view of a tensor with history "
                               "(torch rewrites the base's graph); use an out-of-place op instead, "
                               "e.g. x = x.masked_fill(mask, v) or torch.where")
        return True

    def _check_cast(self, dtype) -> None:
        have, want = _CATEGORY[dtype.kind], _CATEGORY[self.dtype.kind]
        if have[0] > want[0]:
            raise RuntimeError(f"result type {have[1]} can't be cast to the desired output type {want[1]}")

    def _inplace(self, compute, *operands):
        """self <- compute(self), in self's storage, by the rules above. ``compute`` is the
        out-of-place op (a function of one Tensor); ``operands`` are its other Tensor inputs."""
        if self._recording(*operands):
            snapshot = type(self)._make(self._xp.copy(self._data), self._xp, self.device, self.grad_fn)
            snapshot.requires_grad = self.requires_grad
            out = compute(snapshot)
            self.grad_fn, self.requires_grad = out.grad_fn, out.requires_grad
        else:
            with autograd.no_grad():
                out = compute(self)
        self._check_cast(out.dtype)
        self._data = self._xp.write_(self._data, out._data)
        self._vc[0] += 1
        return self

    def add_(self, other, alpha=1):
        return self._inplace(lambda t: t + (other if alpha == 1 else other * alpha), other)

    def sub_(self, other, alpha=1):
        return self._inplace(lambda t: t - (other if alpha == 1 else other * alpha), other)

    def mul_(self, other):
        return self._inplace(lambda t: t * other, other)

    def div_(self, other):
        return self._inplace(lambda t: t / other, other)

    def pow_(self, exponent):
        return self._inplace(lambda t: t ** exponent)

    def clamp_(self, min=None, max=None):
        return self._inplace(lambda t: t.clamp(min, max))

    clip_ = clamp_

    def masked_fill_(self, mask, value):
        return self._inplace(lambda t: t.masked_fill(mask, value), value)

    def copy_(self, src):
        """self <- src (broadcast, cast to self's dtype, moved to self's device)."""
        from .tensor import Tensor

        if not isinstance(src, Tensor):
            src = Tensor(src, device=self.device)
        return self._inplace(lambda t: src.to(t.device, t.dtype).expand(t.shape) * 1, src)

    def scatter_(self, dim: int, index, src):
        return self._inplace(lambda t: t.scatter(dim, index, src), src)

    def fill_(self, value):
        if self._recording(value):
            return self.masked_fill_(self._make(self._xp.full(self.shape, True, bool, self.device),
                                                self._xp, self.device), value)
        self._data = self._xp.fill_(self._data, value)
        self._vc[0] += 1
        return self

    def zero_(self):
        return self.fill_(0)

    def _fill_random(self, sample) -> "InplaceMixin":
        if self._recording():
            raise RuntimeError("random in-place fills of a tensor with history are not supported; "
                               "do them on leaves (under no_grad if they require grad)")
        raw = sample(default_generator(self.device), self.shape, self.dtype)
        self._data = self._xp.write_(self._data, raw)
        self._vc[0] += 1
        return self

    def normal_(self, mean: float = 0.0, std: float = 1.0):
        return self._fill_random(lambda g, s, dt: self._xp.randn(g, s, dt) * std + mean)

    def uniform_(self, a: float = 0.0, b: float = 1.0):
        return self._fill_random(lambda g, s, dt: self._xp.rand(g, s, dt) * (b - a) + a)

    def __setitem__(self, key, value):
        """t[key] = value: basic slices, integer arrays, bool masks; ``value`` a number or Tensor."""
        from .ops.shape import IndexPut
        from .methods import raw_key

        key = raw_key(key)
        try:
            if self._recording(value):
                return self._inplace(lambda t: IndexPut.apply(t, value, key=key), value)
        except RuntimeError as e:
            if str(e) == _LEAF:  # torch writes through a view, hence its wording
                raise RuntimeError(_VIEW_OF_LEAF) from None
            raise
        raw = value._data if hasattr(value, "_data") else value
        self._data = self._xp.setitem_(self._data, key, raw)
        self._vc[0] += 1

    __iadd__ = add_
    __isub__ = sub_
    __imul__ = mul_
    __itruediv__ = div_
