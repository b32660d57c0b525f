"""``gradcheck``: compare the analytical Jacobian (from backward) with central finite differences.

For f: Rⁿ → Rᵐ, column j of the numerical Jacobian is (f(x + ε e_j) - f(x - ε e_j)) / 2ε, and row i
of the analytical one is the gradient that backward gives for the output seed e_i. Both must agree
elementwise within atol + rtol·|numerical|. Done in float64: in float32 the difference quotient's
rounding error (~1e-7/ε) would swamp the check.

``fast_mode`` compares one random projection vᵀJu instead, for functions too big for full Jacobians.
``gradgradcheck`` applies the same check to the gradient itself (second derivatives).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from . import autograd
from .autograd import enable_grad, no_grad
from .creation import zeros_like
from .tensor import Tensor


class GradcheckError(AssertionError):
    pass


def _outputs(fn, inputs) -> list[Tensor]:
    out = fn(*inputs)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _flat_output(fn, inputs) -> np.ndarray:
    with no_grad():
        return np.concatenate([o.numpy().astype(np.float64).ravel() for o in _outputs(fn, inputs)])


def _numerical_jacobian(fn, inputs, t: Tensor, eps: float) -> np.ndarray:
    host = t.numpy().reshape(-1).copy()
    cols = []
    for j in range(host.size):
        orig = host[j]
        for sign in (1, -1):
            host[j] = orig + sign * eps
            t._data = t._xp.array(host.reshape(t.shape), dtype=t.dtype, device=t.device)
            if sign == 1:
                plus = _flat_output(fn, inputs)
            else:
                minus = _flat_output(fn, inputs)
        host[j] = orig
        cols.append((plus - minus) / (2 * eps))
    t._data = t._xp.array(host.reshape(t.shape), dtype=t.dtype, device=t.device)
    return np.stack(cols, axis=1)


def _vjp(fn, inputs, diff, seeds: list[np.ndarray]) -> list[np.ndarray]:
    """Gradients of Σ seed·output w.r.t. each differentiable input (zeros where none flows)."""
    for t in diff:
        t.grad = None
    outs = _outputs(fn, inputs)
    total = None
    for o, s in zip(outs, seeds):
        if not o.requires_grad:
            continue
        term = (o * Tensor(s.reshape(o.shape), dtype=o.dtype, device=o.device)).sum()
        total = term if total is None else total + term
    if total is not None:
        total.backward()
    return [t.grad.numpy().astype(np.float64).ravel() if t.grad is not None else
            np.zeros(t.numel()) for t in diff]


def gradcheck(fn: Callable, inputs: Sequence, eps: float = 1e-6, atol: float = 1e-5,
              rtol: float = 1e-3, fast_mode: bool = False, raise_exception: bool = True,
              seed: int = 0) -> bool:
    """True if backward's Jacobian matches finite differences for every input that requires grad.

    Inputs must be float64. On failure raises (or returns False) naming the worst element.
    """
    inputs = list(inputs)
    diff = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    for t in diff:
        if t.dtype != np.float64:
            raise ValueError(f"gradcheck needs float64 inputs, got {t.dtype}: float32 finite "
                             "differences are too noisy to judge a gradient")
    sizes = [o.numel() for o in _outputs(fn, inputs)]
    rng = np.random.default_rng(seed)
    for k, t in enumerate(diff):
        if fast_mode:
            u = rng.standard_normal(t.numel())
            v = rng.standard_normal(sum(sizes))
            host = t.numpy().copy()
            with no_grad():
                def at(delta, host=host, u=u):
                    t._data = t._xp.array(host + delta * u.reshape(t.shape), dtype=t.dtype,
                                         device=t.device)
                    return _flat_output(fn, inputs)
                numerical = np.array([v @ (at(eps) - at(-eps)) / (2 * eps)])
            t._data = t._xp.array(host, dtype=t.dtype, device=t.device)
            analytical = np.array([_vjp(fn, inputs, diff, np.split(v, np.cumsum(sizes)[:-1]))[k] @ u])
        else:
            numerical = _numerical_jacobian(fn, inputs, t, eps)
            rows = []
            for i in range(sum(sizes)):
                seed_vec = np.zeros(sum(sizes))
                seed_vec[i] = 1.0
                rows.append(_vjp(fn, inputs, diff, np.split(seed_vec, np.cumsum(sizes)[:-1]))[k])
            analytical = np.stack(rows, axis=0) if rows else numerical * 0
        err = np.abs(analytical - numerical) - (atol + rtol * np.abs(numerical))
        if err.size and err.max() > 0:
            w = np.unravel_index(int(np.argmax(err)), err.shape)
            if fast_mode:
                where = "the random projection vᵀJu (fast_mode)"
            else:  # Jacobian row = flat index over all outputs, column = element of this input
                col = ", ".join(str(int(n)) for n in np.unravel_index(w[1], t.shape))
                where = f"d output[{int(w[0])}] / d input[{col}]"
            index = next(i for i, x in enumerate(inputs) if x is t)  # not inputs.index: == is elementwise
            msg = (f"gradcheck failed for input {index} (shape {t.shape}): worst "
                   f"element is {where}: analytical {analytical[w]:.8g} vs numerical {numerical[w]:.8g} "
                   f"(atol={atol}, rtol={rtol})")
            if raise_exception:
                raise GradcheckError(msg)
            return False
    for t in diff:
        t.grad = None
    return True


def gradgradcheck(fn: Callable, inputs: Sequence, grad_outputs: Sequence | None = None, *, eps: float = 1e-6,
                  atol: float = 1e-5, rtol: float = 1e-3, fast_mode: bool = False, raise_exception: bool = True,
                  seed: int = 0) -> bool:
    """True if the second derivatives (backward's own backward) match finite differences.

    As torch's: the function checked by ``gradcheck`` is (inputs, v) ↦ vᵀ ∂fn/∂inputs, computed by
    ``autograd.grad(..., create_graph=True)``, with v = ``grad_outputs`` (random float64 ones of the
    outputs' shapes when None, requiring grad, so the check covers d/dv too: backward is linear in v).
    Its Jacobian is made of the Hessian-vector products of fn, and gradcheck compares them with
    central differences of the gradient (``fast_mode``: one random projection of them instead).
    """
    inputs = list(inputs)
    diff = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    if grad_outputs is None:
        rng = np.random.default_rng(seed)
        grad_outputs = [Tensor(rng.standard_normal(o.shape), dtype=np.float64, device=o.device,
                               requires_grad=True) for o in _outputs(fn, inputs)]
    grad_outputs = list(grad_outputs)
    n = len(inputs)

    def first_derivatives(*args):
        with enable_grad():
            grads = autograd.grad(_outputs(fn, args[:n]), diff, args[n:], create_graph=True, allow_unused=True)
        # An input the gradient does not reach has a zero derivative (and so zero second ones).
        return tuple(zeros_like(t) if g is None else g for g, t in zip(grads, diff))

    return gradcheck(first_derivatives, inputs + grad_outputs, eps=eps, atol=atol, rtol=rtol,
                     fast_mode=fast_mode, raise_exception=raise_exception, seed=seed)
