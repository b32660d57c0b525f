"""copy.deepcopy and pickle of tensors and modules, as torch does them.

The Annotated Transformer builds its N encoder layers with ``copy.deepcopy(layer)``; a saved
optimizer or dataset may pickle tensors. torch's rules are the oracle: only leaves deep-copy, the
copy owns its storage, Parameters stay Parameters, ``.grad`` is copied, shared tensors stay shared.
"""
from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch

import minigrad as mg


def _build(ns, device=None):
    ns.manual_seed(0)
    lin = ns.nn.Linear(3, 3)
    model = ns.nn.Sequential(lin, ns.nn.ReLU(), lin)  # one layer used twice: sharing must survive
    return model.to(device) if device else model


def test_deepcopy_module_matches_torch(device):
    ours, theirs = _build(mg, device), _build(torch)
    for net in (ours, theirs):
        net[0].weight.grad = net[0].weight.detach() * 2
    ours2, theirs2 = copy.deepcopy(ours), copy.deepcopy(theirs)
    for a, b, a2, b2 in zip(ours.parameters(), theirs.parameters(), ours2.parameters(), theirs2.parameters()):
        assert type(a2).__name__ == type(b2).__name__ == "Parameter"
        assert a2.requires_grad == b2.requires_grad
        assert a2.device == a.device
        assert not np.shares_memory(a2.numpy(), a.numpy())  # the copy owns its storage
        np.testing.assert_array_equal(a2.numpy(), a.numpy())
    assert (ours2[0] is ours2[2]) == (theirs2[0] is theirs2[2]) is True
    np.testing.assert_array_equal(ours2[0].weight.grad.numpy(), ours[0].weight.grad.numpy())
    with mg.no_grad():
        ours2[0].weight.zero_()
    assert float(ours[0].weight.abs().sum()) > 0  # the original is untouched


def test_deepcopy_of_a_non_leaf_is_refused_like_torch(device):
    for ns, dev in ((mg, device), (torch, "cpu")):
        x = ns.ones(2, requires_grad=True, device=dev) if ns is torch else mg.ones(2, requires_grad=True).to(dev)
        with pytest.raises(RuntimeError, match="graph leaves"):
            copy.deepcopy(x * 2)


def test_pickle_round_trip(device):
    model = _build(mg, device)
    back = pickle.loads(pickle.dumps(model))
    for a, b in zip(model.parameters(), back.parameters()):
        assert type(b) is type(a) and b.device == a.device and b.dtype == a.dtype and b.requires_grad
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    x = mg.randn(4, 3).to(device)
    np.testing.assert_array_equal(model(x).detach().numpy(), back(x).detach().numpy())
