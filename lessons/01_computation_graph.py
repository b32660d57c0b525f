# %% [markdown]
# # Lesson 1 — The computation graph and the chain rule
#
# Fine-tuning BERT (the source article, §4.1) means finding parameters θ that minimise a loss
# L(θ). Every method we use for that needs the gradient ∂L/∂θ, and BERT has a hundred million
# parameters, so nobody derives it by hand: an *autograd engine* does. This lesson opens the engine
# on the smallest example that still has all the moving parts.
#
# **Goal.** See a computation as a graph of tiny operations, push a gradient backwards through it
# by hand with the chain rule, then watch minigrad do exactly the same, and check it three ways
# (by hand, against PyTorch, against finite differences).
#
# **The model.** One sigmoid neuron with a squared-error loss, for one example (x, y):
#
# $$u = w x,\quad z = u + b,\quad \hat{y} = \sigma(z) = \frac{1}{1 + e^{-z}},\quad d = \hat{y} - y,\quad L = d^2$$
#
# Each line is one *node* of the graph. A node only needs to know its own *local* derivative
# (∂z/∂u = 1, ∂ŷ/∂z = ŷ(1 − ŷ), ...). The chain rule multiplies local derivatives along the path
# from L back to each input:
#
# $$\frac{\partial L}{\partial w} = \frac{\partial L}{\partial d} \cdot \frac{\partial d}{\partial \hat{y}} \cdot \frac{\partial \hat{y}}{\partial z} \cdot \frac{\partial z}{\partial u} \cdot \frac{\partial u}{\partial w}$$
#
# Walking the graph from L backwards and multiplying as we go is *backpropagation*: every product
# on the way is reused by all the inputs further back, so one backward sweep costs a small constant
# multiple of the forward pass, whatever the number of parameters. For the matrix products that
# make up nearly all of BERT's work the multiple is 2: a product Y = X W needs two products of the
# same size backwards, one for ∂L/∂X and one for ∂L/∂W, so the backward costs twice the forward's
# FLOPs and a training step about three forwards (lesson 11 counts them). Finite differences
# (section 5) would need one extra forward pass *per parameter*.

# %%
import _common
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

import minigrad as mg

# One example and the neuron's current parameters (float64: exact enough to compare to 1e-12).
x_val, y_val = 1.5, 1.0
w_val, b_val = -0.8, 0.3

# %% [markdown]
# ## 1. Forward pass, by hand
# We keep every intermediate value: the backward pass needs them (σ'(z) is computed from ŷ).

# %%
u = w_val * x_val
z = u + b_val
y_hat = 1.0 / (1.0 + math.exp(-z))
d = y_hat - y_val
L = d * d
print(f"u = {u:.6f}   z = {z:.6f}   ŷ = {y_hat:.6f}   d = {d:.6f}   L = {L:.6f}")

# %% [markdown]
# ## 2. Backward pass, by hand
# Start from ∂L/∂L = 1 and visit the nodes in reverse. At each node:
# *gradient of an input = gradient of the node's output × local derivative*.
# The table shows each step: the node, its local derivative, and the gradient it passes back.

# %%
steps = []  # (quantity, local derivative formula, local value, gradient of L w.r.t. the quantity)
g_L = 1.0
g_d = g_L * (2 * d)
steps.append(("d", "∂L/∂d = 2d", 2 * d, g_d))
g_yhat = g_d * 1.0
steps.append(("ŷ", "∂d/∂ŷ = 1", 1.0, g_yhat))
local_sigma = y_hat * (1 - y_hat)
g_z = g_yhat * local_sigma
steps.append(("z", "∂ŷ/∂z = ŷ(1−ŷ)", local_sigma, g_z))
g_u = g_z * 1.0
steps.append(("u", "∂z/∂u = 1", 1.0, g_u))
g_b = g_z * 1.0
steps.append(("b", "∂z/∂b = 1", 1.0, g_b))
g_w = g_u * x_val
steps.append(("w", "∂u/∂w = x", x_val, g_w))
g_x = g_u * w_val
steps.append(("x", "∂u/∂x = w", w_val, g_x))

print(f"{'node':<5}{'local derivative':<18}{'local value':>12}{'∂L/∂node':>14}")
for name, formula, local, grad in steps:
    print(f"{name:<5}{formula:<18}{local:>12.6f}{grad:>14.6f}")
hand = {"w": g_w, "b": g_b, "x": g_x}

# %% [markdown]
# ## 3. The same graph in minigrad
# Each operation on `mg.Tensor`s records a node (`grad_fn`) that remembers its inputs. `backward()`
# sorts the nodes so that each runs after everything that consumes it, then calls each node's
# `backward` with the incoming gradient: the loop above, automated.

# %%
xt = mg.tensor(x_val, dtype=mg.float64, requires_grad=True)
wt = mg.tensor(w_val, dtype=mg.float64, requires_grad=True)
bt = mg.tensor(b_val, dtype=mg.float64, requires_grad=True)
Lt = ((wt * xt + bt).sigmoid() - y_val) ** 2

# The graph, read from the loss backwards. Each node (a `grad_fn`) keeps its `.parents`: the node
# that computed each input, or the leaf tensor itself. Here every op has one computed input, so
# following it walks the whole chain.
node, depth = Lt.grad_fn, 0
while node is not None:
    print("  " * depth + node.name())
    parents = [p for p in node.parents if isinstance(p, mg.Context)]
    node, depth = (parents[0] if parents else None), depth + 1

# Draw it (before backward(): backward frees the graph as it goes). Blue boxes are the leaves we
# want gradients for, orange boxes are ops, "()" is the shape of a scalar. The constant y is a
# plain Python number, so it is not a node.
graph_path = _common.out_path("01_neuron_graph.png")
mg.viz.draw(Lt, str(graph_path), names={id(wt): "w", id(xt): "x", id(bt): "b"})
_common.saved(graph_path)

Lt.backward()
engine = {"w": wt.grad.item(), "b": bt.grad.item(), "x": xt.grad.item()}
print("by hand :", {k: round(v, 10) for k, v in hand.items()})
print("minigrad:", {k: round(v, 10) for k, v in engine.items()})

# %% [markdown]
# Both compute the same products of the same float64 numbers, possibly in a different order, so
# they may differ by a few roundings of 1.1e-16 each: a tolerance of 1e-12 is generous.

# %%
assert abs(Lt.item() - L) < 1e-12
for k in hand:
    assert abs(engine[k] - hand[k]) < 1e-12, (k, engine[k], hand[k])

# %% [markdown]
# ## 4. Check against PyTorch
# PyTorch's autograd is an independent implementation of the same idea: it must agree.

# %%
tx = torch.tensor(x_val, dtype=torch.float64, requires_grad=True)
tw = torch.tensor(w_val, dtype=torch.float64, requires_grad=True)
tb = torch.tensor(b_val, dtype=torch.float64, requires_grad=True)
tL = (torch.sigmoid(tw * tx + tb) - y_val) ** 2
tL.backward()
torch_grads = {"w": tw.grad.item(), "b": tb.grad.item(), "x": tx.grad.item()}
print("torch   :", {k: round(v, 10) for k, v in torch_grads.items()})
for k in hand:
    assert abs(engine[k] - torch_grads[k]) < 1e-12, (k, engine[k], torch_grads[k])

# %% [markdown]
# ### The graph with its numbers
# The picture to remember (micrograd's): every value in the graph with its *data* (from the forward
# pass) and its *grad* ∂L/∂value (from the backward pass); round nodes are the operations. The
# leaves' grads are minigrad's; the inner values' grads are the by-hand ones of section 2, checked
# here against torch, whose `retain_grad()` keeps the gradient of a non-leaf tensor. Blue boxes
# are the leaves we differentiate with respect to; y is a constant, so it has no grad.

# %%
tx, tw, tb = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (x_val, w_val, b_val))
inner = {"u": tw * tx}
inner["z"] = inner["u"] + tb
inner["ŷ"] = torch.sigmoid(inner["z"])
inner["d"] = inner["ŷ"] - y_val
inner["L"] = inner["d"] ** 2
for t in inner.values():
    t.retain_grad()
inner["L"].backward()

data = {"x": x_val, "w": w_val, "b": b_val, "y": y_val, "u": u, "z": z, "ŷ": y_hat, "d": d, "L": L}
grad = {**engine, "u": g_u, "z": g_z, "ŷ": g_yhat, "d": g_d, "L": g_L}
for k, t in inner.items():  # float64, a few roundings apart at most
    assert abs(grad[k] - t.grad.item()) < 1e-12 and abs(data[k] - t.item()) < 1e-12, k

# name: (column, row) for values; ops are drawn between their inputs and their output.
POS = {"x": (0, 1), "w": (0, 0), "×": (1, 0.5), "u": (2, 0.5), "b": (2, -0.5), "+": (3, 0), "z": (4, 0),
       "σ": (5, 0), "ŷ": (6, 0), "y": (6, -1), "−": (7, -0.5), "d": (8, -0.5), "²": (9, -0.5),
       "L": (10, -0.5)}
EDGES = [("x", "×"), ("w", "×"), ("×", "u"), ("u", "+"), ("b", "+"), ("+", "z"), ("z", "σ"),
         ("σ", "ŷ"), ("ŷ", "−"), ("y", "−"), ("−", "d"), ("d", "²"), ("²", "L")]
fig, ax = plt.subplots(figsize=(15, 3.6))
boxes = {}
for name, (cx, cy) in POS.items():
    if name in data:
        text = f"{name}\ndata {data[name]:.4f}\n" + (f"grad {grad[name]:.4f}" if name in grad
                                                         else _common.tr("(constant)", "（常量）"))
        style, size = dict(boxstyle="round,pad=0.4", fc="#cfe2f3" if name in "xwb" else "white", ec="0.3"), 9
    else:  # an operation
        text, style, size = name, dict(boxstyle="circle,pad=0.25", fc="#fde0c5", ec="0.3"), 13
    # sans-serif after monospace: the zh edition's CJK font, for glyphs the monospace font lacks
    boxes[name] = ax.text(cx * 1.5, cy, text, ha="center", va="center", family=["monospace", "sans-serif"],
                          fontsize=size, bbox=style)
for src, dst in EDGES:  # from the right edge of one box to the left edge of the next
    ax.annotate("", xy=(0, 0.5), xycoords=boxes[dst], xytext=(1, 0.5), textcoords=boxes[src],
                arrowprops=dict(arrowstyle="->", color="0.3"))
ax.set_xlim(-0.8, 15.8)
ax.set_ylim(-1.5, 1.5)
ax.axis("off")
ax.set_title(_common.tr("L = (σ(w·x + b) − y)²: data from the forward pass, grad = ∂L/∂value from the backward pass",
                        "L = (σ(w·x + b) − y)²：data来自前向传播，grad = ∂L/∂value来自反向传播"))
_common.savefig(fig, "01_neuron_data_grad.png")

# %% [markdown]
# ## 5. Check against finite differences
# The definition of a derivative gives a check that needs no calculus at all:
#
# $$\frac{\partial L}{\partial w} \approx \frac{L(w + h) - L(w - h)}{2h}$$
#
# This *central* difference has truncation error ~h²·L'''/6, and rounding error ~ε·|L|/h (ε is the
# float's machine epsilon): too large an h is inaccurate, too small an h cancels digits away. The
# sweet spot is h ≈ ε^(1/3): about 1e-5 in float64 (error ~1e-11) but only about 5e-3 in float32
# (error ~1e-5). That is why gradient checks run in float64.


# %%
def loss_at(w: float, b: float, x: float, dtype) -> float:
    """L for one parameter setting, computed in ``dtype`` (no graph needed)."""
    with mg.no_grad():
        wt, bt, xt = (mg.tensor(v, dtype=dtype) for v in (w, b, x))
        return (((wt * xt + bt).sigmoid() - y_val) ** 2).item()


def central_diff(f, v: float, h: float) -> float:
    return (f(v + h) - f(v - h)) / (2 * h)


fd = {
    "w": central_diff(lambda v: loss_at(v, b_val, x_val, mg.float64), w_val, 1e-6),
    "b": central_diff(lambda v: loss_at(w_val, v, x_val, mg.float64), b_val, 1e-6),
    "x": central_diff(lambda v: loss_at(w_val, b_val, v, mg.float64), x_val, 1e-6),
}
print("finite d:", {k: round(v, 10) for k, v in fd.items()})
# With h = 1e-6: truncation ~1e-12 and rounding ~1e-16 / 1e-6 = 1e-10, so 1e-8 has a wide margin.
for k in hand:
    assert abs(engine[k] - fd[k]) < 1e-8, (k, engine[k], fd[k])

# %% [markdown]
# The error of the finite difference against the exact gradient, as h shrinks, traces the "V"
# described above, once per precision. We average over a few parameter values so that one lucky
# cancellation does not hide the trend.

# %%
hs = np.logspace(-1, -12, 23)
w_grid = [-1.2, -0.8, 0.4, 1.1]


def exact_dw(w: float) -> float:
    s = 1.0 / (1.0 + math.exp(-(w * x_val + b_val)))
    return 2 * (s - y_val) * s * (1 - s) * x_val


errors = {}
for dtype in (mg.float64, mg.float32):
    errors[dtype.name] = np.array([
        np.mean([abs(central_diff(lambda v: loss_at(v, b_val, x_val, dtype), w, h) - exact_dw(w))
                 for w in w_grid]) for h in hs])

fig, ax = plt.subplots(figsize=(6, 4))
for name, err in errors.items():
    ax.loglog(hs, np.maximum(err, 1e-18), "o-", label=name)
ax.invert_xaxis()
ax.set_xlabel(_common.tr("step h", "步长h"))
ax.set_ylabel(_common.tr("|finite difference − exact|", "|有限差分 − 精确值|"))
ax.set_title(_common.tr("Central differences: truncation vs rounding", "中心差分：截断误差与舍入误差"))
ax.legend()
_common.savefig(fig, "01_fd_error_vs_h.png")

best64, best32 = errors["float64"].min(), errors["float32"].min()
print(f"best error: float64 {best64:.1e}, float32 {best32:.1e}")
# The theory above predicts ~1e-11 and ~1e-5; the asserts leave a factor of 100 either way.
assert best64 < 1e-9
assert best32 > 1e-7

# %% [markdown]
# ## 6. When a value is used twice, its gradients add
# In f(a) = a·a + a the input a feeds three places. The multivariate chain rule sums the gradient
# arriving along each path: ∂f/∂a = a + a + 1. The engine does this when two gradients reach the
# same node (that is why `backward` waits until *all* consumers of a node have run).

# %%
a = mg.tensor(3.0, dtype=mg.float64, requires_grad=True)
(a * a + a).backward()
print("∂(a·a + a)/∂a at a = 3:", a.grad.item())
assert a.grad.item() == 2 * 3.0 + 1  # small integers: exact in floating point

# %% [markdown]
# ## 7. What the gradient is for
# One step of gradient descent, θ ← θ − lr·∂L/∂θ, must lower the loss for a small enough lr
# (the first-order change is −lr·‖∇L‖² < 0). That update, repeated over batches, is all that
# "fine-tuning" does; lesson 9 looks at better update rules.

# %%
lr = 0.5
w_new, b_new = w_val - lr * engine["w"], b_val - lr * engine["b"]
L_new = loss_at(w_new, b_new, x_val, mg.float64)
print(f"loss before {L:.6f}, after one step {L_new:.6f}")
assert L_new < L

# %% [markdown] tags=["questions"]
# ## Check your understanding
#
# 1. In the figure, ∂L/∂b equals ∂L/∂u (both −0.2922), but ∂L/∂w is different. Why?
#
# 2. Why must the forward pass keep intermediate values for the backward pass? Name two in this
#    graph.
#
# 3. How many forward passes would central differences need to get ∂L/∂θ for all 22.7 M parameters
#    of MiniLM, and what does backpropagation need instead?
#
# 4. Why do gradient checks run in float64, and why not simply take h as small as possible?
#
# 5. Why is ∂(a·a + a)/∂a = 2a + 1, and what must the engine do to get it right?

# %% [markdown] tags=["answers"]
# ## Answers
#
# 1. z = u + b: an addition has local derivative 1 for each input, so it hands ∂L/∂z unchanged to
#    both u and b. w reaches L through u = w·x, whose local derivative ∂u/∂w = x = 1.5 multiplies
#    on the way: ∂L/∂w = 1.5 · (−0.2922) = −0.4383.
#
# 2. Local derivatives are evaluated at the forward values: ∂ŷ/∂z = ŷ(1 − ŷ) needs ŷ, ∂L/∂d = 2d
#    needs d, ∂u/∂w = x needs x. That saved state is why training needs much more memory than
#    inference.
#
# 3. Two per parameter: about 45 million forward passes. Backpropagation needs one forward and one
#    backward sweep, and the backward costs about twice the forward's FLOPs (two products of the
#    forward's size per matrix product), so about three forwards in all, whatever the number of
#    parameters.
#
# 4. The central difference's error is truncation (~h²) plus rounding (~ε|L|/h). The sum is
#    smallest near h ≈ ε^(1/3): about 1e-11 in float64 but about 1e-5 in float32, which is as
#    large as the bugs we look for. A smaller h makes the rounding term grow: f(v + h) and f(v −
#    h) agree in almost all their digits and the subtraction cancels them.
#
# 5. a reaches the output along three paths (twice into the product, once into the sum); the
#    multivariate chain rule adds the contributions: a + a + 1. The engine must add the gradients
#    arriving at a node, and run a node's backward only after every consumer of its output has
#    sent its share (topological order).
