# %% [markdown]
# # Lesson 11 — Where does the time of a BERT training step go?
#
# A training step is a forward pass, a backward pass and an optimizer update. Which of the few
# hundred ops inside it cost the time? `minigrad.profile()` wraps every op while a block runs and
# records, per op and phase: wall time, an estimate of the floating-point operations (FLOPs), and
# the bytes the op reads and writes.
#
# Two numbers explain most of what we will see:
# - a matrix product [M, K] @ [K, N] does 2·M·N·K FLOPs on M·K + K·N + M·N numbers: it does
#   *many* FLOPs per byte, so it runs near the processor's arithmetic peak (**compute-bound**);
# - an elementwise op (add, GELU, dropout) does a handful of FLOPs per number it reads and writes:
#   it is limited by memory bandwidth (**memory-bound**), far below the arithmetic peak.
#
# **Goal.** Profile one training step of all-MiniLM-L6-v2 (batch 8 × 64 tokens), read the table,
# check the profiler's FLOP counts against the analytic formula and against PyTorch's own FLOP
# counter on HF's BERT, and place every op on a *roofline* against this machine's measured matmul
# speed and memory bandwidth.
#
# **Prerequisites.** Lessons 6 (the encoder layer), 8 (MiniLM).

# %%
import _common
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode

import mini_bert
import minigrad as mg

transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()  # no "classifier weights are new" report
# (nor from mini_bert: the new head's initial weights do not matter for timing)
warnings.filterwarnings("ignore", message=".*keep their fresh initialisation")
B, T = 8, 64
HEAD = dict(num_labels=1, problem_type="multi_label_classification")  # one logit, BCE (lesson 3)
model_dir = mini_bert.default_model_dir()
mg.manual_seed(0)
model = mini_bert.BertForSequenceClassification.from_pretrained(model_dir, **HEAD).train()
cfg = model.config
opt = mg.optim.AdamW(model.parameters(), lr=1e-5)

# The cost does not depend on which tokens: random ids, no padding, random labels.
rng = np.random.default_rng(0)
batch = dict(input_ids=rng.integers(1000, cfg.vocab_size, (B, T)),
             attention_mask=np.ones((B, T), np.int64))
labels = rng.integers(0, 2, (B, 1)).astype(np.float32)


def step() -> float:
    """One training step; returns the seconds spent in the optimizer update."""
    opt.zero_grad()
    # Asking for the attention weights keeps attention as its separate ops (Q Kᵀ, scale, mask,
    # softmax, dropout, A V), so the table shows each; without them it is one fused op.
    model(**batch, labels=labels, output_attentions=True).loss.backward()
    start = time.perf_counter()
    opt.step()
    return time.perf_counter() - start


step()  # warm-up: first-call costs (memory allocation, caches) are not what we want to measure
with mg.profile() as prof:
    optimizer_s = step()
print(prof.table())

# %% [markdown]
# ## 1. Reading the table
# Rows are sorted by time. `Linear` (y = x Wᵀ + b, 38 of them: 6 per layer, the pooler and the
# classifier) dominates both phases. The backward of a Linear computes two matrix products
# (∂L/∂x = G W and ∂L/∂W = Gᵀ x), so it costs twice the forward's FLOPs. `MatMul` is attention's
# Q Kᵀ and A V. Everything else is elementwise or a reduction: few FLOPs, yet a visible share of
# the time. `Embedding` backward has no FLOPs but writes a gradient for the *whole* 30 522 × 384
# word table (47 MB), although only the rows of the 512 tokens in the batch are non-zero. The last
# line is time spent outside any op: Python bookkeeping and the AdamW update (which works directly
# on the raw arrays of 22.7 M parameters and their two moment buffers).

# %%
totals = prof.totals()
MATMUL_OPS = ("Linear", "MatMul")


def share(ops, what: str) -> float:
    """Fraction of all profiled seconds or FLOPs spent in ``ops`` (both phases)."""
    part = sum(getattr(s, what) for (op, _), s in prof.stats.items() if op in ops)
    return part / getattr(totals["all"], what)


flop_share, time_share = share(MATMUL_OPS, "flops"), share(MATMUL_OPS, "seconds")
print(f"matrix products: {flop_share:.2%} of the FLOPs, {time_share:.0%} of the op time")
print(f"everything else: {1 - flop_share:.2%} of the FLOPs, {1 - time_share:.0%} of the op time")
print(f"AdamW update: {optimizer_s * 1e3:.0f} ms; whole step {prof.wall_seconds * 1e3:.0f} ms")

# Bookkeeping that must hold: the rows add up to the totals, and the block's wall time covers
# all op time plus the optimizer (which runs outside ops).
for phase in ("forward", "backward"):
    rows = [s for (_, ph), s in prof.stats.items() if ph == phase]
    assert abs(sum(s.seconds for s in rows) - totals[phase].seconds) < 1e-9
    assert sum(s.calls for s in rows) == totals[phase].calls
assert prof.wall_seconds >= totals["all"].seconds + optimizer_s
# Matrix products are nearly all the arithmetic (elementwise ops do ~1-8 FLOPs per number while
# a Linear does 2·in_features per output)...
assert flop_share > 0.99
# ...but the other ops take far more than their FLOP share of the time: they are memory-bound.
assert (1 - time_share) > 5 * (1 - flop_share)

# %% [markdown]
# ## 2. Are the FLOP counts right?
# The profiler estimates FLOPs from the shapes it sees. For the matrix products the count is exact
# and we can write it down. With N = B·T tokens, every Linear does 2·N·in·out FLOPs forward,
# except the pooler and the classifier, which see only the B `[CLS]` vectors. Attention's two
# products per layer each do 2·B·T·T·H (all heads together). And an independent check: PyTorch's
# `FlopCounterMode` counts the matrix products (addmm, mm, bmm) of one forward+backward of HF's
# `BertForSequenceClassification` on the same batch.

# %%
analytic_linear = 0
n_linear = 0
for name, m in model.named_modules():
    if isinstance(m, mg.nn.Linear):
        rows = B if ("pooler" in name or "classifier" in name) else B * T
        analytic_linear += 2 * rows * m.in_features * m.out_features
        n_linear += 1
analytic_attention = cfg.num_hidden_layers * 2 * (2 * B * T * T * cfg.hidden_size)

stat = prof.stats
print(f"Linear forward: profiled {stat['Linear', 'forward'].flops / 1e9:.4f} GFLOP, "
      f"analytic {analytic_linear / 1e9:.4f} GFLOP")
assert stat["Linear", "forward"].flops == analytic_linear  # integer arithmetic: exact
assert stat["MatMul", "forward"].flops == analytic_attention
assert stat["Linear", "forward"].calls == n_linear == 6 * cfg.num_hidden_layers + 2
# Backward: two products of the forward's size (every input needs a gradient here: the
# embeddings are trained too, so even the first layer's input has one).
for op in MATMUL_OPS:
    assert stat[op, "backward"].flops == 2 * stat[op, "forward"].flops, op

hf = transformers.BertForSequenceClassification.from_pretrained(
    model_dir, attn_implementation="eager", **HEAD).train()
counter = FlopCounterMode(display=False)
with counter:
    out = hf(**{k: torch.tensor(v) for k, v in batch.items()}, labels=torch.tensor(labels))
    out.loss.backward()
ours_mm = sum(s.flops for (op, _), s in stat.items() if op in MATMUL_OPS)
print(f"matrix-product FLOPs of forward + backward: minigrad {ours_mm / 1e9:.4f} G, "
      f"torch's counter on HF {counter.get_total_flops() / 1e9:.4f} G")
assert ours_mm == counter.get_total_flops()

# %% [markdown]
# Every op of this step is part of the graph (the attention mask is built in numpy before any op,
# and every other input descends from a trained parameter), so each forward op has exactly one
# backward node: the backward sweep visits as many nodes per op type as the forward created.

# %%
for op in {op for op, _ in stat}:
    assert stat[op, "forward"].calls == stat[op, "backward"].calls, op
print(f"{totals['forward'].calls} forward ops, {totals['backward'].calls} backward nodes")

# %% [markdown]
# ## 3. The roofline: how fast *could* each op be?
# Measure two limits of this machine: the speed of a large float32 matrix product (numpy's BLAS
# sgemm, on the shape of MiniLM's feed-forward layer), and the memory bandwidth of a large copy.
# An op that does I FLOPs per byte cannot run faster than min(peak, I × bandwidth): that is the
# roofline. Ops left of the ridge point (peak / bandwidth) are memory-bound.

# %%
def best_seconds(fn, repeat: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)  # the least disturbed run: closest to what the hardware can do


a = rng.standard_normal((B * T, cfg.hidden_size)).astype(np.float32)
w = rng.standard_normal((cfg.hidden_size, cfg.intermediate_size)).astype(np.float32)
sgemm_gflops = 2 * a.shape[0] * a.shape[1] * w.shape[1] / best_seconds(lambda: a @ w) / 1e9
src = np.ones(16 * 2**20, np.float32)  # 64 MB: larger than any cache
dst = np.empty_like(src)
bandwidth_gbs = 2 * src.nbytes / best_seconds(lambda: np.copyto(dst, src)) / 1e9  # read + write
print(f"measured: sgemm {sgemm_gflops:.1f} GFLOP/s, memory copy {bandwidth_gbs:.1f} GB/s, "
      f"ridge point {sgemm_gflops / bandwidth_gbs:.1f} FLOP/byte")
for op, phase in (("Linear", "forward"), ("Linear", "backward"), ("Gelu", "forward")):
    s = stat[op, phase]
    print(f"{op} {phase}: {s.gflops_per_s:.1f} GFLOP/s = {s.gflops_per_s / sgemm_gflops:.0%} of sgemm, "
          f"{s.flops / s.bytes:.1f} FLOP/byte")

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(13, 5))
intensity = np.logspace(-2, 3, 200)
ax0.loglog(intensity, np.minimum(sgemm_gflops, intensity * bandwidth_gbs), "k-", lw=1,
           label=_common.tr("roofline (measured sgemm, copy bandwidth)", "屋顶线（实测sgemm速度与复制带宽）"))
for (op, phase), s in stat.items():
    # Skip ops that only move data (no FLOPs), and the tiniest rows: e.g. Add's backward just
    # hands the incoming gradient on, so its FLOP estimate is fictional and its time ~0.
    if s.flops == 0 or s.seconds < 1e-3 * totals["all"].seconds:
        continue
    x, y = s.flops / s.bytes, s.gflops_per_s
    ax0.scatter(x, y, s=20 + 1000 * s.seconds / totals["all"].seconds, alpha=0.6,
                marker="o" if phase == "forward" else "s",
                color="tab:blue" if op in MATMUL_OPS else "tab:orange")
    if s.seconds > 0.015 * totals["all"].seconds:  # name the big ones, labels spread around
        name = _common.tr(f"{op} {phase}", f"{op} {'前向' if phase == 'forward' else '反向'}")
        ax0.annotate(name, (x, y), fontsize=7, textcoords="offset points",
                     xytext=[(-80, 12), (15, -18), (15, 12), (-80, -18)][len(ax0.texts) % 4],
                     arrowprops=dict(arrowstyle="-", lw=0.5, color="gray"))
ax0.set_xlabel(_common.tr("arithmetic intensity (FLOP / byte)", "算术强度（FLOP / 字节）"))
ax0.set_ylabel(_common.tr("achieved GFLOP/s", "实际达到的GFLOP/s"))
ax0.set_title(_common.tr("roofline (area ∝ time; ○ forward, □ backward)", "屋顶线（面积∝时间；○前向，□反向）"))
ax0.legend(fontsize=8, loc="lower right")

bar_names = ["FLOPs", _common.tr("op time", "算子时间"), _common.tr("step time", "整步时间")]
in_ops = totals["all"].seconds / prof.wall_seconds  # fraction of the step spent inside ops
mm_parts = [flop_share, time_share, time_share * in_ops]
other = [1 - flop_share, 1 - time_share, (1 - time_share) * in_ops]
outside = [0, 0, 1 - in_ops]
ax1.bar(bar_names, mm_parts, label="Linear + MatMul", color="tab:blue")
ax1.bar(bar_names, other, bottom=mm_parts,
        label=_common.tr("elementwise, reductions, data movement", "逐元素运算、归约、数据搬运"),
        color="tab:orange")
ax1.bar(bar_names, outside, bottom=np.add(mm_parts, other),
        label=_common.tr("outside ops (AdamW, Python)", "算子之外（AdamW、Python）"),
        color="tab:gray")
ax1.set_ylabel(_common.tr("share", "占比"))
ax1.set_title(_common.tr(f"one training step, B={B}, T={T} ({prof.wall_seconds * 1e3:.0f} ms)",
                         f"一个训练步，B={B}，T={T}（{prof.wall_seconds * 1e3:.0f} ms）"))
ax1.legend(fontsize=8, loc="lower left")
_common.savefig(fig, "11_roofline_and_shares.png")
prof.plot(str(_common.out_path("11_time_per_op.png")))
_common.saved(_common.OUT / "11_time_per_op.png")

# %% [markdown]
# ## Takeaways
# - In BERT nearly all FLOPs are matrix products (here > 99%), and their FLOP count is exact:
#   2·tokens·in·out per Linear, twice that again in the backward.
# - The remaining ops have almost no FLOPs but cost real time, because they are memory-bound: a
#   faster processor does not help them, fewer passes over memory does (this is why frameworks
#   *fuse* GELU, dropout and LayerNorm into bigger kernels).
# - The optimizer update reads and writes 4 arrays per parameter: for a model with a large
#   embedding table it is a visible slice of the step.
# - Measure before optimising: the profile, the roofline and the analytic FLOP count together say
#   whether an op is slow because of the hardware's limits or because of the implementation.

# %% [markdown] tags=["questions"]
# ## Check your understanding
#
# 1. How many FLOPs does a Linear with in = 384, out = 1536 do on N tokens, forward and backward?
#    Why is the backward twice the forward?
#
# 2. Matrix products are over 99% of the FLOPs but much less of the time. Why?
#
# 3. What is the roofline bound for an op with arithmetic intensity I (FLOPs per byte), and what
#    is the ridge point?
#
# 4. Embedding's backward does no FLOPs but takes real time. Why?

# %% [markdown] tags=["answers"]
# ## Answers
#
# 1. Forward: 2·N·384·1536. Backward: twice that, because it computes two products of the same
#    size, ∂L/∂x = G W and ∂L/∂W = Gᵀ x, each 2·N·in·out FLOPs.
#
# 2. A matrix product reuses every number it reads many times (high arithmetic intensity) and runs
#    near the processor's peak. Elementwise ops (add, GELU, dropout) and reductions do a handful
#    of FLOPs per number read and written: they wait on memory bandwidth (memory-bound), far below
#    the peak.
#
# 3. Attainable speed ≤ min(peak FLOP/s, I × memory bandwidth). The ridge is I* = peak /
#    bandwidth: ops with I < I* are memory-bound, ops above it compute-bound.
#
# 4. It writes a dense gradient for the whole 30 522 × 384 word table (47 MB) although only the
#    rows of the batch's tokens are non-zero: pure memory traffic.
