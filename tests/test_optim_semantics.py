"""optim behaves as torch's (issue 12): argument checks with torch's messages, param_groups that
lr schedules edit, StepLR/LinearLR, state round trips, closures, and steps that count as in-place
changes. The oracle is torch, run in the test on the same float64 numbers, on both backends."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import minigrad as mg
from test_nn_semantics import BACKENDS, RNG, _close, _pair


# ---- optimizer argument checks ---------------------------------------------------------------------
BAD_ARGS = [("SGD", {"lr": -1.0}), ("SGD", {"lr": 0.1, "momentum": -0.5}),
            ("SGD", {"lr": 0.1, "weight_decay": -1e-2}), ("SGD", {"lr": 0.1, "nesterov": True}),
            ("Adam", {"lr": -1e-3}), ("Adam", {"betas": (1.0, 0.999)}), ("Adam", {"betas": (0.9, -0.1)}),
            ("Adam", {"eps": -1e-8}), ("Adam", {"weight_decay": -0.1}), ("AdamW", {"lr": float("nan")}),
            ("AdamW", {"betas": (0.9, 1.5)})]


@pytest.mark.parametrize("name,kwargs", BAD_ARGS, ids=[f"{n}-{sorted(k.items())}" for n, k in BAD_ARGS])
def test_optimizers_reject_bad_hyperparameters_with_torchs_message(name, kwargs):
    with pytest.raises(ValueError) as theirs:
        getattr(torch.optim, name)([torch.zeros(2, requires_grad=True)], **kwargs)
    with pytest.raises(ValueError) as ours:
        getattr(mg.optim, name)([mg.zeros(2, requires_grad=True)], **kwargs)
    assert str(ours.value) == str(theirs.value)


# ---- optimizer state, param_groups and schedules ---------------------------------------------------
@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("schedule", ["StepLR", "LinearLR", "edit"])
def test_param_group_lr_edits_and_schedules_match_torch(device, schedule):
    """Three AdamW steps with the lr changed between steps by a scheduler or by hand."""
    w0 = RNG.standard_normal((3, 2))
    p, pt = _pair(w0, device)
    opt, opt_t = mg.optim.AdamW([p], lr=0.1), torch.optim.AdamW([pt], lr=0.1)
    kwargs = {"StepLR": dict(step_size=2, gamma=0.5), "LinearLR": dict(start_factor=0.25, total_iters=2)}
    if schedule != "edit":
        sched = getattr(mg.optim.lr_scheduler, schedule)(opt, **kwargs[schedule])
        sched_t = getattr(torch.optim.lr_scheduler, schedule)(opt_t, **kwargs[schedule])
    for step in range(4):
        for q, o in ((p, opt), (pt, opt_t)):
            o.zero_grad()
            (q * q).sum().backward()
            o.step()
        if schedule == "edit":
            opt.param_groups[0]["lr"] = opt_t.param_groups[0]["lr"] = 0.1 / (step + 2)
        else:
            sched.step()
            sched_t.step()
            assert sched.get_last_lr() == pytest.approx(sched_t.get_last_lr(), rel=1e-12)
        _close(p, pt)
    # The state round-trips: a fresh optimizer loaded from it takes the same next step.
    fresh = mg.optim.AdamW([p], lr=0.1)
    fresh.load_state_dict(opt.state_dict())
    assert fresh.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    for q, o in ((p, fresh), (pt, opt_t)):
        o.zero_grad()
        (q * q).sum().backward()
        o.step()
    _close(p, pt)


def test_add_param_group_and_step_closure():
    a, b = mg.zeros(2, requires_grad=True), mg.zeros(3, requires_grad=True)
    opt = mg.optim.SGD([a], lr=1.0)
    opt.add_param_group({"params": [b], "lr": 0.5})
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [a]})

    def closure():
        opt.zero_grad()
        loss = (a.sum() - 1) ** 2 + (b.sum() + 1) ** 2
        loss.backward()
        return loss

    assert opt.step(closure).item() == 2.0
    np.testing.assert_allclose(a.numpy(), [2.0, 2.0])  # a -= 1.0 * 2(sum a - 1)
    np.testing.assert_allclose(b.numpy(), [-1.0, -1.0, -1.0])  # b -= 0.5 * 2(sum b + 1)


def test_adamw_accepts_nanogpts_arguments():
    groups = [{"params": [mg.zeros(2, requires_grad=True)], "weight_decay": 0.1},
              {"params": [mg.zeros(3, requires_grad=True)], "weight_decay": 0.0}]
    opt = mg.optim.AdamW(groups, lr=6e-4, betas=(0.9, 0.95), fused=False)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


@pytest.mark.parametrize("device", BACKENDS)
def test_backward_through_a_graph_saved_before_step_raises_as_torch(device):
    """step() changes the parameters in place; a backward that needs their old values must fail
    (torch's version-counter error) rather than compute a gradient from the new ones."""
    for opt_ns, w in ((mg.optim, mg.ones(3, requires_grad=True, device=device)),
                      (torch.optim, torch.ones(3, requires_grad=True))):
        opt = opt_ns.SGD([w], lr=0.1)
        first = (w * w).sum()  # Mul saves w
        (w * 2).sum().backward()
        opt.step()
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            first.backward()
