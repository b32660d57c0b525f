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
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import transformers
from safetensors.numpy import load_file

import _ddp_worker as worker

rng = np.random.default_rng(0)
N, FEATURES, HIDDEN = 256, 5, 8
X = rng.standard_normal((N, FEATURES))
y = (rng.random(N) < 1 / (1 + np.exp(-X @ rng.standard_normal(FEATURES)))).astype(np.float64)
params = worker.init_params(rng, FEATURES, HIDDEN)
print("parameters:", {k: v.shape for k, v in params.items()}, "=", sum(v.size for v in params.values()), "numbers")


def torch_grad(params: dict, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The oracle: the same MLP and mean loss in torch, its gradient flattened as worker.flatten does."""
    p = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    hidden = torch.tanh(torch.tensor(X) @ p["W1"].T + p["b1"])
    logit = (hidden @ p["w2"].T + p["b2"])[:, 0]
    torch.nn.functional.binary_cross_entropy_with_logits(logit, torch.tensor(y)).backward()
    return np.concatenate([p[k].grad.numpy().ravel() for k in worker.NAMES])


def launch(nproc: int, *args: str) -> None:
    """``python -m torch.distributed.run --standalone --nproc_per_node NPROC ARGS...`` (torchrun on
    this machine, rendezvous on a free local port), or for one process plain ``python ARGS...``: a
    single process needs no launcher. One thread per process, as torchrun's default."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(_common.ROOT), os.environ.get("PYTHONPATH")]))}
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    cmd = [sys.executable, *launcher, *args]
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
full = worker.flatten(worker.loss_and_grads(params, Xb, yb)[1])
halves = [worker.flatten(worker.loss_and_grads(params, Xb[s], yb[s])[1]) for s in (slice(0, B), slice(B, 2 * B))]

p = worker.leaves(params)                        # accumulation: two backward() calls, no zero_grad between
for s in (slice(0, B), slice(B, 2 * B)):
    (worker.mean_loss(p, Xb[s], yb[s]) / 2).backward()
accumulated = worker.flatten([p[k].grad.numpy() for k in worker.NAMES])

oracle = torch_grad(params, Xb, yb)
for name, g in (("minigrad, whole batch", full), ("mean of the two halves", (halves[0] + halves[1]) / 2),
                ("accumulated in .grad", accumulated)):
    print(f"{name:>24}: max rel. error vs torch {_common.max_rel_err(g, oracle):.1e}")
    # float64: the three sum the same numbers in different orders, ~1e-16 relative apart; a wrong
    # weighting (a sum instead of a mean, a half counted twice) is off by O(1).
    assert _common.max_rel_err(g, oracle) < 1e-12

# %% [markdown]
# Now for real: two processes, each with its half. `lessons/_ddp_worker.py` (read it: about 100
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
# torch.from_numpy first, in this process: the tensor is a view of the array's memory, so an
# in-place torch operation (as all_reduce is) changes the numpy array, with nothing copied.
buffer = full.copy()
view = torch.from_numpy(buffer)
view.mul_(2)
assert view.data_ptr() == buffer.ctypes.data and np.array_equal(buffer, 2 * full)

with tempfile.TemporaryDirectory() as tmp:
    np.savez(Path(tmp) / "in.npz", X=Xb, y=yb, Xu=X[:4], yu=y[:4], uneven=np.array([3, 1]), **params)
    launch(2, str(_common.LESSONS / "_ddp_worker.py"), str(Path(tmp) / "in.npz"), tmp)
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
per_example = np.stack([worker.flatten(worker.loss_and_grads(params, X[i:i + 1], y[i:i + 1])[1]) for i in range(N)])
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
# 32 examples together, at six learning rates from 0.4 down to 0.0125. Their difference, relative
# to the step, should be proportional to η where η is small (an O(η²) gap in an O(η) step).

# %%
def sgd(params: dict, batches: list[np.ndarray], lr: float) -> np.ndarray:
    """Plain SGD steps, one per batch of example indices; returns the flattened weights."""
    p = dict(params)
    for idx in batches:
        grads = worker.loss_and_grads(p, X[idx], y[idx])[1]
        p = {k: p[k] - lr * g for k, g in zip(worker.NAMES, grads)}
    return worker.flatten([p[k] for k in worker.NAMES])


start = worker.flatten([params[k] for k in worker.NAMES])
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

# %% [markdown]
# ## 3. The equivalence, for real: `torchrun` fine-tuning a BERT
# `mini_bert.finetune` does §1 inside its training loop when `torchrun` starts it: each process
# (a *rank*) takes its contiguous part of every global batch of the single-process stream, weighs
# its loss by n_r/n, and after backward the gradients are summed with `all_reduce` (bucketed, on
# numpy buffers shared with torch, as above) before clipping and AdamW. `--batch-size` is *per
# rank*. So two ranks at `--batch-size 8` should take the very steps of one process at
# `--batch-size 16`, and so should one process at `--batch-size 8 --grad-accum 2` (accumulation).
#
# A tiny random BERT (2 layers, width 16, written by transformers, dropout 0 so that a step is a
# deterministic function of weights and batch), 48 synthetic sentences, 5 AdamW steps (crossing an
# epoch boundary), in four runs: one process at batch 16; one at batch 8 with 2 accumulation steps;
# two ranks at batch 8 each; and, for scale, one process at batch 8 — a different run.
#
# **How close is "the same"?** float32 sums of the same numbers in another order differ, and the
# runs do sum differently: the sums over the batch's tokens are split across ranks or micro-batches,
# and a rank's matrix products have other shapes (its half batch may be padded less), which changes
# how a kernel blocks its sums. A float32 sum of k terms is within about ku of the exact sum,
# relative to Σ|terms| (u = 2⁻²⁴; the classic bound for recursive summation). A gradient passes
# through 2L + 2 such sums (a forward and a backward matrix product per layer, the embeddings and
# the head), the longest over the n = 16 × 16 = 256 tokens of a global batch: each run's gradient
# is within (2L + 2)nu of the exact one, the two runs' within ρ = 2(2L + 2)nu of each other.
# AdamW's step η·m̂/√v̂ changes by at most 2ρ relative when every gradient it has seen changes by ρ
# (m̂ is linear in g, √v̂ too), and |m̂/√v̂| ≤ √t at step t (a weighted mean of t gradients
# against their root mean square, β₂ ≈ 1). Summed over the steps:
#
# $$|\Delta w| \le \sum_t \eta_t \cdot 2\rho\sqrt t = 4(2L+2)\,nu \sum_t \eta_t \sqrt t.$$
#
# The bound assumes that no gradient is a sum that cancels almost to zero (there rounding noise is
# relative to a tiny value, and Adam's normalisation turns noise into a full-size step), and it
# neglects how the tiny weight differences change later gradients (second order over 5 small
# steps). The batch-8 run shows how far apart two *different* runs are.

# %%
WORDS = "the a movie film was is great good bad awful not very fun boring and but i it".split()
STEPS, LR, MAX_LEN, BATCH = 5, 1e-3, 16, 8


def write_tsv(path: Path, n: int) -> None:
    """n random sentences; the label: more positive than negative words."""
    lines = ["sentence\tlabel"]
    for _ in range(n):
        words = list(rng.choice(WORDS, rng.integers(2, 12)))
        score = sum(w in ("good", "great", "fun") for w in words) - sum(w in ("bad", "awful", "boring") for w in words)
        lines.append(" ".join(words) + f"\t{int(score > 0)}")
    path.write_text("\n".join(lines) + "\n")


work = Path(tempfile.mkdtemp(prefix="lesson20_"))
(work / "bert").mkdir()
(work / "bert" / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
torch.manual_seed(0)
config = transformers.BertConfig(vocab_size=5 + len(WORDS), hidden_size=16, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
                                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=1)
transformers.utils.logging.disable_progress_bar()
transformers.BertForSequenceClassification(config).save_pretrained(work / "bert")
write_tsv(work / "train.tsv", 48)
write_tsv(work / "dev.tsv", 16)

common_args = ["--model", str(work / "bert"), "--train", str(work / "train.tsv"), "--dev", str(work / "dev.tsv"),
               "--max-steps", str(STEPS), "--lr", str(LR), "--warmup-ratio", "0", "--max-length", str(MAX_LEN),
               "--eval-every", str(STEPS), "--log-every", "1", "--seed", "0", "--no-progress", "--no-plot"]
runs = {"1 process × 16": (1, ["--batch-size", str(2 * BATCH)]),
        "1 process × 8, accum 2": (1, ["--batch-size", str(BATCH), "--grad-accum", "2"]),
        "2 ranks × 8": (2, ["--batch-size", str(BATCH)]),
        "1 process × 8": (1, ["--batch-size", str(BATCH)])}
weights, metrics = {}, {}
for k, (name, (nproc, args)) in enumerate(runs.items()):
    out = work / f"run{k}"
    launch(nproc, "-m", "mini_bert.finetune", *common_args, *args, "--output", str(out))
    weights[name] = load_file(out / "last" / "model.safetensors")
    metrics[name] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
shutil.rmtree(work)

# %%
reference = "1 process × 16"
u = 2.0 ** -24
lrs = [m["lr"] for m in metrics[reference] if m["event"] == "train"]
rho = 2 * (2 * config.num_hidden_layers + 2) * (2 * BATCH * MAX_LEN) * u   # the runs' gradients, relative
bound = 2 * rho * sum(lr * np.sqrt(t) for t, lr in enumerate(lrs, 1))
print(f"learning rates {lrs}; ρ = {rho:.1e}; the bound on |Δw|: {bound:.1e}")
gaps = {name: max(float(np.abs(w[n] - weights[reference][n]).max()) for n in w)
        for name, w in weights.items() if name != reference}
for name, g in gaps.items():
    print(f"{name:>24}: max |Δw| vs one process at batch 16 = {g:.1e}")
assert gaps["1 process × 8, accum 2"] <= bound and gaps["2 ranks × 8"] <= bound
assert gaps["1 process × 8"] > 1000 * bound   # a different run is far outside it

print("\nmetrics.jsonl side by side (train loss per step; the final dev evaluation):")
print(f"{'step':>4} " + " ".join(f"{name:>24}" for name in metrics))
train = {name: [m for m in ms if m["event"] == "train"] for name, ms in metrics.items()}
for i in range(STEPS):
    print(f"{i + 1:>4} " + " ".join(f"{train[name][i]['loss']:>24.7f}" for name in metrics))
dev = {name: [m for m in ms if m["event"] == "eval"][-1] for name, ms in metrics.items()}
print(" dev " + " ".join(f"{d['loss']:>14.7f} acc {d['accuracy']:.4f}".rjust(24) for d in dev.values()))
for name in ("1 process × 8, accum 2", "2 ranks × 8"):
    # A loss (a mean of positive terms) goes through a subset of the sums its gradient does: within
    # ρ relative, like the gradients; weights within the bound above move it far less.
    np.testing.assert_allclose([m["loss"] for m in train[name]], [m["loss"] for m in train[reference]], rtol=rho)
    np.testing.assert_allclose(dev[name]["loss"], dev[reference]["loss"], rtol=rho)
    assert dev[name]["accuracy"] == dev[reference]["accuracy"]

# %% [markdown]
# ## Takeaways
# - Data parallelism: every rank holds the whole model and a part of each batch; one all-reduce of
#   the gradients (a sum, then ÷ W, or each rank's mean weighted by n_r/n when the parts are
#   uneven) gives every rank the whole batch's gradient, so all take the same step.
# - It is gradient accumulation turned sideways: accumulation sums micro-batches one after
#   another in `.grad`, all-reduce sums the ranks' buffers at once. Both equal one big batch.
# - `torch.from_numpy` shares memory: minigrad's numpy gradients go through gloo without a copy.
# - W ranks at batch B *are* a batch-B·W run: reuse the learning rate tuned for B·W. Gradient noise
#   falls as 1/B; for SGD the linear scaling rule (batch × k, lr × k, after a warmup) holds to
#   first order in η and fails where the weights move fast.
# - Two `torchrun` ranks at batch 8, one process at batch 16 and one at batch 8 with 2 accumulation
#   steps fine-tune a BERT to the same weights within float32's summation-order bound.

# %% [markdown] tags=["questions"]
# ## Check your understanding
#
# 1. Gradient accumulation over k micro-batches and an all-reduce over k ranks compute the same
#    gradient. What does each one trade: memory, time, hardware?
#
# 2. Rank 0 has 3 examples of the last batch and rank 1 has 1. Each computes the mean loss of its
#    own examples. What must happen before (or after) the SUM all-reduce, and what goes wrong with
#    a plain mean of the two means?
#
# 3. You tuned lr = 2e-5 for batch 32 on one GPU. You now run 8 GPUs with `--batch-size 32`. What
#    global batch are you training with, and what are your options for the learning rate?
#
# 4. Why does the linear scaling rule need a warmup, and why does it eventually stop working?
#
# 5. Why can two ranks and one process agree only to float32 rounding, not bit for bit, and why
#    would a wrong batch or learning rate be caught by the same check?

# %% [markdown] tags=["answers"]
# ## Answers
#
# 1. Accumulation needs one device and the memory of one micro-batch, and takes k times as long per
#    step. An all-reduce needs k devices (each with a whole copy of the model and its optimizer
#    state) and a network, and takes about the time of one micro-batch plus the communication. The
#    step is the same. They combine: the global batch is per-rank batch × ranks × accumulation steps.
#
# 2. Each rank's mean must be weighted by its share n_r/n (3/4 and 1/4) before the sum, or each
#    rank's *sum* of losses all-reduced and divided by the global n. A plain mean of the means
#    weighs the lone example of rank 1 as half of the batch instead of a quarter: a different
#    gradient (0.59 in max relative error in the lesson), not rounding.
#
# 3. 8 × 32 = 256. Either keep the global batch at 32 (`--batch-size 4` per GPU) and reuse 2e-5, or
#    train at 256 and re-tune the learning rate for it: a scaling rule gives a starting point
#    (linear for SGD, 8 × 2e-5; for AdamW a square-root rule is a common heuristic), with a warmup.
#
# 4. The rule assumes that k small steps move the weights as one step k times as long, i.e. that
#    the gradient barely changes over those k steps: an O(η²) gap (measured in §2). Early in
#    training the weights move fast and that gap is large, so the learning rate is ramped up. At
#    very large batches (kη large) the gap dominates, and the gradient noise that the rule trades
#    against is already small, so a larger batch no longer buys a proportionally larger step.
#
# 5. float32 addition is not associative: splitting a batch changes the order in which the ranks'
#    contributions are summed, which moves the result by a few units of the last place. The bound
#    derived from the summation's rounding (1.6e-6 on |Δw| here) is thousands of times smaller than
#    the difference a different batch makes (about 5e-3 after 5 steps of lr 1e-3), so it separates
#    rounding from a real mistake.
