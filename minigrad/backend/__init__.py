"""Backends: flat namespaces of array functions (numpy, or torch used purely as an array library).

A device string picks one:
  "cpu"                               -> numpy (the default)
  "torch:cpu"                         -> torch tensors on the CPU
  "cuda", "cuda:N", "torch:cuda:N"   -> torch tensors on that GPU
torch is imported only when a torch device is first asked for, so numpy alone is enough for "cpu".
"""
from __future__ import annotations

from types import ModuleType

from . import numpy_backend

_cache: dict[str, tuple[ModuleType, str]] = {"cpu": (numpy_backend, "cpu")}


def resolve(device) -> tuple[ModuleType, str]:
    """(backend module, canonical device string) for a device string, with a clear error."""
    if device is None:
        return _cache["cpu"]
    key = str(device)
    hit = _cache.get(key)
    if hit is not None:
        return hit
    name = key[len("torch:"):] if key.startswith("torch:") else key
    if not (name == "cpu" and key.startswith("torch:")) and not name.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}: use 'cpu', 'torch:cpu', 'cuda' or 'cuda:N'")
    try:
        from . import torch_backend
    except ImportError as e:
        raise RuntimeError(f"device {device!r} needs torch, which is not installed ({e})") from None
    from ..threads import pin_torch

    pin_torch()  # torch's threads follow minigrad.set_num_threads, if it was called before torch loaded
    canonical = torch_backend.check_device(name)
    _cache[key] = (torch_backend, canonical)
    return _cache[key]


def backend_of_array(x) -> tuple[ModuleType, str]:
    """Which backend owns a raw array (used when wrapping arrays that came from outside)."""
    import numpy as np

    # numpy >= 2 gives arrays *and* scalars (np.float64(1.0)) a ``device`` attribute ("cpu").
    if isinstance(x, (np.ndarray, np.generic)) or not hasattr(x, "device"):
        return _cache["cpu"]
    dev = x.device
    return resolve("torch:cpu" if dev.type == "cpu" else f"cuda:{dev.index or 0}")
