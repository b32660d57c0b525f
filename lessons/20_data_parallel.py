# %% [markdown]
# # Lesson 20 — Data parallelism: one model, several processes, the same step
#
# When one process is not enough (several GPUs, several machines, or all the cores of a big CPU
# box), the usual answer is *data parallelism*: every process holds a full copy of the model, each
# takes a different part of every batch, and after the backward pass they average their gradients
# with one collective operation, an **all-reduce**, so that every copy takes exactly the same
# optimizer step. PyTorch's `DistributedDataParallel` (DDP) works this way on top of
# `torch.distributed`, and so does `mini_bert.finetune` when it is started by `torchrun`. minigrad
# keeps its own graph: torch.distributed only moves gradient buffers between processes.
#
# **Goal.** See that an all-reduce of gradients computes the same sum as gradient accumulation, and
# run it in two real processes; know why the *global* batch, not the per-process batch, sets the
# learning rate; check that two processes at batch B fine-tune a BERT like one process at batch 2B.
#
# **Prerequisites.** Lesson 9 (optimizers, the missing `zero_grad`), lesson 10 (fine-tuning).
#
# The lesson starts its processes with `python -m torch.distributed.run`, the module behind the
# `torchrun` command. A launcher starts a *file*, not a function defined in a notebook, so the code
# that each process runs lives in a small helper next to the lessons, `lessons/_ddp_worker.py`; the
# lesson imports its model from there too, so both sides compute with the same code.

# %%
import _common
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import _ddp_worker as W

rng = np.random.default_rng(0)
N, FEATURES, HIDDEN = 256, 5, 8
X = rng.standard_normal((N, FEATURES))
y = (rng.random(N) < 1 / (1 + np.exp(-X @ rng.standard_normal(FEATURES)))).astype(np.float64)
params = W.init_params(rng, FEATURES, HIDDEN)
print("parameters:", {k: v.shape for k, v in params.items()}, "=", sum(v.size for v in params.values()), "numbers")


def torch_grad(params: dict, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The oracle: the same MLP and mean loss in torch, its gradient flattened as W.flatten does."""
    p = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    hidden = torch.tanh(torch.tensor(X) @ p["W1"].T + p["b1"])
    logit = (hidden @ p["w2"].T + p["b2"])[:, 0]
    torch.nn.functional.binary_cross_entropy_with_logits(logit, torch.tensor(y)).backward()
    return np.concatenate([p[k].grad.numpy().ravel() for k in W.NAMES])


def torchrun(nproc: int, *args: str) -> None:
    """``python -m torch.distributed.run --standalone --nproc_per_node NPROC ARGS...``: torchrun on
    this machine, rendezvous on a free local port. One thread per process, as torchrun's default."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(_common.ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited with {proc.returncode}:\n{proc.stderr[-3000:]}"


# %% [markdown]
# ## 1. All-reduce is gradient accumulation seen from the other side
# A batch's loss is the mean of its examples' losses, L = (1/n) Σᵢ ℓᵢ, and the gradient is linear.
# Split a batch of 2B examples into two halves, A and A′, of B each:
#
# $$\nabla L_{2B} = \tfrac12\,(\nabla L_A + \nabla L_{A'}).$$
#
# There are two ways to get the right-hand side without ever holding the whole batch at once:
#
# - **Gradient accumulation** (one process, one half after the other): backward on L_A/2, then on
#   L_A′/2 *without* `zero_grad()` in between; `.grad` adds the two. Lessons 9 and 10 showed the
#   forgotten `zero_grad()` as a bug; here the addition is the point.
# - **All-reduce** (two processes, one half each): process r computes ∇L on its half; an
#   `all_reduce` with `SUM` leaves ∇L_A + ∇L_A′ in *every* process's buffer; divide by the number
#   of processes W = 2.
#
# The same sum: accumulation adds over micro-batches in time, all-reduce adds over processes in
# space. First the algebra, in one process, with minigrad (float64, and torch as the oracle).

# %%
B = 4
Xb, yb = X[:2 * B], y[:2 * B]
full = W.flatten(W.loss_and_grads(params, Xb, yb)[1])
halves = [W.flatten(W.loss_and_grads(params, Xb[s], yb[s])[1]) for s in (slice(0, B), slice(B, 2 * B))]

p = W.leaves(params)                        # accumulation: two backward() calls, no zero_grad between
for s in (slice(0, B), slice(B, 2 * B)):
    (W.mean_loss(p, Xb[s], yb[s]) / 2).backward()
accumulated = W.flatten([p[k].grad.numpy() for k in W.NAMES])

oracle = torch_grad(params, Xb, yb)
for name, g in (("minigrad, whole batch", full), ("mean of the two halves", (halves[0] + halves[1]) / 2),
                ("accumulated in .grad", accumulated)):
    print(f"{name:>24}: max rel. error vs torch {_common.max_rel_err(g, oracle):.1e}")
    # float64: the three sum the same numbers in different orders, ~1e-16 relative apart; a wrong
    # weighting (a sum instead of a mean, a half counted twice) is off by O(1).
    assert _common.max_rel_err(g, oracle) < 1e-12

# %% [markdown]
# Now for real: two processes, each with its half. `lessons/_ddp_worker.py` (read it: about 60
# lines) starts a gloo process group, computes its half's gradient with minigrad, copies it into
# one flat numpy buffer (one `all_reduce` per buffer, not per tensor: DDP groups gradients into
# ~25 MB *buckets* for the same reason) and hands that buffer to torch with `torch.from_numpy`,
# which makes a tensor that *shares* the numpy memory: no copy, and the in-place `all_reduce`
# writes the sum straight into the numpy array.
#
# Not every split is even. A batch of 4 on two processes is 2 + 2, but the last batch of an epoch
# can leave 3 on one process and 1 on the other. Then each process's mean must be weighted by its
# share n_r/n before the sum: a plain mean of the two means would count the lone example of the
# second process as half of the batch instead of a quarter. The worker does both; we compare.

# %%
with tempfile.TemporaryDirectory() as tmp:
    np.savez(Path(tmp) / "in.npz", X=Xb, y=yb, Xu=X[:4], yu=y[:4], uneven=np.array([3, 1]), **params)
    torchrun(2, str(_common.LESSONS / "_ddp_worker.py"), str(Path(tmp) / "in.npz"), tmp)
    ranks = [dict(np.load(Path(tmp) / f"rank{r}.npz")) for r in range(2)]

print("zero-copy (tensor.data_ptr() == array address) on each rank:", [bool(r["zero_copy"]) for r in ranks])
assert all(r["zero_copy"] for r in ranks)
# Each rank computed its own half's gradient, exactly what the one-process halves above are ...
for r in range(2):
    np.testing.assert_array_equal(ranks[r]["local"], halves[r])
# ... the SUM all-reduce left the same buffer on both ranks: their sum (with two terms, a + b is
# exactly b + a, so the result is bitwise the same in either order) ...
for r in range(2):
    np.testing.assert_array_equal(ranks[r]["sum"], halves[0] + halves[1])
# ... and dividing by W gave the whole batch's gradient: both ranks take the same step.
print(f"all-reduced mean vs torch's whole-batch gradient: max rel. error "
      f"{_common.max_rel_err(ranks[0]['mean'], oracle):.1e}")
assert _common.max_rel_err(ranks[0]["mean"], oracle) < 1e-12

uneven_true = torch_grad(params, X[:4], y[:4])
err_weighted = _common.max_rel_err(ranks[0]["uneven_weighted"], uneven_true)
err_naive = _common.max_rel_err(ranks[0]["uneven_naive"], uneven_true)
print(f"shards of 3 and 1: weights n_r/n give max rel. error {err_weighted:.1e}; "
      f"a plain mean of the two means {err_naive:.2f}")
assert err_weighted < 1e-12   # rounding, as above
assert err_naive > 1e-2       # a different gradient, not rounding: 1e10 times the rounding level

# %% [markdown]
# ## 2. Why the global batch sets the learning rate
# With W processes at a per-process batch B, every process steps with the mean gradient over B·W
# examples (§1): the run *is* a batch-B·W run, and one process at batch B·W takes the same steps.
# So the learning rate to use is the one that suits batch B·W, not the one tuned for B on a single
# process; this is why `mini_bert.finetune` logs the global batch (`--batch-size` × processes ×
# `--grad-accum`).
#
# What changes with the batch size is the *noise* of the step. A mini-batch gradient is an average
# of B per-example gradients drawn from the data set, so (like any average of independent draws)
# its variance around the full-data gradient ḡ falls as 1/B:
#
# $$\mathbb{E}\,\lVert g_B - \bar g \rVert^2 = \frac{\operatorname{tr}\Sigma}{B},$$
#
# where Σ is the covariance of the per-example gradients. (Drawing without replacement from N
# examples, as an epoch's shuffle does, multiplies this by (N − B)/(N − 1): at B = N there is no
# noise left.) Below: the per-example gradients of all N = 256 examples by minigrad, then thousands
# of random mini-batches at each B, their measured variance against the formula.

# %%
per_example = np.stack([W.flatten(W.loss_and_grads(params, X[i:i + 1], y[i:i + 1])[1]) for i in range(N)])
g_bar = per_example.mean(0)
trace_sigma = ((per_example - g_bar) ** 2).sum(1).mean()    # tr Σ: the per-example gradient's variance
# A mini-batch gradient is the mean of its examples' gradients (the linearity of §1), checked on one:
batch = rng.choice(N, 16, replace=False)
assert _common.max_rel_err(per_example[batch].mean(0), torch_grad(params, X[batch], y[batch])) < 1e-12

DRAWS = 4000
sizes = 2 ** np.arange(8)                                     # B = 1 ... 128
measured = {"with": [], "without": []}
for b in sizes:
    for kind in measured:
        idx = (rng.integers(0, N, (DRAWS, b)) if kind == "with"
               else np.argsort(rng.random((DRAWS, N)), axis=1)[:, :b])
        sq = ((per_example[idx].mean(1) - g_bar) ** 2).sum(1)   # ‖g_B − ḡ‖² for each draw
        theory = trace_sigma / b * (1 if kind == "with" else (N - b) / (N - 1))
        # A Monte Carlo mean of DRAWS squared norms: its standard error is std/√DRAWS, computed from
        # the same draws. Four standard errors: a wrong law (1/√B, or no (N − B)/(N − 1)) is off by
        # far more at every B > 2, while an honest estimate strays that far once in ~16,000 tries.
        assert abs(sq.mean() - theory) < 4 * sq.std() / np.sqrt(DRAWS), (kind, b, sq.mean(), theory)
        measured[kind].append(sq.mean())
slope = np.polyfit(np.log(sizes), np.log(measured["with"]), 1)[0]
print(f"tr Σ = {trace_sigma:.4f}; variance vs B with replacement: log-log slope {slope:.3f} (the law says −1)")
assert abs(slope + 1) < 0.05

# %% [markdown]
# Less noise per step is what lets a larger batch take a larger step. For SGD this is the **linear
# scaling rule** (Goyal et al. 2017, who trained ResNet-50 on ImageNet at batch 8192 in one hour):
# *when the batch is multiplied by k, multiply the learning rate by k*. The reason is first-order:
# k small steps of size η on k batches move the weights by −η Σⱼ gⱼ(θⱼ); one step of size kη on
# the union of the k batches moves them by −kη · (1/k) Σⱼ gⱼ(θ₀). The two agree as long as the
# gradients do not change much over the k small steps, i.e. up to a term of order η².
# Hence the caveats: the rule fails where the weights move fast, at the start of training, which
# is why Goyal et al. *warm up* the learning rate over the first epochs (lesson 9's warmup), and
# it breaks down beyond some batch size (for them, above ~8k). For Adam and AdamW, whose steps are
# normalised per coordinate, the rule is not linear (a square-root rule is a common heuristic);
# in any case the learning rate that was tuned belongs to the global batch it was tuned at.
#
# Measured on our MLP: k = 4 SGD steps on 4 batches of 8, against one step 4 times as long on the
# 32 examples together, at two learning rates. Their difference, relative to the step, should halve
# when η halves (an O(η²) gap in an O(η) step).

# %%
def sgd(params: dict, batches: list[np.ndarray], lr: float) -> np.ndarray:
    """Plain SGD steps, one per batch of example indices; returns the flattened weights."""
    p = dict(params)
    for idx in batches:
        grads = W.loss_and_grads(p, X[idx], y[idx])[1]
        p = {k: p[k] - lr * g for k, g in zip(W.NAMES, grads)}
    return W.flatten([p[k] for k in W.NAMES])


start = W.flatten([params[k] for k in W.NAMES])
k_batches = np.split(rng.permutation(N)[:32], 4)
rates = 0.4 / 2 ** np.arange(6)                                       # η = 0.4 ... 0.0125
gaps = []
for lr in rates:
    small = sgd(params, k_batches, lr) - start                       # 4 steps at batch 8, lr η
    big = sgd(params, [np.concatenate(k_batches)], 4 * lr) - start   # 1 step at batch 32, lr 4η
    gaps.append(np.linalg.norm(small - big) / np.linalg.norm(big))
    print(f"η = {lr:.4f}: 4 steps at batch 8 vs 1 step of 4η at batch 32 differ by {gaps[-1]:.2%} of the step")
gap_slope = np.polyfit(np.log(rates[2:]), np.log(gaps[2:]), 1)[0]
print(f"relative gap vs η, log-log slope at small η: {gap_slope:.2f} (first order: 1)")
# An O(η²) difference in an O(η) step: the relative gap is proportional to η where η is small (the
# next order, η², bends the curve at the largest rates, which the fit leaves out).
assert abs(gap_slope - 1) < 0.1

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
ax0.loglog(sizes, measured["with"], "o", label=_common.tr("measured, with replacement", "实测，有放回"))
ax0.loglog(sizes, trace_sigma / sizes, "-", color="tab:blue", alpha=0.6, label="tr Σ / B")
ax0.loglog(sizes, measured["without"], "s", color="tab:orange",
           label=_common.tr("measured, without replacement (one epoch's shuffle)", "实测，无放回（一轮内的打乱）"))
ax0.loglog(sizes, trace_sigma / sizes * (N - sizes) / (N - 1), "-", color="tab:orange", alpha=0.6,
           label="tr Σ / B · (N − B)/(N − 1)")
ax0.set_xticks(sizes, [str(b) for b in sizes])
ax0.minorticks_off()
ax0.set_xlabel(_common.tr("batch size B", "批大小 B"))
ax0.set_ylabel("E‖g_B − ḡ‖²")
ax0.set_title(_common.tr(f"gradient noise falls as 1/B (N = {N}, {DRAWS} draws each)",
                         f"梯度噪声按1/B下降（N = {N}，每个B抽{DRAWS}次）"))
ax0.legend(fontsize=8)
ax1.loglog(rates, gaps, "o-", label=_common.tr("4 steps at batch 8 vs 1 step of 4η at batch 32",
                                                 "批大小8走4步 vs 批大小32、4η走1步"))
ax1.loglog(rates, gaps[-1] * rates / rates[-1], ":", color="gray", label=_common.tr("∝ η", "∝ η"))
ax1.set_xticks(rates, [f"{r:g}" for r in rates], minor=False)
ax1.minorticks_off()
ax1.set_xlabel(_common.tr("learning rate η", "学习率 η"))
ax1.set_ylabel(_common.tr("‖difference‖ / ‖step‖", "‖差‖ / ‖步长‖"))
ax1.set_title(_common.tr("linear scaling holds to first order in η", "线性缩放在η的一阶上成立"))
ax1.legend(loc="upper left", fontsize=8)
_common.savefig(fig, "20_gradient_noise_and_scaling.png")
