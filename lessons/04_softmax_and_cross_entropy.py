# %% [markdown]
# # Lesson 4 — Softmax and cross-entropy
#
# The article's training code (§5.2) puts a 2-way classifier on BERT and trains it with
# `torch.nn.CrossEntropyLoss`. That loss is a softmax followed by a negative log:
#
# $$\operatorname{softmax}(z)_i = \frac{e^{z_i}}{\sum_j e^{z_j}}, \qquad L(z, t) = -\log \operatorname{softmax}(z)_t$$
#
# for logits z ∈ Rᶜ and the true class t. Softmax also sits inside every attention layer
# (lesson 5), so it pays to understand it well.
#
# **Goal.** (1) Make softmax numerically safe. (2) Build its Jacobian diag(s) − s sᵀ explicitly,
# check it, and see why backward never needs it. (3) Derive the fused cross-entropy gradient
# softmax(z) − onehot(t) and check it against torch. (4) See that 2-class cross-entropy *is* the
# binary cross-entropy of lesson 3.
#
# **Prerequisites.** Lessons 1–3.

# %%
import _common

import matplotlib.pyplot as plt
import numpy as np
import torch

import minigrad as mg
from minigrad.nn import functional as F

rng = np.random.default_rng(0)


def naive_softmax(x: mg.Tensor) -> mg.Tensor:
    """The formula as written: e^x / Σ e^x (no protection against overflow)."""
    e = x.exp()
    return e / e.sum(dim=-1, keepdim=True)


# %% [markdown]
# ## 1. Overflow, and the max trick
# float32 overflows above e^88.7 ≈ 3.4e38. Logits of 1000 are unusual, but a logit of 100 in a
# float16 model (limit e^11) is not. The fix rests on one identity: for any constant c,
#
# $$\frac{e^{z_i - c}}{\sum_j e^{z_j - c}} = \frac{e^{-c} e^{z_i}}{e^{-c} \sum_j e^{z_j}} = \operatorname{softmax}(z)_i$$
#
# With c = max z, the largest exponent is e⁰ = 1, so nothing overflows; and the denominator contains
# that term 1, so it is ≥ 1: it can never underflow to 0, and dividing by it is always safe. Very
# negative logits are the mirror problem: every e^(zᵢ) underflows to 0 and the naive formula
# computes 0/0; subtracting the max fixes that too.

# %%
with np.errstate(all="ignore"):  # the naive version overflows on purpose
    for logits in ([1000.0, 1001.0, 1002.0], [-1000.0, -1001.0, -1002.0]):
        x = mg.tensor(logits)  # float32
        naive, stable = naive_softmax(x).numpy(), F.softmax(x, dim=-1).numpy()
        ref = torch.softmax(torch.tensor(logits), dim=-1).numpy()
        print(f"logits {logits}: naive {naive}, stable {stable}, torch {ref}")
        assert np.isnan(naive).all()
        # Both are float32 softmaxes of the same shifted logits: agree to float32 rounding (~1e-7).
        np.testing.assert_allclose(stable, ref, rtol=1e-6)
        np.testing.assert_allclose(stable, F.softmax(mg.tensor([0.0, 1.0, 2.0]) * np.sign(logits[0]),
                                                     dim=-1).numpy(), rtol=1e-6)

# %% [markdown]
# The last assert is the identity itself: softmax([1000, 1001, 1002]) = softmax([0, 1, 2]).
#
# ## 2. The softmax Jacobian
# With s = softmax(z), differentiate sᵢ = e^(zᵢ)/S with S = Σₖ e^(zₖ) (quotient rule, ∂S/∂zⱼ = e^(zⱼ)):
#
# $$\frac{\partial s_i}{\partial z_j} = \frac{\delta_{ij} e^{z_i} S - e^{z_i} e^{z_j}}{S^2} = s_i (\delta_{ij} - s_j), \quad \text{i.e.} \quad J = \operatorname{diag}(s) - s s^\top$$
#
# We build J explicitly and compare it with torch's Jacobian, minigrad's (one backward pass per row,
# seeded with a one-hot vector), and central finite differences, all in float64.

# %%
C = 5
z_np = rng.standard_normal(C) * 2
s_np = F.softmax(mg.tensor(z_np, dtype=mg.float64), dim=-1).numpy()
J = np.diag(s_np) - np.outer(s_np, s_np)

z = mg.tensor(z_np, dtype=mg.float64, requires_grad=True)
rows = []
for i in range(C):
    z.grad = None
    F.softmax(z, dim=-1).backward(mg.tensor(np.eye(C)[i]))
    rows.append(z.grad.numpy())
J_minigrad = np.array(rows)
J_torch = torch.autograd.functional.jacobian(lambda t: torch.softmax(t, -1), torch.tensor(z_np)).numpy()
eps = 1e-6
J_fd = np.stack([(F.softmax(mg.tensor(z_np + eps * e), dim=-1).numpy()
                  - F.softmax(mg.tensor(z_np - eps * e), dim=-1).numpy()) / (2 * eps)
                 for e in np.eye(C)], axis=1)

# float64 evaluations of one formula: ~1e-16 apart. Central differences: error ~1e-10 (lesson 1).
np.testing.assert_allclose(J_minigrad, J, atol=1e-14)
np.testing.assert_allclose(J_torch, J, atol=1e-14)
np.testing.assert_allclose(J_fd, J, atol=1e-8)
print("J = diag(s) − s sᵀ matches minigrad, torch and finite differences")

# %% [markdown]
# Three properties, each with a reason:
# - **Symmetric**: sᵢ(δᵢⱼ − sⱼ) is symmetric in i and j.
# - **Rows sum to 0** (J·1 = 0): adding the same c to every logit changes nothing (§1), so the
#   derivative along the all-ones direction is 0. J is therefore singular.
# - **Positive semi-definite**: diag(s) − s sᵀ is the covariance matrix of a one-hot vector drawn
#   with probabilities s, and covariances are PSD.

# %%
eigvals = np.linalg.eigvalsh(J)
print("eigenvalues of J:", np.round(eigvals, 6))
np.testing.assert_allclose(J, J.T, atol=1e-16)
np.testing.assert_allclose(J.sum(axis=1), 0, atol=1e-15)
# Eigenvalues of a float64 5×5 matrix with entries < 1 are accurate to ~1e-16; 1e-12 is safe.
assert eigvals.min() > -1e-12 and abs(eigvals).min() < 1e-12  # PSD, with a zero eigenvalue

# %% [markdown]
# **Backward never builds J.** For an upstream gradient g, the vector-Jacobian product is
#
# $$J^\top g = s \odot g - s\, (s^\top g) = s \odot \left(g - \langle g, s \rangle\right)$$
#
# which costs O(C) instead of O(C²): for attention over 512 tokens that is the difference between
# 512 numbers and 262144 per row. That one line is what minigrad's `Softmax.backward` computes.

# %%
g_np = rng.standard_normal(C)
z.grad = None
F.softmax(z, dim=-1).backward(mg.tensor(g_np))
vjp_formula = s_np * (g_np - g_np @ s_np)
np.testing.assert_allclose(z.grad.numpy(), J.T @ g_np, atol=1e-15)
np.testing.assert_allclose(vjp_formula, J.T @ g_np, atol=1e-15)

# %% [markdown]
# ## 3. Cross-entropy and its fused gradient
# L = −log sₜ. Two routes to ∂L/∂z, which must agree:
#
# - **Through the Jacobian.** ∂L/∂s = −eₜ/sₜ (only sₜ appears). Then ∂L/∂zⱼ = Σᵢ (∂L/∂sᵢ) Jᵢⱼ =
#   −(1/sₜ) sₜ(δₜⱼ − sⱼ) = sⱼ − δₜⱼ.
# - **Directly.** L = −zₜ + log Σⱼ e^(zⱼ), and ∂/∂zⱼ of log Σ e^z is e^(zⱼ)/Σ e^z = sⱼ.
#
# Either way: **∂L/∂z = softmax(z) − onehot(t)**, the same "prediction minus target" shape as the
# BCE gradient σ(z) − y of lesson 3. Averaged over a batch of N rows, each row's gradient is / N.

# %%
N = 6
Z_np = rng.standard_normal((N, C)) * 3
t_np = rng.integers(0, C, N)
S_np = F.softmax(mg.tensor(Z_np, dtype=mg.float64), dim=-1).numpy()
onehot = np.eye(C)[t_np]
grad_formula = (S_np - onehot) / N
grad_via_J = np.stack([(np.diag(s) - np.outer(s, s)).T @ (-oh / s[t]) for s, oh, t in
                       zip(S_np, onehot, t_np)]) / N

Z = mg.tensor(Z_np, dtype=mg.float64, requires_grad=True)
t = mg.tensor(t_np)
loss = F.cross_entropy(Z, t)
loss.backward()
fused_grad = Z.grad.numpy()

Z.grad = None
naive_loss = -(F.softmax(Z, dim=-1)[np.arange(N), t_np].log()).mean()
naive_loss.backward()

tZ = torch.tensor(Z_np, requires_grad=True)
t_loss = torch.nn.functional.cross_entropy(tZ, torch.tensor(t_np))
t_loss.backward()

print(f"loss: minigrad {loss.item():.12f}, torch {t_loss.item():.12f}")
# All float64; the composed and fused paths round differently, by ~1e-16 per op.
np.testing.assert_allclose(loss.item(), t_loss.item(), rtol=1e-12)
np.testing.assert_allclose(naive_loss.item(), t_loss.item(), rtol=1e-12)
for name, g in (("J route", grad_via_J), ("fused", fused_grad), ("naive chain", Z.grad.numpy()),
                ("torch", tZ.grad.numpy())):
    np.testing.assert_allclose(g, grad_formula, atol=1e-14, err_msg=name)
assert mg.gradcheck(lambda Z: F.cross_entropy(Z, t), [Z])
print("∂L/∂z = (softmax − onehot)/N: J route, fused, naive chain, torch and gradcheck agree")

# %% [markdown]
# ### In float32, far from the decision boundary
# As in lesson 3, the naive chain log(softmax(z)) fails when a probability underflows: for logits
# [0, 200] and target 0, s₀ = e^(−200) rounds to 0 in float32, log 0 = −inf, and backward computes
# −inf · 0 = nan. The fused loss uses log softmax(z)ₜ = zₜ − max z − log Σ e^(z − max z), which is
# −200 exactly, and its gradient s − onehot = [−1, 1].

# %%
hard = mg.tensor([[0.0, 200.0]], requires_grad=True)
target0 = mg.tensor([0])
with np.errstate(all="ignore"):
    bad = -(F.softmax(hard, dim=-1)[0, 0].log())
    bad.backward()
print(f"naive: loss {bad.item()}, grad {hard.grad.numpy()}")
assert not np.isfinite(bad.item()) and np.isnan(hard.grad.numpy()).all()

hard.grad = None
good = F.cross_entropy(hard, target0)
good.backward()
t_hard = torch.tensor([[0.0, 200.0]], requires_grad=True)
torch.nn.functional.cross_entropy(t_hard, torch.tensor([0])).backward()
print(f"fused: loss {good.item()}, grad {hard.grad.numpy()}, torch grad {t_hard.grad.numpy()}")
assert good.item() == 200.0
np.testing.assert_array_equal(hard.grad.numpy(), [[-1.0, 1.0]])
np.testing.assert_array_equal(hard.grad.numpy(), t_hard.grad.numpy())

# %% [markdown]
# ## 4. Two classes: cross-entropy is binary cross-entropy
# With two logits (z₀, z₁), softmax(z)₁ = e^(z₁)/(e^(z₀) + e^(z₁)) = σ(z₁ − z₀). So a 2-way
# classifier trained with cross-entropy (the article's §5.2 code) is a logistic regression on the
# logit difference d = z₁ − z₀, trained with the BCE of §4.2, and ∂L/∂d = σ(d) − y.

# %%
d_np = rng.standard_normal(N) * 4
y_np = rng.integers(0, 2, N)
two = mg.tensor(np.stack([np.zeros(N), d_np], axis=1), dtype=mg.float64, requires_grad=True)
ce = F.cross_entropy(two, mg.tensor(y_np))
ce.backward()
d = mg.tensor(d_np, dtype=mg.float64, requires_grad=True)
bce = F.binary_cross_entropy_with_logits(d, mg.tensor(y_np, dtype=mg.float64))
bce.backward()
print(f"2-class CE {ce.item():.12f}  BCE on z₁ − z₀ {bce.item():.12f}")
np.testing.assert_allclose(ce.item(), bce.item(), rtol=1e-12)
np.testing.assert_allclose(two.grad.numpy()[:, 1], d.grad.numpy(), atol=1e-15)
np.testing.assert_allclose(two.grad.numpy()[:, 0], -d.grad.numpy(), atol=1e-15)

# %% [markdown]
# ## 5. Pictures
# Left: the Jacobian of §2 (note the negative off-diagonal: raising one logit takes probability
# from all the others). Right: one row of the cross-entropy gradient — only the target's entry is
# negative, so gradient descent raises the target's logit and lowers the rest in proportion to
# their probabilities.

# %%
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
lim = np.abs(J).max()
im = ax0.imshow(J, cmap="RdBu_r", vmin=-lim, vmax=lim)
ax0.set_title(_common.tr("softmax Jacobian diag(s) − s sᵀ", "softmax的雅可比矩阵diag(s) − s sᵀ"))
ax0.set_xlabel("logit j")
ax0.set_ylabel(_common.tr("probability i", "概率i"))
fig.colorbar(im, ax=ax0, shrink=0.85)
row = 0
xs = np.arange(C)
ax1.bar(xs - 0.2, S_np[row], width=0.4, label="softmax s")
ax1.bar(xs + 0.2, S_np[row] - onehot[row], width=0.4, label="∂L/∂z = s − onehot")
ax1.axhline(0, color="black", lw=0.8)
ax1.set_xticks(xs, [f"{c}{_common.tr(' (target)', '（目标）') if c == t_np[row] else ''}" for c in xs])
ax1.set_title(_common.tr("cross-entropy gradient, one example", "交叉熵的梯度，单个样本"))
ax1.legend()
_common.savefig(fig, "04_softmax_jacobian_and_ce_grad.png")

# %% [markdown] tags=["questions"]
# ## Check your understanding
#
# 1. Why does subtracting max z leave softmax unchanged, and which two failures does it prevent?
#
# 2. The rows of J = diag(s) − s sᵀ sum to 0. What does that say, and what follows for J?
#
# 3. Softmax's backward never builds J. What does it compute instead, and at what cost?
#
# 4. Logits z = [2, 0, −1], target t = 0: softmax(z) ≈ [0.844, 0.114, 0.042]. What is ∂L/∂z, and
#    what does one gradient-descent step do to each logit?
#
# 5. Why is 2-class cross-entropy the binary cross-entropy of lesson 3, and on which quantity?

# %% [markdown] tags=["answers"]
# ## Answers
#
# 1. Multiplying numerator and denominator by e^(−c) changes nothing. With c = max z the largest
#    exponent is e⁰ = 1, so huge logits cannot overflow to inf (inf/inf = nan); and the
#    denominator contains that 1, so very negative logits cannot make it underflow to 0 (0/0 =
#    nan).
#
# 2. Adding the same constant to every logit leaves softmax unchanged, so the derivative along the
#    all-ones direction is 0: J·1 = 0. J is therefore singular (rank at most C − 1).
#
# 3. Only the vector-Jacobian product Jᵀ g = s ⊙ (g − ⟨g, s⟩): O(C) work and memory per row
#    instead of O(C²). For attention over 512 keys that is 512 numbers per row instead of 262 144.
#
# 4. softmax(z) − onehot(0) ≈ [−0.156, 0.114, 0.042] (it sums to 0). Descent raises z₀ and lowers
#    z₁ and z₂ in proportion to the probability each wrongly holds.
#
# 5. softmax(z)₁ = e^(z₁)/(e^(z₀) + e^(z₁)) = σ(z₁ − z₀). So cross-entropy over two logits is BCE
#    on the difference d = z₁ − z₀, with ∂L/∂d = σ(d) − y: only the difference matters.
