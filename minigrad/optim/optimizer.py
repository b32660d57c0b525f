"""The optimizer base: parameter groups, ``zero_grad`` and a state that can be saved and resumed."""
from __future__ import annotations

from typing import Iterable

import numpy as np

from ..autograd import no_grad
from ..backend import backend_of_array
from ..tensor import Tensor


def _host(array) -> np.ndarray:
    """A raw backend array as numpy (np.asarray cannot read a CUDA tensor)."""
    return np.asarray(backend_of_array(array)[0].to_numpy(array))


class Optimizer:
    """Holds ``param_groups`` (lists of parameters with their own hyper-parameters) and a per-parameter
    ``state``. Subclasses implement ``_update(p, grad, state, group)`` on raw arrays, in place."""

    def __init__(self, params: Iterable, defaults: dict):
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = defaults
        self.param_groups = []
        for g in groups:
            group = {**defaults, **g, "params": list(g["params"])}
            group.setdefault("initial_lr", group["lr"])
            self.param_groups.append(group)
        self.state: dict[int, dict] = {}
        self._devices: dict[int, str] = {}  # where each parameter's state arrays live

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad._data = p._xp.zeros(p.shape, p.dtype, p.device)

    def step(self) -> None:
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
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
        state = {index[k]: {n: (v.numpy() if isinstance(v, Tensor) else
                                _host(v) if hasattr(v, "shape") else v) for n, v in s.items()}
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
