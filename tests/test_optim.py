"""Optimizers, schedules and gradient clipping against torch.optim / transformers / torch.nn.utils.

Both sides start from the same parameters and receive the same gradients at every step (a fixed
random sequence, some steps leaving a parameter without a gradient), so only the update rules
are compared. Tolerance: 20 float32 steps, each rounding by a few ulp and computed in a
different order than torch's fused kernels (torch's lerp vs our m·β + (1-β)·g), drift by
~1e-6 relative; rtol=1e-5/atol=1e-6 keeps a 10x margin while a wrong formula is off by >1e-3.
"""
import numpy as np
import pytest
import torch
import transformers

import minigrad as mg
from conftest import as_numpy, assert_close

STEPS = 20
TOL = dict(rtol=1e-5, atol=1e-6)
SHAPES = [(3, 4), (4,), (2, 2, 2)]


def _params(device):
    init = [np.random.default_rng(i).standard_normal(s).astype(np.float32)
            for i, s in enumerate(SHAPES)]
    return ([mg.nn.Parameter(mg.tensor(a, device=device)) for a in init],
            [torch.nn.Parameter(torch.tensor(a)) for a in init])


def _grads(step):
    """The gradients of one step; the last parameter gets none on every 5th step (skipped)."""
    rng = np.random.default_rng(1000 + step)
    grads = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    if step % 5 == 4:
        grads[-1] = None
    return grads


def _set_grads(params, grads, device=None):
    for p, g in zip(params, grads):
        if isinstance(p, torch.Tensor):
            p.grad = None if g is None else torch.tensor(g)
        else:
            p.grad = None if g is None else mg.tensor(g, device=device)


def _run(ours, theirs, mg_params, th_params, device, steps=range(STEPS)):
    for step in steps:
        grads = _grads(step)
        _set_grads(mg_params, grads, device)
        _set_grads(th_params, grads)
        ours.step()
        theirs.step()
        for k, (a, b) in enumerate(zip(mg_params, th_params)):
            assert_close(a, b, **TOL, what=f"step {step}, parameter {k}")


OPTIMIZERS = {
    "sgd": lambda lib, ps: lib.SGD(ps, lr=0.1),
    "sgd_momentum": lambda lib, ps: lib.SGD(ps, lr=0.05, momentum=0.9),
    "sgd_nesterov": lambda lib, ps: lib.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
    "sgd_dampening_wd": lambda lib, ps: lib.SGD(ps, lr=0.05, momentum=0.8, dampening=0.3,
                                                weight_decay=0.1),
    "adam": lambda lib, ps: lib.Adam(ps, lr=0.01),
    "adam_betas_wd": lambda lib, ps: lib.Adam(ps, lr=0.02, betas=(0.8, 0.99), eps=1e-6,
                                              weight_decay=0.1),
    "adamw": lambda lib, ps: lib.AdamW(ps, lr=0.01),  # torch's default weight_decay, 1e-2
    "adamw_wd": lambda lib, ps: lib.AdamW(ps, lr=0.01, weight_decay=0.3),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_matches_torch_over_20_steps(name, device):
    mg_params, th_params = _params(device)
    make = OPTIMIZERS[name]
    _run(make(mg.optim, mg_params), make(torch.optim, th_params), mg_params, th_params, device)


@pytest.mark.parametrize("lib_name", ["SGD", "Adam", "AdamW"])
def test_param_groups_match_torch(lib_name, device):
    """Each group has its own hyper-parameters; unset ones come from the defaults."""
    mg_params, th_params = _params(device)

    def make(lib, ps):
        extra = dict(momentum=0.9) if lib_name == "SGD" else {}
        return getattr(lib, lib_name)([{"params": ps[:1], "lr": 0.1},
                                       {"params": ps[1:], "weight_decay": 0.2}], lr=0.01, **extra)

    ours, theirs = make(mg.optim, mg_params), make(torch.optim, th_params)
    assert [g["lr"] for g in ours.param_groups] == [g["lr"] for g in theirs.param_groups]
    _run(ours, theirs, mg_params, th_params, device)


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad_matches_torch(set_to_none):
    mg_params, th_params = _params("cpu")
    ours, theirs = mg.optim.SGD(mg_params, lr=0.1), torch.optim.SGD(th_params, lr=0.1)
    _set_grads(mg_params, _grads(0))
    _set_grads(th_params, _grads(0))
    ours.zero_grad(set_to_none=set_to_none)
    theirs.zero_grad(set_to_none=set_to_none)
    for a, b in zip(mg_params, th_params):
        assert (a.grad is None) == (b.grad is None)
        if b.grad is not None:
            assert_close(a.grad, b.grad, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["sgd_nesterov", "adam_betas_wd", "adamw_wd"])
def test_state_dict_round_trip_resumes_exactly(name, device):
    """10 steps, save, load into a fresh optimizer over fresh parameters, 10 more steps: the
    result equals torch's uninterrupted 20 steps (so the momentum/moment buffers and step counts
    survived), and loading copies the state: the old optimizer moving on changes nothing."""
    make = OPTIMIZERS[name]
    mg_params, th_params = _params(device)
    first, theirs = make(mg.optim, mg_params), make(torch.optim, th_params)
    _run(first, theirs, mg_params, th_params, device, steps=range(10))

    saved = first.state_dict()
    assert all(isinstance(v, np.ndarray) for s in saved["state"].values() for v in s.values()
               if hasattr(v, "shape"))
    resumed_params = [mg.nn.Parameter(mg.tensor(p.numpy(), device=device)) for p in mg_params]
    resumed = make(mg.optim, resumed_params)
    resumed.load_state_dict(saved)
    first.step()  # the old optimizer moving on must not leak into the loaded state
    _run(resumed, theirs, resumed_params, th_params, device, steps=range(10, STEPS))


def test_load_state_dict_rejects_wrong_group_count():
    mg_params, _ = _params("cpu")
    one = mg.optim.SGD(mg_params, lr=0.1)
    two = mg.optim.SGD([{"params": mg_params[:1]}, {"params": mg_params[1:]}], lr=0.1)
    with pytest.raises(ValueError, match="2 parameter groups.*has 1"):
        one.load_state_dict(two.state_dict())


def test_empty_parameter_list_is_a_clear_error():
    with pytest.raises(ValueError, match="empty parameter list"):
        mg.optim.Adam([])


# ---- learning-rate schedules ---------------------------------------------------------------------
def _schedules(make_ours, make_theirs, steps=30):
    """Learning rates of every group, step by step, from our scheduler and from the reference."""
    mg_params, th_params = _params("cpu")
    groups = lambda ps: [{"params": ps[:1], "lr": 0.1}, {"params": ps[1:]}]  # noqa: E731
    ours = make_ours(mg.optim.SGD(groups(mg_params), lr=0.01))
    opt = torch.optim.SGD(groups(th_params), lr=0.01)
    theirs = make_theirs(opt)
    got, expected = [ours.get_last_lr()], [theirs.get_last_lr()]
    for _ in range(steps):
        opt.step()  # torch warns if the schedule steps before the optimizer
        ours.step()
        theirs.step()
        got.append(ours.get_last_lr())
        expected.append(theirs.get_last_lr())
    return np.array(got), np.array(expected)


def test_lambda_lr_matches_torch():
    fn = lambda step: 0.9 ** step / (1 + step % 3)  # noqa: E731
    got, expected = _schedules(lambda o: mg.optim.LambdaLR(o, fn),
                               lambda o: torch.optim.lr_scheduler.LambdaLR(o, fn))
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("warmup,total", [(5, 25), (0, 30), (10, 10)])
def test_linear_warmup_matches_transformers(warmup, total):
    """Warm-up from 0, linear decay to exactly 0 at ``total``, 0 afterwards (30 steps > total)."""
    got, expected = _schedules(
        lambda o: mg.optim.get_linear_schedule_with_warmup(o, warmup, total),
        lambda o: transformers.get_linear_schedule_with_warmup(o, warmup, total))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert got[-1].max() == 0.0


def test_scheduler_state_dict_resumes():
    mg_params, _ = _params("cpu")
    opt = mg.optim.SGD(mg_params, lr=0.1)
    sched = mg.optim.get_linear_schedule_with_warmup(opt, 3, 10)
    for _ in range(4):
        sched.step()
    opt2 = mg.optim.SGD(mg_params, lr=0.1)
    sched2 = mg.optim.get_linear_schedule_with_warmup(opt2, 3, 10)
    sched2.load_state_dict(sched.state_dict())
    assert sched2.get_last_lr() == sched.get_last_lr()
    sched.step()
    sched2.step()
    assert sched2.get_last_lr() == sched.get_last_lr()


# ---- gradient clipping ---------------------------------------------------------------------------
# Clips; leaves alone; and tiny gradients, where torch's +1e-6 in max_norm / (norm + 1e-6) shows.
@pytest.mark.parametrize("max_norm,scale", [(0.5, 1.0), (1e3, 1.0), (1e-7, 1e-6)])
def test_clip_grad_norm_matches_torch(max_norm, scale, device):
    mg_params, th_params = _params(device)
    grads = [g * np.float32(scale) if g is not None else None for g in _grads(4)]  # last: None
    _set_grads(mg_params, grads, device)
    _set_grads(th_params, grads)
    total = mg.nn.utils.clip_grad_norm_(mg_params, max_norm)
    expected = torch.nn.utils.clip_grad_norm_(th_params, max_norm)
    # A norm over ~30 float32 squares: reduction-order rounding only.
    np.testing.assert_allclose(float(total), as_numpy(expected), rtol=1e-5)
    for a, b in zip(mg_params, th_params):
        if b.grad is None:
            assert a.grad is None
        else:  # relative only: the tiny case's gradients are ~1e-8
            assert_close(a.grad, b.grad, rtol=1e-5, atol=0)


def test_clip_grad_norm_accepts_a_single_tensor_and_leaves_shared_grads_alone():
    """Clipping one parameter's gradient must not scale another leaf's, although x + y hands the
    same upstream gradient array to both."""
    x, y = mg.tensor([3.0, 4.0], requires_grad=True), mg.tensor([1.0, 1.0], requires_grad=True)
    tx = torch.tensor([3.0, 4.0], requires_grad=True)
    ty = torch.tensor([1.0, 1.0], requires_grad=True)
    ((x + y) * 10).sum().backward()
    ((tx + ty) * 10).sum().backward()
    total = mg.nn.utils.clip_grad_norm_(x, 1.0)
    expected = torch.nn.utils.clip_grad_norm_(tx, 1.0)
    np.testing.assert_allclose(total, as_numpy(expected), rtol=1e-6)
    assert_close(x.grad, tx.grad, **TOL)
    assert_close(y.grad, ty.grad, **TOL)


def test_optimizer_state_follows_parameters_to_another_device():
    """Module.to() after some steps: the next step moves the AdamW moments along with the weights
    and continues exactly as if nothing had moved (compared with a run that stays on numpy)."""
    import minigrad as mg

    def run(move: bool) -> np.ndarray:
        mg.manual_seed(0)
        lin = mg.nn.Linear(3, 2)
        opt = mg.optim.AdamW(lin.parameters(), lr=0.1)
        x = np.arange(6.0, dtype=np.float32).reshape(2, 3)
        for step in range(4):
            if move and step == 2:
                lin.to("torch:cpu")
            dev = lin.weight.device
            opt.zero_grad()
            (lin(mg.tensor(x, device=dev)) ** 2).sum().backward()
            opt.step()
        assert lin.weight.device == ("torch:cpu" if move else "cpu")
        return lin.weight.numpy()

    np.testing.assert_allclose(run(True), run(False), rtol=1e-6, atol=1e-7)


# ---- the grouped (multi-tensor) Adam path ----------------------------------------------------------
@pytest.mark.parametrize("foreach", [None, False])
@pytest.mark.parametrize("name", ["adam_betas_wd", "adamw_wd"])
def test_grouped_adam_matches_torch_foreach_with_two_threads(name, foreach, device):
    """Many parameters, one large enough that numpy's pool cuts it into blocks, 10 steps with 2
    threads, against torch.optim's own multi-tensor path (foreach=True). On the torch backend the
    grouped path runs the same torch._foreach kernels in the same order, so the result is torch's
    bit for bit; elsewhere (numpy, or one tensor at a time) Adam._update's formula, TOL as above."""
    from minigrad.backend import parallel

    shapes = [(300, 300), (7,), (3, 5), (1,), (64, 33)]
    init = [np.random.default_rng(i).standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)]
    ours = [mg.nn.Parameter(mg.tensor(a, device=device)) for a in init]
    theirs = [torch.nn.Parameter(torch.tensor(a)) for a in init]
    make = {"adam_betas_wd": "Adam", "adamw_wd": "AdamW"}[name]
    opt = getattr(mg.optim, make)(ours, lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1,
                                  foreach=foreach)
    opt_t = getattr(torch.optim, make)(theirs, lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1,
                                       foreach=True)
    saved = mg.get_num_threads(), parallel.MIN_PARALLEL_ELEMENTS
    mg.set_num_threads(2)
    parallel.MIN_PARALLEL_ELEMENTS = 1 << 12  # the (300, 300) parameter and the flat buffers go to the pool
    try:
        for step in range(10):
            rng = np.random.default_rng(50 + step)
            grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
            if step in (3, 4):  # a parameter without a gradient falls a step behind the others
                grads[1] = None
            _set_grads(ours, grads, device)
            _set_grads(theirs, grads)
            opt.step()
            opt_t.step()
            tol = dict(rtol=0, atol=0) if device != "cpu" and foreach is None else TOL
            for k, (a, b) in enumerate(zip(ours, theirs)):
                assert_close(a, b, **tol, what=f"step {step}, parameter {k}")
    finally:
        mg.set_num_threads(saved[0])
        parallel.MIN_PARALLEL_ELEMENTS = saved[1]


def test_adam_rejects_fused_and_foreach_together_as_torch():
    with pytest.raises(RuntimeError, match="cannot be `True` together"):
        mg.optim.AdamW([mg.zeros(2, requires_grad=True)], foreach=True, fused=True)


@pytest.mark.parametrize("make", ["Adam", "AdamW"])
def test_grouped_numpy_adam_is_the_per_tensor_formula_bit_for_bit(make):
    """The grouped numpy path runs Adam._update over flat buffers, the weight decay outside it:
    that must change no bit against one tensor at a time (torch is the oracle of both, above)."""
    runs = []
    for foreach in (None, False):
        ps, _ = _params("cpu")
        opt = getattr(mg.optim, make)(ps, lr=0.02, weight_decay=0.1, foreach=foreach)
        for step in range(5):
            _set_grads(ps, _grads(step))
            opt.step()
        runs.append([p.numpy() for p in ps])
    assert all(np.array_equal(a, b) for a, b in zip(*runs))
