"""minigrad: a small autograd engine with torch's API, on numpy (or on torch tensors, incl. CUDA).

    import minigrad as mg
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    x.grad  # tensor([2., 4.])
"""
from . import nn, optim, viz  # noqa: F401
from .autograd import Context, Function, enable_grad, is_grad_enabled, no_grad  # noqa: F401
from .creation import (arange, bool_, cat, float32, float64, full, int64, ones, ones_like,  # noqa: F401
                       rand, randn, stack, tensor, where, zeros, zeros_like)
from .gradcheck import GradcheckError, gradcheck  # noqa: F401
from .profiler import profile  # noqa: F401
from .random import get_rng_state, manual_seed, set_rng_state  # noqa: F401
from .tensor import Tensor  # noqa: F401

bool = bool_  # torch spells it minigrad.bool
