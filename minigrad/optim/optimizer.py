"""The optimizer base: parameter groups, ``zero_grad`` and a state that can be saved and resumed."""
from __future__ import annotations

from typing import Iterable

import numpy as np

from ..autograd import enable_grad, no_grad
from ..backend import backend_of_array
from ..nn.utils import zero_grads_
from ..tensor import Tensor


def check_hyperparameters(lr: float, eps: float | None = None, betas=None, weight_decay: float = 0.0,
                          momentum: float = 0.0) -> None:
    """torch's argument checks, with torch's messages: a negative lr, eps, weight decay or momentum,
    or a beta outside [0, 1), is a ValueError naming the argument, not a silently odd run."""
    if not lr >= 0.0:  # ``not >=`` also rejects NaN
        raise ValueError(f"Invalid learning rate: {lr}")
    if eps is not None and not eps >= 0.0:
        raise ValueError(f"Invalid epsilon value: {eps}")
    for i, beta in enumerate(betas or ()):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
    if not weight_decay >= 0.0:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")
    if not momentum >= 0.0:
        raise ValueError(f"Invalid momentum value: {momentum}")


def _host(array) -> np.ndarray:
    """A raw backend array as numpy (np.asarray cannot read a CUDA tensor)."""
    return np.asarray(backend_of_array(array)[0].to_numpy(array))


class Optimizer:
    """Holds ``param_groups`` (lists of parameters with their own hyper-parameters) and a per-parameter
    ``state``. Subclasses implement ``_update(p, grad, state, group)`` on raw arrays, in place, or
    ``_step_group`` to update a whole group at once."""

    def __init__(self, params: Iterable, defaults: dict):
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        self.defaults = defaults
        self.param_groups: list[dict] = []
        for g in params if isinstance(params[0], dict) else [{"params": params}]:
            self.add_param_group(g)
        self.state: dict[int, dict] = {}
        self._devices: dict[int, str] = {}  # where each parameter's state arrays live

    def zero_grad(self, set_to_none: bool = True) -> None:
        zero_grads_(self._params(), set_to_none)

    def add_param_group(self, group: dict) -> None:
        """A group of parameters with its own hyper-parameters (the defaults fill the rest)."""
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        group = {**self.defaults, **group, "params": params}
        group.setdefault("initial_lr", group["lr"])
        self.param_groups.append(group)

    def step(self, closure=None):
        """One update of every parameter that has a gradient; ``closure`` (torch's) recomputes and
        returns the loss first."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        with no_grad():
            for index, group in enumerate(self.param_groups):
                params = [p for p in group["params"] if p.grad is not None]
                self._step_group(index, group, params)
                for p in params:
                    p._vc[0] += 1  # an in-place change: a graph that saved p must not reuse it
        return loss

    def _step_group(self, index: int, group: dict, params: list) -> None:
        """Update the parameters of group ``index`` that have a gradient: one at a time through
        ``_update`` here; an optimizer with a multi-tensor path overrides this."""
        for p in params:
            self._update(p, p.grad._data, self._state_for(p), group)

    def _state_for(self, p: Tensor) -> dict:
        """p's state, moved to p's device first if ``Module.to`` moved p since the last step:
        the optimizer state follows its parameters."""
        state = self.state.setdefault(id(p), {})
        if state and self._devices.get(id(p), p.device) != p.device:
            for k, v in state.items():
                if hasattr(v, "shape") and getattr(v, "ndim", 0):
                    state[k] = p._xp.array(_host(v), dtype=p.dtype, device=p.device)
        self._devices[id(p)] = p.device
        return state

    def _update(self, p: Tensor, grad, state: dict, group: dict) -> None:
        raise NotImplementedError

    # ---- saving and resuming -------------------------------------------------------------------
    def _params(self) -> list:
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self) -> dict:
        """State keyed by parameter position (as torch), arrays as numpy so it saves anywhere."""
        index = {id(p): i for i, p in enumerate(self._params())}
        state = {index[k]: {n: (_host(v) if hasattr(v, "shape") else v) for n, v in s.items()}
                 for k, s in self.state.items() if k in index}
        groups, start = [], 0
        for g in self.param_groups:
            groups.append({**{k: v for k, v in g.items() if k != "params"},
                           "params": list(range(start, start + len(g["params"])))})
            start += len(g["params"])
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd: dict) -> None:
        params = self._params()
        if len(sd["param_groups"]) != len(self.param_groups):
            raise ValueError(f"optimizer state has {len(sd['param_groups'])} parameter groups, "
                             f"this optimizer has {len(self.param_groups)}")
        for g, saved in zip(self.param_groups, sd["param_groups"]):
            g.update({k: v for k, v in saved.items() if k != "params"})
        self.state = {}
        for i, s in sd["state"].items():
            p = params[int(i)]
            self.state[id(p)] = {n: (p._xp.array(v, dtype=p.dtype, device=p.device)
                                     if isinstance(v, np.ndarray) and v.ndim else
                                     v.item() if isinstance(v, np.ndarray) else v)
                                 for n, v in s.items()}
