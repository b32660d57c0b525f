"""``minigrad.nn``: modules, layers, losses, functional ops, initialisers and gradient utilities."""
from . import functional, init, utils  # noqa: F401
from .layers import (GELU, Dropout, Embedding, Identity, LayerNorm, Linear, LogSoftmax, ReLU,  # noqa: F401
                     Sigmoid, Softmax, Tanh)
from .losses import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss, NLLLoss  # noqa: F401
from .module import Module, ModuleDict, ModuleList, Parameter, Sequential  # noqa: F401
