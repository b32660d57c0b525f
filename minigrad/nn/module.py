"""``Module`` and ``Parameter``: containers that find their parameters by attribute assignment.

Assigning a Parameter or a Module to an attribute registers it under that name, so dotted names
(``encoder.layer.0.attention.self.query.weight``) follow the attribute path, exactly as in torch.
That is what lets a HuggingFace checkpoint load key for key.
"""
from __future__ import annotations

from collections import OrderedDict, namedtuple
from typing import Iterator

import numpy as np

from .. import dtypes
from ..autograd import no_grad
from ..backend import resolve
from ..tensor import Tensor, to_args
from .utils import zero_grads_

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Parameter(Tensor):
    """A leaf tensor that a Module registers as trainable (requires_grad=True by default)."""

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True):
        if isinstance(data, Tensor):
            super().__init__(data._data, requires_grad=requires_grad, device=data.device)
        else:
            super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class RemovableHandle:
    """What ``register_forward_hook`` returns (torch.utils.hooks.RemovableHandle): ``remove()``
    takes the hook off; also a context manager that removes it on exit."""

    _next_id = 0

    def __init__(self, hooks: OrderedDict):
        self.hooks, self.id = hooks, RemovableHandle._next_id
        RemovableHandle._next_id += 1

    def remove(self) -> None:
        self.hooks.pop(self.id, None)

    def __enter__(self) -> "RemovableHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


class Module:
    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_forward_hooks", OrderedDict())

    def __setattr__(self, name: str, value) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning "
                                 "attributes")
        if isinstance(value, Parameter):
            table = self._parameters
        elif isinstance(value, Module):
            table = self._modules
        elif name in self._buffers and (value is None or isinstance(value, Tensor)):
            table = self._buffers  # a registered buffer stays one when reassigned, as in torch
        else:
            table = None
        for t in (self._parameters, self._buffers, self._modules):
            if t is not table:
                t.pop(name, None)
        if table is None:
            object.__setattr__(self, name, value)
        else:
            self.__dict__.pop(name, None)  # a plain attribute of that name would shadow the table
            table[name] = value  # an existing key keeps its place: state_dict order stays torch's

    def __getattr__(self, name: str):
        # Only called when normal lookup fails: parameters, buffers and submodules live in tables.
        for table in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(table)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")

    def register_buffer(self, name: str, value: Tensor | None) -> None:
        """A tensor that is part of the state (saved, moved by ``to``) but not trained."""
        self.__dict__.pop(name, None)
        self._buffers[name] = value

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter({name!r}): expected a Parameter or None, got "
                            f"{type(param).__name__}")
        self.__dict__.pop(name, None)
        self._parameters[name] = param

    def add_module(self, name: str, module: "Module | None") -> None:
        self.__dict__.pop(name, None)
        self._modules[name] = module

    register_module = add_module

    def get_submodule(self, target: str) -> "Module":
        """The submodule at a dotted path (``"encoder.layer.0"``); "" is self."""
        mod = self
        for part in target.split(".") if target else ():
            if part not in mod._modules:
                raise AttributeError(f"{type(mod).__name__} has no submodule {part!r} (in {target!r})")
            mod = mod._modules[part]
        return mod

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        out = self.forward(*args, **kwargs)
        for hook in self._forward_hooks.values():  # empty for almost every module: one dict test
            result = hook(self, args, out)
            if result is not None:
                out = result
        return out

    def register_forward_hook(self, hook) -> "RemovableHandle":
        """``hook(module, args, output)`` runs after every ``forward`` (positional args only, as
        torch's default); a non-None return replaces the output. ``.remove()`` the returned handle
        to take it off."""
        handle = RemovableHandle(self._forward_hooks)
        self._forward_hooks[handle.id] = hook
        return handle

    # ---- traversal -----------------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        stack, seen = [(prefix, self)], set()
        while stack:
            name, mod = stack.pop(0)
            if id(mod) in seen:
                continue
            seen.add(id(mod))
            yield name, mod
            stack[0:0] = [(f"{name}.{k}" if name else k, m) for k, m in mod._modules.items()
                          if m is not None]

    def modules(self) -> Iterator["Module"]:
        return (m for _, m in self.named_modules())

    def children(self) -> Iterator["Module"]:
        return (m for _, m in self.named_children())

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, parameter) pairs; a parameter shared by two modules is listed once."""
        seen = set()
        for mod_name, mod in self.named_modules(prefix) if recurse else [(prefix, self)]:
            for k, p in mod._parameters.items():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{mod_name}.{k}" if mod_name else k), p

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        return iter([(k, m) for k, m in self._modules.items() if m is not None])

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        for mod_name, mod in self.named_modules(prefix):
            for k, b in mod._buffers.items():
                if b is not None:
                    yield (f"{mod_name}.{k}" if mod_name else k), b

    def buffers(self) -> Iterator[Tensor]:
        return (b for _, b in self.named_buffers())

    def apply(self, fn) -> "Module":
        """``fn`` on every submodule, children before their parent (torch's order)."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ---- modes and devices ---------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def requires_grad_(self, flag: bool = True) -> "Module":
        for p in self.parameters():
            p.requires_grad_(flag)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        zero_grads_(self.parameters(), set_to_none)

    def to(self, *args, **kwargs) -> "Module":
        """Move every parameter and buffer in place (the same Parameter objects, new arrays), as
        torch's forms: ``to(device)``, ``to(dtype)``, ``to(device, dtype)``, ``to(tensor)`` and the
        ``device=``/``dtype=`` keywords. A dtype applies to floating-point tensors only."""
        device, dtype = to_args(args, kwargs, "Module.to")
        dtype = None if dtype is None else dtypes.canonical(dtype)
        if dtype is not None and dtype.kind != "f":
            raise TypeError(f"Module.to() only accepts floating point dtypes, got {dtype}")
        if device is None and dtype is None:
            return self
        xp, dev = resolve(device) if device is not None else (None, None)
        for t in list(self.parameters()) + [b for _, b in self.named_buffers()]:
            _move_(t, xp, dev, dtype if t.dtype.kind == "f" else None)
            if t.grad is not None:
                _move_(t.grad, xp, dev, dtype)
        return self

    def float(self) -> "Module":
        return self.to(dtypes.float32)

    def double(self) -> "Module":
        return self.to(dtypes.float64)

    def half(self) -> "Module":
        return self.to(dtypes.float16)

    # ---- state ---------------------------------------------------------------------------------
    def _state_tensors(self) -> "OrderedDict[str, Tensor]":
        """Every parameter and buffer by dotted name (a shared one under each of its names)."""
        out = OrderedDict()
        for mod_name, mod in self.named_modules():
            for table in (mod._parameters, mod._buffers):
                for k, t in table.items():
                    if t is not None:
                        out[f"{mod_name}.{k}" if mod_name else k] = t
        return out

    def state_dict(self) -> "OrderedDict[str, Tensor]":
        return OrderedDict((k, t.detach()) for k, t in self._state_tensors().items())

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy arrays (numpy or Tensors) into the parameters of the same names.

        Every problem is collected first and reported together, so a mismatched checkpoint shows
        all its missing, unexpected and wrongly shaped keys at once; nothing is changed then.
        """
        from .state_dict import StateDictFit  # the report shared with mini_bert's loaders

        own = self._state_tensors()
        fit = StateDictFit.of({k: t.shape for k, t in own.items()},
                              {k: tuple(v.shape) if hasattr(v, "shape") else np.shape(v)
                               for k, v in state_dict.items()})
        fit.check("load_state_dict", type(self).__name__, RuntimeError, strict)
        with no_grad():  # in place, as torch: the same storage, so p.data views and optimizers see it
            for k, v in state_dict.items():
                if k in own:
                    own[k].copy_(v if isinstance(v, Tensor) else np.asarray(v))
        return IncompatibleKeys(fit.missing, fit.unexpected)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for k, m in self._modules.items():
            lines.append(f"  ({k}): " + repr(m).replace("\n", "\n  "))
        return "\n".join(lines) + (")" if len(lines) == 1 else "\n)")


def _move_(t: Tensor, xp, dev, dtype) -> None:
    """Move one tensor's storage in place: the object stays, so optimizers keep their references."""
    xp, dev = (xp, dev) if xp is not None else (t._xp, t.device)
    data = t._data if xp is t._xp else t._xp.to_numpy(t._data)
    t._data = xp.array(data, dtype=dtype or t.dtype, device=dev)
    t._xp, t.device = xp, dev


class ModuleList(Module):
    """A list of modules, registered under "0", "1", ... (so their parameters are found)."""

    def __init__(self, modules=()):
        super().__init__()
        self.extend(modules)

    def append(self, m: Module) -> "ModuleList":
        self._modules[str(len(self._modules))] = m
        return self

    def extend(self, modules) -> "ModuleList":
        for m in modules:
            self.append(m)
        return self

    def __getitem__(self, i):
        mods = list(self._modules.values())
        return type(self)(mods[i]) if isinstance(i, slice) else mods[i]

    def __setitem__(self, i: int, m: Module) -> None:
        key = list(self._modules)[i]  # IndexError for a bad index, as a list
        self._modules[key] = m

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class Sequential(ModuleList):
    """Modules called in order, each on the previous one's output."""

    def __init__(self, *modules: Module):
        if len(modules) == 1 and isinstance(modules[0], (OrderedDict, dict)):
            super().__init__()
            for name, m in modules[0].items():  # torch's Sequential(OrderedDict(name=module))
                self.add_module(name, m)
        else:
            super().__init__(modules)

    def __getitem__(self, i):
        mods = list(self._modules.values())
        return Sequential(*mods[i]) if isinstance(i, slice) else mods[i]

    def forward(self, x):
        for m in self:
            x = m(x)
        return x


class ModuleDict(Module):
    """A dict of modules, registered under their keys."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def update(self, modules) -> None:
        for k, m in (modules.items() if hasattr(modules, "items") else modules):
            self[k] = m

    def __getitem__(self, key: str) -> Module:
        return self._modules[key]

    def __setitem__(self, key: str, m: Module) -> None:
        self.add_module(key, m)

    def __delitem__(self, key: str) -> None:
        del self._modules[key]

    def __contains__(self, key: str) -> bool:
        return key in self._modules

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()
