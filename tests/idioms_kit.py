"""The registry and helpers the idiom modules share (see test_idioms.py for what an idiom is)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

IDIOMS: dict = {}


def idiom(source: str, unsupported: str | None = None):
    """Register an idiom; ``unsupported`` says why minigrad does not do it on purpose."""
    def register(fn):
        IDIOMS[fn.__name__] = (fn, source, unsupported)
        return fn
    return register


def env(T, device: str):
    """What an idiom sees: ``e.T`` is torch or minigrad, ``e.tensor`` makes a tensor on ``device``."""
    return SimpleNamespace(T=T, F=T.nn.functional, nn=T.nn, optim=T.optim, dev=device,
                           tensor=lambda data, **kw: T.tensor(data, device=device, **kw))


def rng_array(seed: int, *shape, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def raised(fn) -> str:
    """The name of the exception ``fn()`` raises, or 'no error'."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the type is the result
        return type(exc).__name__
    return "no error"


def load(e, module, *arrays):
    """Copy numpy arrays into a module's parameters (torch's usual ``with no_grad(): p.copy_(x)``)."""
    with e.T.no_grad():
        for p, a in zip(module.parameters(), arrays):
            p.copy_(e.tensor(a))
    return module
