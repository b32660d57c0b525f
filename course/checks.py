"""What the assignment checks share: random shapes, "compare with torch", gradcheck, running a lesson.

A check writes its computation once, as ``fn(ns, *tensors)``, where ``ns.lib`` is ``minigrad`` or
``torch`` and ``ns.F`` the matching ``nn.functional``: minigrad follows torch's API, so one lambda
runs on both, and torch (computed here, at grading time) is the oracle.

minigrad and torch are imported inside the functions, never at module level: the grader imports
this module before it puts the graded tree on ``sys.path``.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .framework import TaskFailure

# Set by the grader's runner before a check runs: the graded tree, and for each lesson the reference
# text of the *other* tasks' regions (isolation), {path: {region: text}}.
ROOT: Path | None = None
LESSON_REFERENCE: dict[str, dict[str, str]] = {}
LANG = "en"         # the report's language (python -m course.grade --lang), set by the runner too

# Tolerances. float64: round-off over a few hundred ops is ~1e-13 relative; 1e-6 leaves room for
# any algebraically equal formula (another summation order, z/b instead of a/b²) while a wrong
# formula is off by O(1). float32: eps is 6e-8, and sums of up to ~100 terms grow that to ~1e-5.
TOL = {"float64": (1e-6, 1e-8), "float32": (1e-4, 1e-5)}


@dataclass
class Arg:
    """One input of a compared function: its value, its name in messages, whether it needs a grad."""
    value: Any
    name: str
    grad: bool = True


class _NS:
    def __init__(self, lib, F, is_torch: bool):
        self.lib, self.F, self.is_torch = lib, F, is_torch


def namespaces() -> tuple[_NS, _NS]:
    """(minigrad, torch): each library with its ``nn.functional``."""
    import minigrad
    import minigrad.nn.functional as mF
    import torch
    import torch.nn.functional as tF
    return _NS(minigrad, mF, False), _NS(torch, tF, True)


def fmt_shapes(args: list[Arg]) -> str:
    return ", ".join(f"{a.name}{tuple(np.shape(a.value))}" for a in args)


def rand_shape(rng: np.random.Generator, ndim: int, lo: int = 1, hi: int = 5) -> tuple:
    return tuple(int(n) for n in rng.integers(lo, hi + 1, ndim))


def broadcast_pair(rng: np.random.Generator) -> tuple[tuple, tuple]:
    """Two shapes that broadcast: b may have fewer dims, and some dims are 1 on one side only."""
    full = rand_shape(rng, int(rng.integers(2, 4)), 2, 4)
    a, b = list(full), list(full)
    for i in range(len(full)):
        side = rng.integers(0, 3)  # 0: both full, 1: a is 1 here, 2: b is 1 here
        if side == 1:
            a[i] = 1
        elif side == 2:
            b[i] = 1
    drop = int(rng.integers(0, len(full)))
    return tuple(a), tuple(b[drop:])


def values(rng: np.random.Generator, shape: tuple, low: float | None = None,
           high: float | None = None) -> np.ndarray:
    """Standard normal values, or uniform in [low, high)."""
    if low is None:
        return rng.standard_normal(shape)
    return rng.uniform(low, high, shape)


def _max_err(got: np.ndarray, want: np.ndarray, dtype: str) -> tuple[float, bool]:
    rtol, atol = TOL[dtype]
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return float("inf"), False
    same_nonfinite = (~np.isfinite(want)) & (got == want)  # inf matching inf counts as equal
    diff = np.where(same_nonfinite, 0.0, np.abs(got - want))
    diff = np.where(np.isnan(got) & np.isnan(want), 0.0, diff)
    err = float(np.max(diff, initial=0.0))
    if np.isnan(diff).any():
        return float("nan"), False
    scale = max(1.0, float(np.max(np.abs(np.where(np.isfinite(want), want, 0.0)), initial=0.0)))
    return err, err <= atol * scale + rtol * scale


def _t(key: str, **values: object) -> str:
    """A check's message in the report's language (course/zh/messages.toml [check])."""
    from . import i18n

    return i18n.message(f"check.{key}", LANG, **values)


def _suffix(hint: str) -> str:
    return _t("hint", hint=hint) if hint else ""


def _error(err: float) -> str:
    return _t("max_error", err=f"{err:.3g}")


def compare(label: str, fn: Callable, args: list[Arg], rng: np.random.Generator, *,
            dtype: str = "float64", hint: str = "", forward: bool = True, backward: bool = True) -> None:
    """Run ``fn`` on minigrad and on torch; the forward values and every input's gradient (for a
    random upstream gradient) must agree, with the input's shape and dtype.

    minigrad runs first, forward and backward, and torch is imported only then: an unfinished
    task fails with its NotImplementedError without paying for torch's import."""
    import minigrad as mg

    import minigrad.nn.functional as mF

    mgns = _NS(mg, mF, False)
    where = _t("where", shapes=fmt_shapes(args), dtype=dtype)

    def as_dtype(a: Arg) -> np.ndarray:
        v = np.asarray(a.value)
        return v.astype(dtype) if v.dtype.kind == "f" else v

    m_in = [mg.tensor(as_dtype(a), dtype=as_dtype(a).dtype, requires_grad=a.grad) for a in args]
    m_out = fn(mgns, *m_in)
    g = rng.standard_normal(tuple(m_out.shape)).astype(dtype)
    if backward:
        m_out.backward(mg.tensor(g, dtype=dtype))
    _, tns = namespaces()
    torch = tns.lib
    t_in = [torch.tensor(as_dtype(a), requires_grad=a.grad) for a in args]
    t_out = fn(tns, *t_in)
    want = t_out.detach().numpy()
    if tuple(m_out.shape) != want.shape:
        raise TaskFailure(_t("output_shape", label=label, got=tuple(m_out.shape), want=want.shape, where=where))
    if forward:
        err, ok = _max_err(m_out.numpy(), want, dtype)
        if not ok:
            raise TaskFailure(_t("output_wrong", label=label, where=where, error=_error(err), hint=_suffix(hint)))
        if m_out.dtype != np.dtype(dtype):
            raise TaskFailure(_t("output_dtype", label=label, got=m_out.dtype, dtype=dtype))
    if not backward:
        return
    t_out.backward(torch.tensor(g))
    for a, m, t in zip(args, m_in, t_in):
        if not a.grad:
            continue
        if m.grad is None:
            raise TaskFailure(_t("no_grad", label=label, name=a.name, where=where))
        if tuple(m.grad.shape) != tuple(t.shape):
            raise TaskFailure(_t("grad_shape", label=label, name=a.name, got=tuple(m.grad.shape),
                                 want=tuple(t.shape), where=where))
        err, ok = _max_err(m.grad.numpy(), t.grad.numpy(), dtype)
        if not ok:
            raise TaskFailure(_t("grad_wrong", label=label, name=a.name, where=where, error=_error(err),
                                 hint=_suffix(hint)))
        if m.grad.dtype != np.dtype(dtype):
            raise TaskFailure(_t("grad_dtype", label=label, name=a.name, got=m.grad.dtype, dtype=dtype))


def gradcheck(label: str, fn: Callable, args: list[Arg], hint: str = "") -> None:
    """float64 finite differences (``minigrad.gradcheck``) against the analytical gradient."""
    mgns, _ = namespaces()
    mg = mgns.lib
    ins = [mg.tensor(np.asarray(a.value), dtype=mg.float64 if np.asarray(a.value).dtype.kind == "f"
                     else None, requires_grad=a.grad) for a in args]
    try:
        mg.gradcheck(lambda *ts: fn(mgns, *ts), ins, atol=1e-6, rtol=1e-4)
    except mg.GradcheckError as e:
        raise TaskFailure(_t("finite_differences", label=label, shapes=fmt_shapes(args), error=e,
                             hint=_suffix(hint))) from None


def both(label: str, fn: Callable, args: list[Arg], rng: np.random.Generator, hint: str = "",
         gradcheck_too: bool = True) -> None:
    """``compare`` in float64 and in float32, then (small inputs) ``gradcheck``."""
    compare(label, fn, args, rng, dtype="float64", hint=hint)
    compare(label, fn, args, rng, dtype="float32", hint=hint)
    if gradcheck_too:
        gradcheck(label, fn, args, hint)


def run_lesson(path: str) -> None:
    """Execute a lesson of the graded tree as a script: lessons assert their claims against torch,
    so running it is the check. Other tasks' regions in it are first set to the reference."""
    from . import _blank

    assert ROOT is not None, "run_lesson is called by the grader's runner only"
    text = (ROOT / path).read_text(encoding="utf-8")
    for name, body in LESSON_REFERENCE.get(path, {}).items():
        text = _blank.replace_region(text, name, body, f"lesson {path}")
    code = compile(text, str(ROOT / path), "exec")
    sys.path.insert(0, str((ROOT / path).parent))  # lessons import their _common helper
    try:
        exec(code, {"__name__": "__main__", "__file__": str(ROOT / path)})
    except AssertionError as e:  # the lesson's own claim failed: say which line, in one line
        import traceback

        line = [f.lineno for f in traceback.extract_tb(e.__traceback__) if f.filename == str(ROOT / path)]
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
        from . import i18n

        failed = i18n.message("grade.lesson_assert", LANG, path=path, line=line[-1] if line else "?")
        raise TaskFailure(f"{failed}{': ' + first if first else ''}") from None
    finally:
        sys.path.remove(str((ROOT / path).parent))


def compare_graphs(label: str, m_outs: list, t_outs: list, m_leaves: dict, t_leaves: dict,
                   rng: np.random.Generator, dtype: str, hint: str = "", where: str = "") -> None:
    """Like ``compare`` for graphs built by hand (a module on one side, torch ops on the other):
    each output's value, then the gradient of Σ gᵢ·outᵢ (random gᵢ) w.r.t. every named leaf."""
    import minigrad as mg
    import torch

    total_m = total_t = 0
    for i, (m, t) in enumerate(zip(m_outs, t_outs)):
        want = t.detach().numpy()
        err, ok = _max_err(m.numpy(), want, dtype)
        if not ok:
            got = _t("output_n_shape", got=tuple(m.shape), want=want.shape) if tuple(m.shape) != want.shape \
                else _error(err)
            raise TaskFailure(_t("output_n_wrong", label=label, i=i, where=where, error=got, hint=_suffix(hint)))
        g = rng.standard_normal(want.shape).astype(dtype)
        total_m = total_m + (m * mg.tensor(g, dtype=dtype)).sum()
        total_t = total_t + (t * torch.tensor(g)).sum()
    total_m.backward()
    total_t.backward()
    for name, m in m_leaves.items():
        t = t_leaves[name]
        if m.grad is None:
            raise TaskFailure(_t("no_grad_graph", label=label, name=name, where=where))
        err, ok = _max_err(m.grad.numpy(), t.grad.numpy(), dtype)
        if not ok:
            raise TaskFailure(_t("grad_wrong", label=label, name=name, where=where, error=_error(err),
                                 hint=_suffix(hint)))
