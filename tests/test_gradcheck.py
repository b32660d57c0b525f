"""mg.gradcheck itself: it must pass correct gradients and catch wrong ones.

A checker that never fails proves nothing, so most tests here hand it a custom Function with a
deliberately wrong backward and demand a GradcheckError that points at the worst element.
"""
import re

import numpy as np
import pytest

import minigrad as mg
from conftest import randn


class Square(mg.Function):
    """z = a²;  dz/da = 2a (correct)."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return a * a

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return 2 * a * g


class WrongSquare(Square):
    """z = a², but backward forgets the factor 2: off by |a·g| everywhere."""

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return a * g


class WrongSecondInput(mg.Function):
    """z = a·b with dz/db wrong (it returns g·b instead of g·a); dz/da is right."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return g * b, g * b


def _x(device, values=(0.5, -3.0, 1.5, 2.0)):
    return mg.tensor(np.array(values), requires_grad=True, device=device)


def test_correct_function_passes(device):
    assert mg.gradcheck(Square.apply, [_x(device)])
    assert mg.gradcheck(Square.apply, [_x(device)], fast_mode=True)


def test_wrong_backward_fails_naming_the_worst_element(device):
    """The Jacobian is diagonal and the error |a_k| is largest at a = -3.0 (index 1): the message
    must name d output[1] / d input[1] and show both values there."""
    with pytest.raises(mg.GradcheckError) as info:
        mg.gradcheck(WrongSquare.apply, [_x(device)])
    msg = str(info.value)
    assert "input 0" in msg and "worst element is d output[1] / d input[1]:" in msg
    analytical, numerical = map(float, re.findall(r"analytical (\S+) vs numerical (\S+) ", msg)[0])
    np.testing.assert_allclose([analytical, numerical], [-3.0, -6.0], rtol=1e-6)


def test_fast_mode_also_catches_the_wrong_backward(device):
    with pytest.raises(mg.GradcheckError, match="fast_mode"):
        mg.gradcheck(WrongSquare.apply, [_x(device)], fast_mode=True)


def test_worst_element_is_located_in_a_matrix_input():
    """Only element [1, 2] of a 2x3 input gets a wrong gradient: it must be the one named."""

    class WrongAtOneElement(Square):
        @staticmethod
        def backward(ctx, g):
            (a,) = ctx.saved_tensors
            wrong = 2 * a * g
            wrong[1, 2] += g[1, 2]  # off by one in the diagonal entry [5, 5] only
            return wrong

    x = mg.tensor(randn(0, (2, 3)), requires_grad=True)
    with pytest.raises(mg.GradcheckError, match=r"d output\[5\] / d input\[1, 2\]"):
        mg.gradcheck(WrongAtOneElement.apply, [x])


def test_non_tensor_inputs_before_the_checked_one():
    """Arrays and numbers may precede the checked tensor; it is still reported by position."""
    x = _x("cpu")
    with pytest.raises(mg.GradcheckError, match="input 2"):
        mg.gradcheck(lambda arr, k, t: WrongSquare.apply(t) * k + arr, [np.ones(4), 2.0, x])


def test_raise_exception_false_returns_false():
    assert mg.gradcheck(WrongSquare.apply, [_x("cpu")], raise_exception=False) is False
    assert mg.gradcheck(WrongSquare.apply, [_x("cpu")], fast_mode=True,
                        raise_exception=False) is False


def test_wrong_gradient_of_a_later_input_is_attributed_to_it(device):
    a = mg.tensor(randn(0, (3,)), requires_grad=True, device=device)
    b = mg.tensor(randn(1, (3,)), requires_grad=True, device=device)
    with pytest.raises(mg.GradcheckError, match="input 1"):
        mg.gradcheck(WrongSecondInput.apply, [a, b])
    assert mg.gradcheck(WrongSecondInput.apply, [a, b.detach()])  # only a is checked: it passes


def test_a_small_error_is_caught_by_the_tolerances():
    """An error of 1% of the gradient is far above rtol=1e-3 of the float64 differences."""

    class SlightlyWrong(Square):
        @staticmethod
        def backward(ctx, g):
            (a,) = ctx.saved_tensors
            return 2.02 * a * g

    with pytest.raises(mg.GradcheckError):
        mg.gradcheck(SlightlyWrong.apply, [_x("cpu")])


def test_rejects_float32_inputs():
    with pytest.raises(ValueError, match="float64.*float32"):
        mg.gradcheck(Square.apply, [mg.tensor([1.0, 2.0], requires_grad=True)])


def test_multiple_outputs_and_constant_inputs(device):
    """Outputs are checked together; inputs that do not require grad are left alone."""
    x = mg.tensor(randn(0, (2, 3)), requires_grad=True, device=device)
    w = mg.tensor(randn(1, (3,)), device=device)
    assert mg.gradcheck(lambda t, c: (t * c, t.sum(1).exp(), *t.max(1)), [x, w])


def test_leaves_inputs_unchanged_and_grads_cleared(device):
    x = _x(device)
    before = x.numpy().copy()
    mg.gradcheck(Square.apply, [x])
    np.testing.assert_array_equal(x.numpy(), before)
    assert x.grad is None


class XExp(mg.Function):
    """z = a e^a;  dz/da = e^a (1 + a). It saves e^a, an intermediate: under create_graph it must be
    rebuilt from a (``regraph``), or its own dependence on a is lost."""

    @staticmethod
    def forward(ctx, a):
        e = ctx.xp.exp(a)
        ctx.save_for_backward(e, a)
        return a * e

    @staticmethod
    def regraph(ctx, saved, derived):
        return ctx.xp.exp(saved[1]), saved[1]

    @staticmethod
    def backward(ctx, g):
        e, a = ctx.saved_tensors
        return g * e * (1 + a)


class XExpConstantIntermediate(XExp):
    """The same first derivative, but e^a treated as a constant when recording: d²z/da² loses the
    e^a (1 + a) term. gradcheck cannot see it; gradgradcheck must."""

    regraph = staticmethod(mg.autograd.keep_saved)


def test_gradgradcheck_passes_a_correct_second_derivative(device):
    assert mg.gradgradcheck(XExp.apply, [_x(device)])
    assert mg.gradgradcheck(XExp.apply, [_x(device)], fast_mode=True)


def test_gradgradcheck_catches_a_wrong_second_derivative(device):
    assert mg.gradcheck(XExpConstantIntermediate.apply, [_x(device)])
    with pytest.raises(mg.GradcheckError, match="gradcheck failed for input 0"):
        mg.gradgradcheck(XExpConstantIntermediate.apply, [_x(device)])
    with pytest.raises(mg.GradcheckError, match="fast_mode"):
        mg.gradgradcheck(XExpConstantIntermediate.apply, [_x(device)], fast_mode=True)
