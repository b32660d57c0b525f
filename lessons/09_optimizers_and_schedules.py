# %% [markdown]
# # Lesson 9 — Optimizers and learning-rate schedules
#
# Backprop gives ∂L/∂θ; the *optimizer* decides what to do with it. The article's §5.2 code uses
# `torch.optim.Adam(model.parameters(), lr=2e-5)`; HuggingFace's recipe for BERT is AdamW with a
# linear warmup-then-decay schedule. This lesson writes those update rules out, runs them on a
# classic hard problem, matches torch step for step, and checks the schedule against transformers.
#
# **Goal.** Know exactly what SGD, momentum, Adam and AdamW do to θ each step; see why one line
# missing from the article's training loop (`optimizer.zero_grad()`) matters; understand warmup.
#
# **Prerequisites.** Lesson 1 (gradient descent); any lesson that computes a gradient.

# %%
import _common

import matplotlib.pyplot as plt
import numpy as np
import torch
import transformers

import minigrad as mg

START = np.array([-1.5, 2.0])


def rosenbrock(theta):
    """f(x, y) = (1 − x)² + 100 (y − x²)²: a curved, narrow valley with its minimum 0 at (1, 1).
    Works on minigrad and torch tensors alike: the two share an API."""
    x, y = theta[0], theta[1]
    return (1 - x) ** 2 + 100 * (y - x ** 2) ** 2


# %% [markdown]
# ## 1. The update rules
# With g = ∂L/∂θ at step t (counting from 1), learning rate η:
#
# - **SGD**: θ ← θ − η g.
# - **Momentum** (torch's form): b ← μ b + g (b = g at the first step); θ ← θ − η b. The buffer b
#   averages recent gradients: zig-zags across a valley cancel, steady motion along it adds up.
# - **Adam**: m ← β₁ m + (1 − β₁) g; v ← β₂ v + (1 − β₂) g²; m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ);
#   θ ← θ − η m̂ / (√v̂ + ε). Each coordinate is scaled by its own recent gradient size, so steps are
#   about η long whatever the gradient's scale. m̂ and v̂ undo the bias of starting m and v at 0.
# - **Weight decay, two ways.** Adam(weight_decay=λ) adds λθ to g *before* the moment estimates
#   (L2 regularisation, then rescaled per coordinate); **AdamW** instead shrinks θ ← θ(1 − ηλ)
#   directly, *decoupled* from the adaptive scaling (Loshchilov & Hutter), which is what BERT uses.
#
# Below, the rules written out in numpy exactly as above; minigrad computes the gradients.

# %%
def grad_at(theta: np.ndarray) -> np.ndarray:
    t = mg.tensor(theta, dtype=mg.float64, requires_grad=True)
    rosenbrock(t).backward()
    return t.grad.numpy()


def textbook_path(name: str, hp: dict, steps: int) -> np.ndarray:
    """θ after each step of ``name`` ("SGD", "Adam" or "AdamW"), written from the formulas above."""
    theta, path = START.copy(), [START.copy()]
    buf, m, v = None, np.zeros(2), np.zeros(2)
    for t in range(1, steps + 1):
        g = grad_at(theta)
        if name == "SGD":
            if hp.get("momentum"):
                buf = g if buf is None else hp["momentum"] * buf + g
                g = buf
            theta = theta - hp["lr"] * g
        else:
            b1, b2 = hp.get("betas", (0.9, 0.999))
            wd = hp.get("weight_decay", 0.0)
            if name == "AdamW":
                theta = theta * (1 - hp["lr"] * wd)
            else:
                g = g + wd * theta
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
            theta = theta - hp["lr"] * m_hat / (np.sqrt(v_hat) + hp.get("eps", 1e-8))
        path.append(theta)
    return np.array(path)


def library_path(lib, name: str, hp: dict, steps: int) -> np.ndarray:
    """The same run with ``lib.optim.<name>``: the identical loop works for minigrad and torch."""
    theta = lib.tensor(START, dtype=lib.float64, requires_grad=True)
    opt = getattr(lib.optim, name)([theta], **hp)
    path = [theta.detach().numpy().copy()]
    for _ in range(steps):
        opt.zero_grad()
        rosenbrock(theta).backward()
        opt.step()
        path.append(theta.detach().numpy().copy())
    return np.array(path)


# %% [markdown]
# ## 2. Racing down the Rosenbrock valley, three implementations each
# The valley's steepest curvature at the start (the Hessian's top eigenvalue) is λ ≈ 2092, so plain
# SGD is stable there only for η < 2/λ ≈ 9.6e-4: η = 1e-3 is just *outside* that limit. It survives
# because one step later λ has dropped below 2/η = 2000; then it crawls along the flat valley floor
# (lesson 16 measures such curvatures with Hessian-vector products). Momentum, at the same η,
# builds up speed along the floor; Adam's per-coordinate scaling ignores the steep walls.
# Weight decay pulls θ toward 0, so with it the runs settle short of (1, 1).

# %%
# The curvature the text quotes: the Hessian's eigenvalues at the start and after one SGD step.
def top_curvature(theta):
    hess = torch.autograd.functional.hessian(rosenbrock, torch.tensor(theta, dtype=torch.float64))
    return float(torch.linalg.eigvalsh(hess)[-1])


lam0 = top_curvature(START)
theta1 = START - 1e-3 * torch.func.grad(rosenbrock)(torch.tensor(START)).numpy()
lam1 = top_curvature(theta1)
print(f"top curvature: {lam0:.1f} at the start (2/λ = {2 / lam0:.2e}), {lam1:.1f} after one step of η = 1e-3")
assert 2 / lam0 < 1e-3 < 2 / lam1

STEPS = 1000
runs = {
    "SGD": ("SGD", dict(lr=1e-3)),
    "SGD + momentum 0.9": ("SGD", dict(lr=1e-3, momentum=0.9)),
    "Adam": ("Adam", dict(lr=0.1)),
    "Adam, weight_decay=0.1": ("Adam", dict(lr=0.1, weight_decay=0.1)),
    "AdamW, weight_decay=0.1": ("AdamW", dict(lr=0.1, weight_decay=0.1)),
}
paths = {}
for label, (name, hp) in runs.items():
    ours, ref, book = library_path(mg, name, hp, STEPS), library_path(torch, name, hp, STEPS), \
        textbook_path(name, hp, STEPS)
    err_torch, err_book = np.abs(ours - ref).max(), np.abs(ours - book).max()
    final = float(rosenbrock(ours[-1]))
    print(f"{label:>24}: final θ {np.round(ours[-1], 4)}, f = {final:.2e}; max |minigrad − torch| "
          f"{err_torch:.1e}, max |minigrad − textbook| {err_book:.1e}")
    # float64 throughout. minigrad and torch apply the same formula in the same order: only
    # last-bit differences, which this smooth problem does not amplify beyond ~1e-12. The textbook
    # form divides by (1 − βᵗ) in different places (same math, different rounding), so we allow more.
    assert err_torch < 1e-10, (label, err_torch)
    assert err_book < 1e-8, (label, err_book)
    paths[label] = ours

final_f = {label: float(rosenbrock(p[-1])) for label, p in paths.items()}
assert final_f["SGD"] > 1 and final_f["SGD + momentum 0.9"] < 1e-3 and final_f["Adam"] < 1e-3
assert all(np.abs(paths[k][-1] - 1).max() > 0.1 for k in paths if "weight_decay" in k)

# Adam's coupled L2 and AdamW's decoupled decay are genuinely different algorithms:
gap = np.abs(paths["Adam, weight_decay=0.1"] - paths["AdamW, weight_decay=0.1"]).max()
print(f"Adam(weight_decay) and AdamW part ways by up to {gap:.2f}")
assert gap > 0.01

# %%
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.5))
gx, gy = np.meshgrid(np.linspace(-2, 2, 300), np.linspace(-1, 3, 300))
ax0.contour(gx, gy, rosenbrock(np.stack([gx, gy])), levels=np.logspace(-1, 3.5, 14), colors="0.7",
            linewidths=0.7)
for label, p in paths.items():
    shown = _common.tr(label, label.replace("momentum", "动量"))
    ax0.plot(p[:, 0], p[:, 1], lw=1.3, label=shown)
    ax1.semilogy([float(rosenbrock(q)) + 1e-12 for q in p], label=shown)
ax0.plot(*START, "ko")
ax0.plot(1, 1, "k*", ms=12)
ax0.set_title(_common.tr("trajectories from (−1.5, 2) toward the minimum ★", "从(−1.5, 2)出发走向极小值★的轨迹"))
ax0.legend(fontsize=8)
ax1.set_xlabel(_common.tr("step", "步数"))
ax1.set_ylabel("f(θ)")
ax1.set_title(_common.tr("loss", "损失"))
_common.savefig(fig, "09_rosenbrock_trajectories.png")

# %% [markdown]
# ## 3. The line the article's loop forgets: `zero_grad()`
# `backward()` *adds* into `.grad` (it must: lesson 1 §6, a parameter used twice gets both
# contributions). So between steps the old gradient has to be cleared. The article's §5.2 `train`
# function calls `loss.backward()` and `optimizer.step()` but never `optimizer.zero_grad()`: every
# step then uses the sum of *all* gradients so far. We show the accumulation, then its effect on a
# small linear regression trained with SGD.

# %%
w = mg.tensor([1.0, -2.0], requires_grad=True)
for _ in range(2):
    (w * w).sum().backward()
print("after two backward() calls without zero_grad:", w.grad.numpy(), "(one call gives 2w)")
np.testing.assert_array_equal(w.grad.numpy(), 2 * 2 * w.numpy())

rng = np.random.default_rng(0)
Xr = rng.standard_normal((64, 3))
yr = Xr @ np.array([1.5, -2.0, 0.5]) + 0.1 * rng.standard_normal(64)


def regression_losses(zero_grad: bool, steps: int = 60) -> list[float]:
    w = mg.tensor(np.zeros(3), requires_grad=True)
    opt = mg.optim.SGD([w], lr=0.1)
    X, y = mg.tensor(Xr), mg.tensor(yr)
    losses = []
    for _ in range(steps):
        if zero_grad:
            opt.zero_grad()
        loss = ((X @ w - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


with_zg, without_zg = regression_losses(True), regression_losses(False)
print(f"final loss with zero_grad {with_zg[-1]:.4f}, without {without_zg[-1]:.4f}")
# With zero_grad, SGD reaches the noise floor (the noise variance, 0.01). Without it, the summed
# gradient acts like momentum with no friction: the weights keep swinging past the minimum.
assert with_zg[-1] < 0.02
assert without_zg[-1] > 10 * with_zg[-1]

# %% [markdown]
# (Accumulating on purpose is a real technique, *gradient accumulation*: sum k micro-batches'
# gradients, step once, then zero. The bug is forgetting the "then zero".)
#
# ## 4. Warmup and linear decay
# HuggingFace's `get_linear_schedule_with_warmup` multiplies the base learning rate by
#
#     λ(s) = s / W                       for s < W (warmup steps)
#     λ(s) = max(0, (S − s) / (S − W))   afterwards (S = total training steps)
#
# where s counts `scheduler.step()` calls. Why warm up? At step 1 Adam's v̂ is a one-sample
# estimate, so its steps are unreliable exactly when the classifier head is random and gradients
# are largest; small early steps protect the pretrained weights. Why decay? Smaller steps at the
# end settle into a minimum instead of bouncing around it.
#
# We compare minigrad's schedule with transformers' own, driving an AdamW on each side through a
# short fine-tuning-like run (the regression above) and checking the learning rates and the
# weights after every step.

# %%
TOTAL, WARMUP, BASE_LR = 100, 10, 2e-2

w_mg = mg.tensor(np.zeros(3), requires_grad=True)
opt_mg = mg.optim.AdamW([w_mg], lr=BASE_LR, weight_decay=0.01)
sched_mg = mg.optim.get_linear_schedule_with_warmup(opt_mg, WARMUP, TOTAL)
w_t = torch.zeros(3, dtype=torch.float64, requires_grad=True)
opt_t = torch.optim.AdamW([w_t], lr=BASE_LR, weight_decay=0.01)
sched_t = transformers.get_linear_schedule_with_warmup(opt_t, WARMUP, TOTAL)

lrs_mg, lrs_t, max_w_gap = [], [], 0.0
for _ in range(TOTAL):
    lrs_mg.append(opt_mg.param_groups[0]["lr"])
    lrs_t.append(opt_t.param_groups[0]["lr"])
    for w, opt, lib in ((w_mg, opt_mg, mg), (w_t, opt_t, torch)):
        opt.zero_grad()
        ((lib.tensor(Xr) @ w - lib.tensor(yr)) ** 2).mean().backward()
        opt.step()
    sched_mg.step()
    sched_t.step()
    max_w_gap = max(max_w_gap, float(np.abs(w_mg.numpy() - w_t.detach().numpy()).max()))

print(f"lr at steps 0, 5, 10, 55, 99: {[round(lrs_mg[i], 6) for i in (0, 5, 10, 55, 99)]}")
print(f"max |w_minigrad − w_torch| over {TOTAL} steps: {max_w_gap:.1e}")
np.testing.assert_allclose(lrs_mg, lrs_t, rtol=1e-15, atol=0)  # the same float formula
assert lrs_mg[0] == 0.0  # note: the very first update uses lr = 0 and changes nothing
assert max(lrs_mg) == BASE_LR and lrs_mg[WARMUP] == BASE_LR
assert max_w_gap < 1e-12  # float64 AdamW, same update order (as in §2)

fig, ax = plt.subplots(figsize=(6.5, 3.5))
ax.plot(lrs_t, lw=4, alpha=0.4, label="transformers")
ax.plot(lrs_mg, "--", label="minigrad")
ax.axvline(WARMUP, color="grey", lw=0.8, ls=":")
ax.set_xlabel(_common.tr("optimizer step", "优化器步数"))
ax.set_ylabel(_common.tr("learning rate", "学习率"))
ax.set_title(_common.tr(f"linear warmup ({WARMUP} steps) then linear decay to 0 at {TOTAL}",
                        f"线性预热（{WARMUP}步），然后线性衰减，到第{TOTAL}步降为0"))
ax.legend()
_common.savefig(fig, "09_linear_warmup_schedule.png")

# %% [markdown]
# ## Takeaways
# - SGD follows the gradient; momentum follows its running sum; Adam rescales each coordinate by
#   its recent gradient size; AdamW decays weights separately from that rescaling.
# - Always `zero_grad()` between steps (or accumulate deliberately).
# - Fine-tuning BERT = AdamW + warmup/decay schedule; minigrad reproduces torch's optimizers and
#   transformers' schedule to the last bits in float64.

# %% [markdown] tags=["questions"]
# ## Check your understanding
#
# 1. Why does Adam divide m by (1 − β₁ᵗ), and how long is its first step?
#
# 2. What is the difference between Adam(weight_decay=λ) and AdamW?
#
# 3. SGD on Rosenbrock needs η < 2/λ, with λ ≈ 2092 at the start. Where does "2 divided by the
#    curvature" come from?
#
# 4. What does forgetting `zero_grad()` do to SGD, and why does it behave like momentum without
#    friction?
#
# 5. Why warm up the learning rate when fine-tuning BERT, and why decay it afterwards?

# %% [markdown] tags=["answers"]
# ## Answers
#
# 1. m and v start at 0, so early averages are biased towards 0 by the factor (1 − βᵗ); the
#    division removes that bias. At t = 1, m̂ = g and v̂ = g², so the step is η g/(|g| + ε) ≈ η ·
#    sign(g): about η per coordinate, whatever the gradient's scale.
#
# 2. Adam adds λθ to the gradient before the moment estimates, so the decay is divided by √v̂ like
#    the gradient: coordinates with large gradients are barely decayed. AdamW shrinks θ ← θ(1 −
#    ηλ) directly, decoupled from the adaptive scaling, so every weight decays at the same rate.
#    They are different algorithms, and BERT uses AdamW.
#
# 3. On a quadratic with curvature λ, one gradient step multiplies the error along that direction
#    by (1 − ηλ); it grows if |1 − ηλ| > 1, i.e. η > 2/λ. The steepest direction (λ ≈ 2092 across
#    the valley at the start) sets the limit, so the flat direction along the floor (λ ≈ 9.8) is
#    crossed very slowly.
#
# 4. `.grad` holds g₁ + … + g_t, and each step uses that running sum: momentum b ← μb + g with
#    μ = 1. Nothing decays, old gradients push forever, and the weights swing past the minimum
#    instead of settling.
#
# 5. At first Adam's v̂ rests on very few samples and the new head is random, so gradients are
#    large and unreliable; small early steps protect the pre-trained weights. Decaying at the end
#    lets the run settle into a minimum instead of bouncing around it.
