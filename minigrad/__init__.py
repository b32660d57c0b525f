"""minigrad: a small autograd engine with torch's API, on numpy (or on torch tensors, incl. CUDA).

    import minigrad as mg
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    x.grad  # tensor([2., 4.])
"""
from . import autograd, nn, optim, viz  # noqa: F401
from .autograd import (Context, Function, enable_grad, is_grad_enabled, no_grad,  # noqa: F401
                       set_grad_enabled)
from .creation import (arange, bool_, cat, empty, empty_like, eye, float16, float32,  # noqa: F401
                       float64, from_numpy, full, full_like, int64, is_tensor, linspace, ones,
                       ones_like, rand, rand_like, randint, randn, randn_like, stack, tensor, where,
                       zeros, zeros_like)
from .dtypes import finfo  # noqa: F401
from .functions import (abs, all, allclose, any, argmax, argmin, chunk, clamp, clone, cos,  # noqa: F401
                        equal, exp, flatten, log, log_softmax, matmul, max, maximum, mean, min,
                        minimum, norm, permute, pow, relu, reshape, sigmoid, sin, softmax, split,
                        sqrt, squeeze, std, sum, tanh, topk, transpose, tril, triu, unsqueeze, var)
from .gradcheck import GradcheckError, gradcheck, gradgradcheck  # noqa: F401
from .profiler import profile  # noqa: F401
from .random import get_rng_state, manual_seed, set_rng_state  # noqa: F401
from .tensor import Tensor  # noqa: F401
from .threads import get_num_threads, set_num_threads  # noqa: F401

clip = clamp
bool = bool_  # torch spells it minigrad.bool
long = int64
half = float16
float = float32  # noqa: A001 - torch.float is float32
double = float64
