# %% [markdown]
# # Lesson 14 — Adversarial training on the embeddings: FGM and PGD
#
# A fine-tuned classifier can be pushed over its decision boundary by a small, well-chosen change
# of its input. Adversarial training asks for robustness during training: minimise the loss at
# the clean input *and* at the worst input nearby,
#
#     min_θ  L(θ; E) + max_{‖r‖₂ ≤ ε} L(θ; E + r).
#
# Text is discrete, so "nearby" is taken where the input first becomes continuous: the word-
# embedding matrix E [V, H]. The inner max has no closed form; linearising it,
# L(E + r) ≈ L(E) + ⟨g, r⟩ with g = ∂L/∂E, gives r = ε g/‖g‖₂ — the fast gradient method (FGM,
# Miyato et al. 2017). Projected gradient descent (PGD, Madry et al. 2018) takes K smaller steps
# instead, re-reading the gradient at each and projecting back onto the ε-ball.
#
# **Goal.** See that the gradient direction is the worst first-order direction (finite
# differences), that FGM's combined gradient equals the same recipe run in torch on HF's BERT,
# that E is restored bit for bit, and how PGD's steps move inside the ball.
#
# **Prerequisites.** Lessons 1 (gradients, finite differences), 8 (BERT), 9 (the optimizer step),
# 10 (the training loop).

# %%
import _common

import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import transformers

import mini_bert as mb
import minigrad as mg

transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()

# A small random BERT classifier, written by transformers so both libraries load the same
# weights; float64 on both sides so that differences are the math, not rounding; dropout off.
config = transformers.BertConfig(vocab_size=200, hidden_size=48, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=96,
                                 max_position_embeddings=32, num_labels=2, hidden_dropout_prob=0.0,
                                 attention_probs_dropout_prob=0.0, initializer_range=0.2)
workdir = tempfile.mkdtemp()
torch.manual_seed(0)
transformers.BertForSequenceClassification(config).save_pretrained(workdir)
ours = mb.BertForSequenceClassification.from_pretrained(workdir).to(dtype=mg.float64)
hf = transformers.BertForSequenceClassification.from_pretrained(
    workdir, attn_implementation="eager").eval().double()

rng = np.random.default_rng(0)
ids = rng.integers(5, 200, size=(8, 12))
ids[:, 0] = 2
labels = rng.integers(0, 2, size=8)
E = ours.bert.embeddings.word_embeddings.weight


def loss_at(matrix) -> float:
    """The batch loss with the word embeddings replaced by ``matrix`` (restored afterwards)."""
    saved, E._data = E._data, matrix
    try:
        with mg.no_grad():
            return ours(ids, labels=labels).loss.item()
    finally:
        E._data = saved


# %% [markdown]
# ## 1. The gradient is the steepest direction
# Along a unit direction u (unit in the Frobenius norm over the whole matrix), the loss changes
# at rate ⟨g, u⟩ ≤ ‖g‖, with equality for u = g/‖g‖. A central difference in float64 checks the
# rate; random directions in a 9600-dimensional space are nearly orthogonal to g and barely move
# the loss.

# %%
ours.zero_grad()
clean_loss = ours(ids, labels=labels).loss
clean_loss.backward()
g = E.grad.numpy().copy()
E0 = E.numpy().copy()
u_grad = g / np.linalg.norm(g)
h = 1e-5
slope = (loss_at(E0 + h * u_grad) - loss_at(E0 - h * u_grad)) / (2 * h)
print(f"‖g‖ = {np.linalg.norm(g):.6f}, slope of L along g/‖g‖ (finite diff.) = {slope:.6f}")
# Central difference: error O(h²·L''') ≈ 1e-10 here, plus float64 rounding ~1e-16/h = 1e-11.
assert abs(slope - np.linalg.norm(g)) < 1e-7

ts = np.linspace(0, 1.0, 11)
along_grad = [loss_at(E0 + t * u_grad) for t in ts]
along_random = []
for seed in range(5):
    u = np.random.default_rng(seed).normal(size=E0.shape)
    along_random.append([loss_at(E0 + t * u / np.linalg.norm(u)) for t in ts])
assert along_grad[-1] > max(r[-1] for r in along_random)

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(ts, along_grad, "o-", label=_common.tr("along g/‖g‖ (FGM)", "沿g/‖g‖方向（FGM）"))
for i, r in enumerate(along_random):
    ax.plot(ts, r, color="gray", alpha=0.6,
            label=_common.tr("random unit directions", "随机单位方向") if i == 0 else None)
ax.plot(ts, clean_loss.item() + ts * np.linalg.norm(g), "--",
        label=_common.tr("first-order: L + t‖g‖", "一阶近似：L + t‖g‖"))
ax.set(xlabel=_common.tr("step length t (‖r‖₂)", "步长t（‖r‖₂）"), ylabel=_common.tr("batch loss", "批次损失"),
       title=_common.tr("Loss along directions in E", "沿E中各方向的损失"))
ax.legend()
_common.savefig(fig, "14_loss_along_directions.png")

# %% [markdown]
# ## 2. FGM, checked against the same recipe in torch
# `FGM.backward(loss, loss_fn)`: backward the clean loss; E ← E + ε g/‖g‖; backward the loss
# there (adding into the same .grad); put E back; the optimizer then steps on
# ∇L(E) + ∇L(E + r). In torch the recipe is the well-known few lines, written out below.

# %%
ours.zero_grad()
original_array = E._data
fgm = mb.FGM(ours, eps=0.5)
fgm.backward(ours(ids, labels=labels).loss, lambda: ours(ids, labels=labels).loss)
assert E._data is original_array and np.array_equal(E.numpy(), E0)   # restored bit for bit


def torch_loss():
    return hf(input_ids=torch.tensor(ids), labels=torch.tensor(labels)).loss


emb = hf.bert.embeddings.word_embeddings.weight
torch_loss().backward()
backup = emb.data.clone()
emb.data.add_(0.5 * emb.grad / torch.norm(emb.grad))
torch_loss().backward()
emb.data = backup

theirs = dict(hf.named_parameters())
# Errors relative to max(1, |g|): the key biases' gradients are exactly 0 in exact arithmetic
# (adding q·b_k to a whole row of scores leaves the softmax unchanged), so both sides hold only
# ~1e-17 rounding noise there, and noise divided by noise says nothing.
worst = max(np.abs(p.grad.numpy() - theirs[n].grad.numpy()).max()
            / max(1.0, float(theirs[n].grad.abs().max())) for n, p in ours.named_parameters())
print(f"FGM: largest relative gradient difference vs torch over all parameters: {worst:.1e}")
assert worst < 1e-10   # float64 on both sides: rounding is ~1e-15

# %% [markdown]
# ## 3. PGD: K steps inside the ball
# Each step moves E by α along the *current* gradient (of the loss at the perturbed embeddings)
# and projects back onto ‖E − E₀‖ ≤ ε. With α = 0.3 and ε = 0.5 the projection acts from the
# second step on. We record the loss and ‖r‖ after every step.

# %%
pgd = mb.PGD(ours, eps=0.5, alpha=0.3, steps=6)
ours.zero_grad()
ours(ids, labels=labels).loss.backward()
losses, norms = [clean_loss.item()], [0.0]
for t in range(pgd.steps):
    pgd.attack(first=t == 0)
    ours.zero_grad()
    adv = ours(ids, labels=labels).loss
    adv.backward()
    losses.append(adv.item())
    norms.append(np.linalg.norm(E.numpy() - E0))
pgd.restore()
assert np.array_equal(E.numpy(), E0)
assert max(norms) <= 0.5 + 1e-12 and abs(norms[-1] - 0.5) < 1e-12   # on the sphere, never outside
fgm_loss = loss_at(E0 + 0.5 * u_grad)
print("PGD losses per step:", " ".join(f"{v:.4f}" for v in losses), f"| FGM at ε: {fgm_loss:.4f}")
assert losses[-1] > clean_loss.item()

fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
a1.plot(losses, "o-", label="PGD")
a1.axhline(fgm_loss, ls="--", color="C1", label=_common.tr("FGM (one step of ε)", "FGM（一步走ε）"))
a1.set(xlabel=_common.tr("PGD step", "PGD步数"), ylabel=_common.tr("loss at E + r", "E + r处的损失"),
       title=_common.tr("Inner maximisation", "内层最大化"))
a1.legend()
a2.plot(norms, "o-")
a2.axhline(0.5, ls="--", color="gray")
a2.set(xlabel=_common.tr("PGD step", "PGD步数"), ylabel="‖r‖₂",
       title=_common.tr("Projected onto the ε-ball (ε = 0.5)", "投影回ε球内（ε = 0.5）"))
_common.savefig(fig, "14_pgd_steps.png")

# %% [markdown]
# ## 4. The price
# FGM costs one extra forward and backward per batch, PGD K extra: adversarial training is
# 2x or (K + 1)x the compute of plain fine-tuning for the same number of steps.

# %%
calls = {"n": 0}


def loss_fn():
    calls["n"] += 1
    return ours(ids, labels=labels).loss


def timed(step) -> tuple[float, float]:
    """(seconds per batch, forward passes per batch) over 5 batches."""
    calls["n"], t0 = 0, time.perf_counter()
    for _ in range(5):
        ours.zero_grad()
        step()
    return (time.perf_counter() - t0) / 5, calls["n"] / 5


def with_attack(attack):
    return lambda: attack.backward(loss_fn(), loss_fn)


(t_plain, n_plain) = timed(lambda: loss_fn().backward())
(t_fgm, n_fgm), (t_pgd, n_pgd) = timed(with_attack(mb.FGM(ours))), timed(with_attack(mb.PGD(ours, steps=3)))
print(f"per batch: plain {1e3 * t_plain:.1f} ms ({n_plain:.0f} pass), FGM {t_fgm / t_plain:.1f}x "
      f"({n_fgm:.0f} passes), PGD(K=3) {t_pgd / t_plain:.1f}x ({n_pgd:.0f} passes)")
assert (n_plain, n_fgm, n_pgd) == (1, 2, 4)   # timings are noisy on a shared CPU; counts are not

# %% [markdown] tags=["questions"]
# ## Check your understanding
#
# 1. Why perturb the word embeddings rather than the input text?
#
# 2. Derive FGM's r from the linearisation L(E + r) ≈ L(E) + ⟨g, r⟩ with ‖r‖₂ ≤ ε.
#
# 3. Why must E be put back after the adversarial backward, and what gradient does the optimizer
#    step on?
#
# 4. How does PGD differ from FGM, and what does each cost per batch?
#
# 5. Why do random unit directions barely change the loss in the 9600-dimensional embedding space?

# %% [markdown] tags=["answers"]
# ## Answers
#
# 1. Text is discrete: there is no small change of a token and no gradient with respect to one.
#    The embedding matrix is the first place where the input is continuous.
#
# 2. Maximise ⟨g, r⟩ over the ball: by Cauchy–Schwarz ⟨g, r⟩ ≤ ‖g‖₂ ε, with equality for r = ε
#    g/‖g‖₂.
#
# 3. The perturbation is a probe, not an update: if it stayed, the embeddings would drift by r
#    every step. Both backward calls add into `.grad`, so the optimizer steps on ∇L(E) + ∇L(E + r)
#    from the clean E.
#
# 4. PGD takes K smaller steps, each along the gradient at the current perturbed point and
#    projected back onto ‖r‖ ≤ ε, so it finds a worse (higher-loss) point than one linearised
#    step. FGM costs one extra forward and backward (2× plain training); PGD costs K extra ((K +
#    1)×).
#
# 5. A random unit vector's inner product with g is of order ‖g‖/√n, with n = 9600: about 1% of
#    the rate along g/‖g‖, the steepest direction.
