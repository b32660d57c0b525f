"""``minigrad.profile``: FLOPs agree with torch's own flop counter, both phases are recorded, the
numbers add up, each op's FLOP facts live on its class, and a profile sees only its own thread."""
from __future__ import annotations

import threading

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


def _hook():
    return getattr(autograd._state, "profiler", None)


def test_hook_is_none_outside_a_profile_and_restored_when_nested():
    assert autograd._profiling == 0 and _hook() is None  # the engine's only check per op
    with mg.profile() as outer:
        assert _hook() is outer and autograd._profiling == 1
        with mg.profile() as inner:
            assert _hook() is inner
            mg.tensor([1.0], requires_grad=True) * 2
        assert _hook() is outer
    assert autograd._profiling == 0 and _hook() is None
    before = dict(inner.stats)
    mg.tensor([1.0], requires_grad=True) * 2  # after the block: nothing more is recorded
    assert inner.stats == before and ("Mul", "forward") in before
    assert ("Mul", "forward") not in outer.stats  # the inner profile had the op, not the outer


def test_a_profile_sees_only_its_own_threads_ops():
    """Grad mode is per thread, and so is the profiler: another thread's work is not billed."""
    started, finish = threading.Event(), threading.Event()
    seen = {}

    def worker():
        with mg.profile() as prof:
            started.set()
            finish.wait(5)
            (mg.tensor([1.0, 2.0], requires_grad=True).exp()).sum().backward()
        seen["worker"] = prof

    thread = threading.Thread(target=worker)
    thread.start()
    started.wait(5)
    with mg.profile() as main:
        assert autograd._profiling == 2
        (mg.tensor([1.0], requires_grad=True) * 3).sum().backward()
        finish.set()
        thread.join(5)
    assert autograd._profiling == 0
    assert {op for op, _ in main.stats} == {"Mul", "Sum"}
    assert {op for op, _ in seen["worker"].stats} == {"Exp", "Sum"}


def test_flop_facts_live_on_the_op_class():
    """A renamed op (a subclass under another name) keeps its count: nothing looks names up."""
    from minigrad.ops.matmul import MatMul
    from minigrad.ops.nn import Softmax

    class RenamedMatMul(MatMul):
        pass

    class RenamedSoftmax(Softmax):
        pass

    a = mg.randn(4, 5, requires_grad=True)
    b = mg.randn(5, 3, requires_grad=True)
    with mg.profile() as prof:
        RenamedMatMul.apply(a, b).sum().backward()
        RenamedSoftmax.apply(a, 1).sum().backward()
    assert prof.stats[("RenamedMatMul", "forward")].flops == 2 * 4 * 3 * 5
    assert prof.stats[("RenamedMatMul", "backward")].flops == 2 * (2 * 4 * 3 * 5)
    assert prof.stats[("RenamedSoftmax", "forward")].flops == Softmax.flops_per_element * 20 > 0


def test_to_copy_is_profiled_and_its_gradient_flows_back():
    x = mg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with mg.profile() as prof:
        y = x.to("torch:cpu")
        (y * y).sum().backward()
    assert prof.stats[("ToCopy", "forward")].calls == 1
    assert prof.stats[("ToCopy", "backward")].calls == 1
    assert prof.stats[("ToCopy", "forward")].flops == 0  # it only moves data
    assert y.grad_fn.name() == "ToCopyBackward" and x.grad.device == "cpu"
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0, 6.0])


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
