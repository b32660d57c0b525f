"""No hidden host<->device syncs: a train step on torch:cpu reads nothing back from the device.

On a GPU every value read back to the host (``.item()``, ``.cpu()``, ``.numpy()``, ``bool(t)``,
``float(t)``...) makes Python wait until every queued kernel has run, so one such read per op turns an
asynchronous pipeline into a synchronous one. A CPU cannot show the wait, but it can show the read:
while a step runs, every torch.Tensor method that hands a value to the host, and the backend's
``to_numpy``, is counted (with where it was called from). Forward, backward, gradient clipping and
the AdamW step must count zero. The negative tests prove the counter sees each kind of read,
including one planted inside an op.
"""
from __future__ import annotations

import contextlib
import traceback

import numpy as np
import pytest
import torch

import minigrad as mg
from mini_bert.config import BertConfig
from mini_bert.model import BertForSequenceClassification
from minigrad.backend import torch_backend
from minigrad.ops import nn as nn_ops

# Every way a torch tensor's value reaches Python. (Uploads, host -> device, do not block the
# host, so they are not counted: the model uploads its token ids and mask each step, as HF's does.)
_READS = ("item", "cpu", "numpy", "tolist", "__bool__", "__float__", "__int__", "__index__", "__array__")


@contextlib.contextmanager
def count_reads():
    """Yield a list that collects (what, where) for every device -> host read made inside."""
    reads: list[tuple[str, str]] = []
    depth = [0]  # to_numpy calls .cpu().numpy(): count the outermost read only

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            if depth[0] == 0:
                reads.append((name, "".join(traceback.format_stack(limit=4)[:-1])))
            depth[0] += 1
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1
        return wrapper

    saved = {name: torch.Tensor.__dict__.get(name) for name in _READS}
    to_numpy = torch_backend.to_numpy
    try:
        for name in _READS:
            setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))
        torch_backend.to_numpy = counted("to_numpy", to_numpy)
        yield reads
    finally:
        torch_backend.to_numpy = to_numpy
        for name, fn in saved.items():
            if fn is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, fn)


def _model(problem: str):
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, pad_token_id=0,
                        num_labels=1 if problem == "bce" else 3,
                        problem_type="multi_label_classification" if problem == "bce" else None)
    mg.manual_seed(0)
    return BertForSequenceClassification(config).to("torch:cpu").train()


def _batch(rng, problem: str):
    ids = rng.integers(1, 50, (4, 12))
    mask = np.ones_like(ids)
    mask[0, 8:] = 0  # one padded sequence: the additive mask is used
    labels = rng.integers(0, 2, (4, 1)).astype(np.float32) if problem == "bce" else rng.integers(0, 3, 4)
    return ids, mask, labels


def _explain(reads) -> str:
    return "\n".join(f"{what} at\n{where}" for what, where in reads)


@pytest.mark.parametrize("problem", ["ce", "bce"])
def test_train_step_reads_nothing_back_from_the_device(problem):
    model = _model(problem)
    opt = mg.optim.AdamW(model.parameters(), lr=1e-3)
    sched = mg.optim.get_linear_schedule_with_warmup(opt, 1, 10)
    rng = np.random.default_rng(0)
    for _ in range(2):  # the first step also creates the optimizer's state
        ids, mask, labels = _batch(rng, problem)
        phases = {}
        with count_reads() as reads:
            loss = model(ids, attention_mask=mask, labels=labels).loss
        phases["forward"] = list(reads)
        with count_reads() as reads:
            loss.backward()
        phases["backward"] = list(reads)
        with count_reads() as reads:
            norm = mg.nn.utils.clip_grad_norm_(model.parameters(), 0.01)  # small: it does clip
        phases["clip_grad_norm_"] = list(reads)
        with count_reads() as reads:
            opt.step()
            sched.step()
            opt.zero_grad()
        phases["optimizer step"] = list(reads)
        for phase, found in phases.items():
            assert not found, f"{phase} read {len(found)} value(s) back from the device:\n{_explain(found)}"
    # The step did run: a finite loss and norm, read here, outside the counted phases.
    assert np.isfinite(loss.item()) and float(norm) > 0.01
    model.eval()  # inference: no dropout, so attention runs on the fused kernel
    with count_reads() as reads, mg.no_grad():
        logits = model(ids, attention_mask=mask).logits
    assert not reads, f"an eval forward read {len(reads)} value(s) back:\n{_explain(reads)}"
    assert logits.grad_fn is None and np.isfinite(logits.numpy()).all()


@pytest.mark.parametrize("read", [
    lambda x: x.item(), lambda x: x.cpu(), lambda x: x.numpy(), lambda x: x.tolist(),
    lambda x: bool(x > 0), lambda x: float(x), lambda x: int(x), lambda x: [0, 1][x.long()],
    lambda x: np.asarray(x), lambda x: torch_backend.to_numpy(x),
    lambda x: mg.Tensor(x).item(), lambda x: float(mg.Tensor(x)),
], ids=["item", "cpu", "numpy", "tolist", "bool", "float", "int", "index", "asarray", "to_numpy",
        "Tensor.item", "float(Tensor)"])
def test_counter_sees_every_kind_of_read(read):
    x = torch.tensor(0.5).abs()
    with count_reads() as reads:
        read(x)
    assert len(reads) == 1, _explain(reads)
    assert torch.Tensor.item is torch._C.TensorBase.item  # torch's own methods are back


def test_a_read_planted_in_an_op_is_caught(monkeypatch):
    """An ``.item()`` added to the engine (here in Softmax.forward) fails the step test's check."""
    forward = nn_ops.Softmax.forward

    def reading_forward(ctx, x, axis):
        float(x.amax())  # the kind of line this test exists to keep out
        return forward(ctx, x, axis)
    monkeypatch.setattr(nn_ops.Softmax, "forward", staticmethod(reading_forward))
    model = _model("ce")
    ids, mask, labels = _batch(np.random.default_rng(1), "ce")
    with count_reads() as reads:
        model(ids, attention_mask=mask, labels=labels)
    assert len(reads) == model.config.num_hidden_layers  # one softmax per layer
    assert all(what == "__float__" and "reading_forward" in where for what, where in reads)
