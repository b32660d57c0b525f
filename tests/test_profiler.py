"""``minigrad.profile``: FLOPs agree with torch's own flop counter, both phases are recorded, the
numbers add up, and without a profiler the engine's hook is simply None."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import minigrad as mg
import minigrad.nn.functional as F
from minigrad import autograd

from conftest import DEVICES

# (a shape, b shape): plain, batched, and a batch against a shared 2-D weight (broadcast).
MATMUL_SHAPES = [((5, 7), (7, 3)), ((4, 5, 7), (4, 7, 3)), ((2, 5, 7), (7, 3))]


def _pair(a_shape, b_shape, device, requires_grad=True):
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(s).astype(np.float32) for s in (a_shape, b_shape))
    mine = [mg.tensor(v, requires_grad=requires_grad, device=device) for v in (a, b)]
    ref = [torch.tensor(v, requires_grad=requires_grad) for v in (a, b)]
    return mine, ref


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("a_shape,b_shape", MATMUL_SHAPES)
def test_matmul_flops_are_2mnk_as_torch_counts(device, a_shape, b_shape):
    (a, b), (ta, tb) = _pair(a_shape, b_shape, device)
    with mg.profile() as prof:
        (a @ b).sum().backward()
    counter = FlopCounterMode(display=False)
    with counter:
        out = ta @ tb
    torch_forward = counter.get_total_flops()
    with counter:  # the counter restarts on entry: this counts the backward only
        out.sum().backward()
    torch_backward = counter.get_total_flops()

    *batch, m, k = a_shape
    n = b_shape[-1]
    assert prof.stats[("MatMul", "forward")].flops == 2 * m * n * k * int(np.prod(batch))
    assert prof.stats[("MatMul", "forward")].flops == torch_forward
    assert prof.stats[("MatMul", "backward")].flops == torch_backward  # dA and dB: 2 matmuls


def test_linear_flops_match_torch():
    rng = np.random.default_rng(1)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((6, 4, 8), (5, 8), (5,)))
    with mg.profile() as prof:
        F.linear(mg.tensor(x), mg.tensor(w, requires_grad=True), mg.tensor(b, requires_grad=True))
    counter = FlopCounterMode(display=False)
    with counter:
        torch.nn.functional.linear(torch.tensor(x), torch.tensor(w), torch.tensor(b))
    assert prof.stats[("Linear", "forward")].flops == counter.get_total_flops()


def test_bytes_are_inputs_plus_output():
    (a, b), _ = _pair((5, 7), (7, 3), "cpu", requires_grad=False)
    with mg.profile() as prof:
        out = a @ b
    expected = a.numpy().nbytes + b.numpy().nbytes + out.numpy().nbytes
    assert prof.stats[("MatMul", "forward")].bytes == expected


def test_forward_and_backward_recorded_with_counts_and_times():
    mg.manual_seed(0)
    model = mg.nn.Sequential(mg.nn.Linear(8, 16), mg.nn.GELU(), mg.nn.Linear(16, 3))
    x, y = mg.randn(10, 8), mg.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    steps = 3
    with mg.profile() as prof:
        for _ in range(steps):
            model.zero_grad()
            F.cross_entropy(model(x), y).backward()
    for op, per_step in (("Linear", 2), ("Gelu", 1), ("CrossEntropy", 1)):
        for phase in ("forward", "backward"):
            row = prof.stats[(op, phase)]
            assert row.calls == per_step * steps, (op, phase)
            assert row.seconds > 0 and row.bytes > 0
    totals = prof.totals()
    for phase in ("forward", "backward"):
        rows = [s for (_, p), s in prof.stats.items() if p == phase]
        assert totals[phase].calls == sum(s.calls for s in rows)
        assert totals[phase].flops == sum(s.flops for s in rows)
    assert totals["all"].seconds == pytest.approx(totals["forward"].seconds + totals["backward"].seconds)
    assert 0 < totals["all"].seconds <= prof.wall_seconds


def test_profiling_does_not_change_results():
    def run():
        mg.manual_seed(0)
        lin = mg.nn.Linear(4, 3)
        out = (lin(mg.randn(2, 4)).tanh() * 2).sum()
        out.backward()
        return out.item(), lin.weight.grad.numpy()

    plain = run()
    with mg.profile():
        profiled = run()
    assert plain[0] == profiled[0]
    np.testing.assert_array_equal(plain[1], profiled[1])


def test_hook_is_none_outside_a_profile_and_restored_when_nested():
    assert autograd._profiler is None  # the engine's only check: nothing is called per op
    with mg.profile() as outer:
        assert autograd._profiler is outer
        with mg.profile() as inner:
            assert autograd._profiler is inner
            mg.tensor([1.0], requires_grad=True) * 2
        assert autograd._profiler is outer
    assert autograd._profiler is None
    before = dict(inner.stats)
    mg.tensor([1.0], requires_grad=True) * 2  # after the block: nothing more is recorded
    assert inner.stats == before and ("Mul", "forward") in before
    assert ("Mul", "forward") not in outer.stats  # the inner profile had the op, not the outer


def test_table_sorted_by_time_and_plot_writes_png(tmp_path):
    (a, b), _ = _pair((64, 64), (64, 64), "cpu")
    with mg.profile() as prof:
        ((a @ b).tanh() + 1).sum().backward()
    text = str(prof)
    assert text == prof.table()
    times = [s.seconds for _, _, s in prof.rows()]
    assert times == sorted(times, reverse=True)
    for op in ("MatMul", "Tanh", "Add", "Sum"):
        assert op in text
    path = tmp_path / "profile.png"
    prof.plot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
