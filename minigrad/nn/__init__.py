"""``minigrad.nn``: modules, layers, functional ops, initialisers and gradient utilities."""
from . import functional, init, utils  # noqa: F401
from .layers import GELU, Dropout, Embedding, LayerNorm, Linear, ReLU, Tanh  # noqa: F401
from .module import Module, ModuleList, Parameter, Sequential  # noqa: F401
