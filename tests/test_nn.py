"""Module machinery: parameter names, state_dict / load_state_dict, train/eval, moving devices.

The oracle for names and load_state_dict's key bookkeeping is the same architecture built in
torch.nn: HuggingFace checkpoints load key for key only if our dotted names are torch's.
"""
import numpy as np
import pytest
import torch

import minigrad as mg
from conftest import REDUCTION, assert_close, randn

nn = mg.nn


def _build(lib):
    """The same little network in minigrad (lib=mg.nn) or torch (lib=torch.nn): nested modules,
    a ModuleList, a Sequential, a bias-free Linear, a LayerNorm, and a weight tied to another."""

    class Block(lib.Module):
        def __init__(self):
            super().__init__()
            self.attn = lib.Linear(4, 4)
            self.norm = lib.LayerNorm(4)
            self.layers = lib.ModuleList([lib.Linear(4, 4), lib.Linear(4, 4, bias=False)])

        def forward(self, x):
            h = self.norm(x + self.attn(x))
            for layer in self.layers:
                h = layer(h).tanh()
            return h

    class Net(lib.Module):
        def __init__(self):
            super().__init__()
            self.embed = lib.Embedding(10, 4)
            self.blocks = lib.Sequential(Block(), Block())
            self.drop = lib.Dropout(0.1)
            self.head = lib.Linear(4, 10)
            self.head.weight = self.embed.weight  # tied, as BERT's decoder is

        def forward(self, ids):
            return self.head(self.drop(self.blocks(self.embed(ids))))

    return Net()


def _copy_into_torch(model, ref):
    ref.load_state_dict({k: torch.tensor(v.numpy()) for k, v in model.state_dict().items()})


def test_named_parameters_match_torch():
    """Dotted names in torch's order; the tied weight is listed once, under its first name."""
    ours = [(k, p.shape) for k, p in _build(nn).named_parameters()]
    theirs = [(k, tuple(p.shape)) for k, p in _build(torch.nn).named_parameters()]
    assert ours == theirs
    assert "blocks.1.layers.0.weight" in dict(ours)


def test_state_dict_keys_match_torch_and_forward_matches(device):
    model, ref = _build(nn), _build(torch.nn)
    assert list(model.state_dict()) == list(ref.state_dict())
    _copy_into_torch(model, ref)
    model.to(device).eval()
    ref.eval()
    ids = np.array([[1, 5, 5, 0], [9, 2, 3, 3]])
    assert_close(model(mg.tensor(ids, device=device)), ref(torch.tensor(ids)), **REDUCTION)


def test_load_state_dict_round_trip_into_a_fresh_model():
    mg.manual_seed(0)
    a = _build(nn)
    mg.manual_seed(1)
    b = _build(nn)
    result = b.load_state_dict(a.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    for (k, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(pa.numpy(), pb.numpy(), err_msg=k)


def test_load_state_dict_reports_every_problem_at_once_and_changes_nothing():
    model = _build(nn)
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    bad = {k: v.numpy() + 1 for k, v in model.state_dict().items()}
    del bad["blocks.0.norm.bias"], bad["head.bias"]                   # missing
    bad["blocks.9.extra"] = np.zeros(3)                               # unexpected
    bad["pooler.dense.weight"] = np.zeros((4, 4))                     # unexpected
    bad["blocks.1.attn.weight"] = np.zeros((4, 5))                    # wrong shape
    with pytest.raises(RuntimeError) as info:
        model.load_state_dict(bad)
    msg = str(info.value)
    for key in ("blocks.0.norm.bias", "head.bias", "blocks.9.extra", "pooler.dense.weight",
                "blocks.1.attn.weight"):
        assert key in msg
    assert "(4, 5)" in msg and "(4, 4)" in msg
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k], err_msg=f"{k} changed")


def test_load_state_dict_non_strict_reports_keys_as_torch_does():
    model, ref = _build(nn), _build(torch.nn)
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    del sd["blocks.0.attn.bias"]
    sd["extra.weight"] = np.zeros(2)
    ours = model.load_state_dict(sd, strict=False)
    theirs = ref.load_state_dict({k: torch.tensor(v) for k, v in sd.items()}, strict=False)
    assert sorted(ours.missing_keys) == sorted(theirs.missing_keys)
    assert sorted(ours.unexpected_keys) == sorted(theirs.unexpected_keys)
    np.testing.assert_array_equal(model.blocks[1].attn.weight.numpy(),
                                  sd["blocks.1.attn.weight"])  # the matching keys were loaded


def test_load_state_dict_shape_mismatch_raises_even_non_strict():
    model = nn.Linear(3, 2)
    with pytest.raises(RuntimeError, match=r"weight: checkpoint \(3, 3\) vs model \(2, 3\)"):
        model.load_state_dict({"weight": np.zeros((3, 3))}, strict=False)


def test_train_eval_reach_every_submodule():
    model = _build(nn)
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    model.blocks.train()
    assert model.blocks[0].layers[1].training and not model.training


def test_module_to_torch_and_back_keeps_parameter_objects():
    """Optimizers hold Parameter objects: to() must move data under them, never replace them."""
    mg.manual_seed(0)
    model = _build(nn)
    ids = mg.tensor([[1, 2, 3]])
    params = dict(model.named_parameters())
    values = {k: p.numpy().copy() for k, p in params.items()}
    model.eval()
    out_cpu = model(ids).numpy()
    model(ids).sum().backward()
    grads = {k: p.grad.numpy().copy() for k, p in params.items()}

    model.to("torch:cpu")
    for k, p in model.named_parameters():
        assert p is params[k] and p.device == "torch:cpu" and p.grad.device == "torch:cpu"
        assert isinstance(p._data, torch.Tensor) and not p._data.requires_grad
        np.testing.assert_array_equal(p.numpy(), values[k])
        np.testing.assert_array_equal(p.grad.numpy(), grads[k])
    # Same float32 computation on another backend: elementwise-level agreement after a few layers.
    assert_close(model(ids.to("torch:cpu")), out_cpu, **REDUCTION)

    model.to("cpu")
    assert all(p.device == "cpu" and isinstance(p._data, np.ndarray) for p in model.parameters())
    np.testing.assert_array_equal(model(ids).numpy(), out_cpu)


def test_module_to_dtype_and_buffers():
    model = nn.Linear(3, 2)
    model.register_buffer("scale", mg.tensor([2.0]))
    model.register_buffer("ids", mg.tensor([1, 2]))
    assert "scale" in model.state_dict() and "ids" in model.state_dict()
    model.to("torch:cpu", dtype=mg.float64)
    assert model.weight.dtype == np.float64 and model.scale.dtype == np.float64
    assert model.ids.dtype == np.int64 and model.ids.device == "torch:cpu"  # ints keep their dtype


def test_zero_grad_and_requires_grad():
    model = nn.Linear(3, 2)
    model(mg.ones(1, 3)).sum().backward()
    model.zero_grad(set_to_none=False)  # as torch: zeros, kept
    assert all(p.grad is not None and not p.grad.numpy().any() for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    model.requires_grad_(False)
    assert not model(mg.ones(1, 3)).requires_grad


def test_parameter_and_registration_rules():
    lin = nn.Linear(2, 2, bias=False)
    assert lin.bias is None and [k for k, _ in lin.named_parameters()] == ["weight"]
    p = nn.Parameter(np.ones(3, np.float32))
    assert p.requires_grad and p.is_leaf
    lin.weight = nn.Parameter(np.zeros((2, 2), np.float32))  # reassigning replaces, not duplicates
    assert len(list(lin.parameters())) == 1 and not lin.weight.numpy().any()
    lin.bias = nn.Parameter(np.ones(2, np.float32))  # was a plain None attribute: must not shadow
    assert lin.bias is dict(lin.named_parameters())["bias"]
    lin.register_buffer("mask", mg.zeros(2))
    lin.mask = mg.ones(2)  # reassigning a buffer keeps it in the state, as in torch
    assert lin.state_dict()["mask"].numpy().all()

    class Forgot(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.ones(1, np.float32))

    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Forgot()


def test_sequential_and_module_list(device):
    seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.Tanh()).to(device)
    ref = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2),
                              torch.nn.Tanh())
    _copy_into_torch(seq, ref)
    x = randn(0, (5, 3)).astype(np.float32)
    assert_close(seq(mg.tensor(x, device=device)), ref(torch.tensor(x)), **REDUCTION)
    assert len(seq) == 4 and isinstance(seq[1], nn.ReLU)
