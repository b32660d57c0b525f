# %% [markdown]
# # Lesson 13 — LoRA: fine-tuning through a low-rank side door
#
# Full fine-tuning (lesson 10's loop) updates all 22.7 M weights of MiniLM and has to store a full
# copy of them per task. LoRA (Hu et al., 2021) freezes the pre-trained weights and learns, for a
# few chosen matrices W [out, in], a low-rank correction:
#
#     y = x Wᵀ + b + (α/r) · x Aᵀ Bᵀ,    A: [r, in],  B: [out, r],  r ≪ min(in, out)
#
# The layer then computes with W + ΔW, ΔW = (α/r) B A, a matrix of rank ≤ r, at a cost of
# r·(in + out) trainable numbers instead of in·out. B starts at zero, so training starts from
# exactly the pre-trained model; A starts random, so that B's gradient is not zero.
#
# **Goal.** Build `mini_bert.LoRALinear`, check its output and gradients against torch, count what
# LoRA trains on MiniLM, watch it learn a toy task next to full fine-tuning, look at the rank of
# what each learned, and fold ΔW back into W for a plain checkpoint that transformers loads.
#
# **Prerequisites.** Lessons 6 (Linear layers, gradients vs torch), 8 (MiniLM), 9 (AdamW).

# %%
import _common

import os
import tempfile
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
import transformers

import mini_bert as mb
import minigrad as mg
from mini_bert import peft

transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()
warnings.filterwarnings("ignore", message=".*fresh initialisation.*")  # the new heads, expected

# %% [markdown]
# ## 1. One LoRA layer, against torch
# A 384 → 384 Linear (MiniLM's query size) with r = 8 and α = 16, so the scaling α/r = 2.
# B is set to random values here, otherwise the LoRA branch would output exactly 0 and the
# comparison would check nothing.

# %%
mg.manual_seed(0)
rng = np.random.default_rng(0)
base = mg.nn.Linear(384, 384)
lora = mb.LoRALinear(base, r=8, alpha=16)
x_np = rng.normal(size=(4, 10, 384)).astype(np.float32)
x = mg.tensor(x_np, requires_grad=True)

y0 = lora(x).numpy()
assert np.array_equal(y0, base(x).numpy())  # B = 0: exactly the frozen layer, bit for bit
lora.lora_B.weight._data = rng.normal(0, 0.1, (384, 8)).astype(np.float32)

y = lora(x)
(y * y).mean().backward()

xt = torch.tensor(x_np, requires_grad=True)
At = torch.tensor(lora.lora_A.weight.numpy(), requires_grad=True)
Bt = torch.tensor(lora.lora_B.weight.numpy(), requires_grad=True)
yt = xt @ torch.tensor(base.weight.numpy()).T + torch.tensor(base.bias.numpy()) + 2.0 * (xt @ At.T) @ Bt.T
(yt * yt).mean().backward()
# float32 sums of 384 O(1) products: ~1e-6 relative rounding; 1e-4 leaves a wide margin.
for name, ours_v, ref in [("y", y.numpy(), yt.detach()), ("dL/dx", x.grad.numpy(), xt.grad),
                          ("dL/dA", lora.lora_A.weight.grad.numpy(), At.grad),
                          ("dL/dB", lora.lora_B.weight.grad.numpy(), Bt.grad)]:
    err = _common.max_rel_err(ours_v, ref.numpy())
    print(f"{name:6s} max rel err vs torch {err:.1e}")
    assert err < 1e-4, name
assert base.weight.grad is not None  # a plain Linear's weight still gets one: freezing is apply_lora's job

# In float64, so that the rank test sees only the product's structure (float32 rounding of B·A
# would look like tiny extra singular values).
delta = 2.0 * lora.lora_B.weight.numpy().astype(np.float64) @ lora.lora_A.weight.numpy().astype(np.float64)
rank = np.linalg.matrix_rank(delta)
print(f"rank of ΔW = (α/r)·B·A: {rank} (r = 8); parameters: LoRA {8 * (384 + 384):,} vs W {384 * 384:,}")
assert rank == 8

# %% [markdown]
# ## 2. What LoRA trains on MiniLM
# `apply_lora` wraps every Linear whose attribute name is listed, freezes the rest, and leaves
# the new classification head trainable (PEFT's `modules_to_save` for a sequence classifier).
# The count is simple arithmetic: each wrapped [out, in] matrix adds r·(in + out), the head
# 384·labels + labels.

# %%
model_dir = mb.default_model_dir()
model = mb.BertForSequenceClassification.from_pretrained(model_dir)
H, FF, L = 384, model.config.intermediate_size, model.config.num_hidden_layers
shapes = {"query": [(H, H)], "key": [(H, H)], "value": [(H, H)],
          "dense": [(H, H), (H, FF), (FF, H)]}   # per layer: attention out, FFN in, FFN out
for targets, r in [("query,value", 4), ("query,value", 8), ("query,value", 16),
                   ("query,key,value,dense", 8)]:
    peft.apply_lora(model, targets, r=r)
    analytic = sum(L * r * (i + o) for t in targets.split(",") for i, o in shapes[t])
    analytic += r * (H + H) * ("dense" in targets)   # the pooler's Linear is also called dense
    analytic += H * 2 + 2                             # the head: 2 labels
    assert mb.count_trainable(model) == analytic
    print(f"{targets:24s} r={r:2d}  {peft.trainable_summary(model)}")
    peft.merge_and_unload(model)   # B = 0 still: W + 0, the plain model again

# %% [markdown]
# The output of a LoRA model at initialisation is exactly the pre-trained model's: B = 0 makes the
# extra term +0.0, which float addition leaves bit for bit unchanged.

# %%
tok = mb.BertTokenizer.from_pretrained(model_dir)
enc = tok(["a gorgeous, witty, seductive movie.", "the plot is nothing but boilerplate clichés"],
          padding=True, return_tensors="np")
inputs = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
plain = model.bert
with mg.no_grad():
    h0 = plain(**inputs).last_hidden_state.numpy()
    peft.apply_lora(plain, "query,value", r=8)
    h1 = plain(**inputs).last_hidden_state.numpy()
assert np.array_equal(h0, h1)

# %% [markdown]
# ## 3. Learning a toy task: LoRA vs full fine-tuning vs the head alone
# A small random BERT plays the pre-trained model (so this runs in seconds); the task: is token 7
# among the sequence's tokens? Three runs with AdamW for the same number of steps: all weights
# (lr 3e-3), LoRA r = 4 on query/value + head (lr 1e-2, the usual ~3-10x larger rate), and the
# head alone (lr 1e-2) — a frozen random encoder with a linear probe on top.

# %%
def toy_batch(rng, n=32, t=12, vocab=60):
    ids = rng.integers(8, vocab, size=(n, t))
    y = rng.integers(0, 2, size=n)
    pos = rng.integers(1, t, size=n)
    ids[np.arange(n), pos] = np.where(y == 1, 7, ids[np.arange(n), pos])
    ids[:, 0] = 2  # [CLS]-like
    return ids, y


tiny = transformers.BertConfig(vocab_size=60, hidden_size=64, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=128,
                               max_position_embeddings=32, hidden_dropout_prob=0.0,
                               attention_probs_dropout_prob=0.0)
workdir = tempfile.mkdtemp()
torch.manual_seed(0)
transformers.BertForSequenceClassification(tiny).save_pretrained(workdir)


def run(kind: str, steps: int = 60):
    mg.manual_seed(0)
    model = mb.BertForSequenceClassification.from_pretrained(workdir).train()
    original = {n: p.numpy().copy() for n, p in model.named_parameters()}
    lr = 3e-3 if kind == "full" else 1e-2
    if kind == "lora":
        peft.apply_lora(model, "query,value", r=4, alpha=8)
    if kind == "head":
        for n, p in model.named_parameters():
            p.requires_grad_(n.startswith("classifier"))
    opt = mg.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    rng, losses = np.random.default_rng(1), []
    for _ in range(steps):
        ids, y = toy_batch(rng)
        opt.zero_grad()
        loss = model(ids, labels=y).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    ids, y = toy_batch(np.random.default_rng(99), n=512)
    model.eval()
    with mg.no_grad():
        acc = float((model(ids).logits.numpy().argmax(1) == y).mean())
    return model, original, losses, acc, mb.count_trainable(model)


results = {kind: run(kind) for kind in ("full", "lora", "head")}
for kind, (_, _, losses, acc, n) in results.items():
    print(f"{kind:5s} trainable {n:7,d}  final loss {np.mean(losses[-20:]):.3f}  held-out acc {acc:.3f}")
assert results["lora"][3] > 0.9 and results["full"][3] > 0.9   # both learn the task...
assert results["lora"][3] > results["head"][3] + 0.1            # ...which a linear probe cannot
assert results["lora"][4] < results["full"][4] / 4

fig, ax = plt.subplots(figsize=(6.5, 3.6))
for kind, (_, _, losses, acc, n) in results.items():
    smooth = np.convolve(losses, np.ones(10) / 10, mode="valid")
    kind_zh = {"full": "全量微调", "lora": "LoRA", "head": "仅分类头"}[kind]
    ax.plot(smooth, label=_common.tr(f"{kind} ({n:,} trained, acc {acc:.2f})",
                                     f"{kind_zh}（训练{n:,}个参数，准确率{acc:.2f}）"))
ax.set(xlabel=_common.tr("step", "步数"), ylabel=_common.tr("training loss (10-step mean)", "训练损失（10步平均）"),
       title=_common.tr("Is token 7 in the sequence?", "序列中有token 7吗？"))
ax.legend()
_common.savefig(fig, "13_lora_vs_full_loss.png")

# %% [markdown]
# ## 4. The rank of what was learned
# LoRA's ΔW has rank ≤ r by construction. Full fine-tuning was free to change W in every
# direction; its ΔW's singular values show how much of that freedom it used: they decay fast, the
# observation that motivated LoRA (updates of pre-trained models have low "intrinsic rank").

# %%
lora_model = results["lora"][0]
full_model, full_original = results["full"][0], results["full"][1]
name = "bert.encoder.layer.0.attention.self.query"
delta_lora = dict(peft.lora_layers(lora_model))[name].delta_weight().astype(np.float64)
delta_full = (dict(full_model.named_parameters())[name + ".weight"].numpy()
              - full_original[name + ".weight"]).astype(np.float64)
s_lora, s_full = np.linalg.svd(delta_lora, compute_uv=False), np.linalg.svd(delta_full, compute_uv=False)
assert (s_lora[4:] < 1e-6 * s_lora[0]).all()   # rank 4: the rest is float32 rounding
energy = np.cumsum(s_full ** 2) / np.sum(s_full ** 2)
print(f"full fine-tuning's ΔW: {np.searchsorted(energy, 0.9) + 1} of 64 directions hold 90% of it")

fig, ax = plt.subplots(figsize=(6, 3.4))
ax.semilogy(s_full / s_full[0], "o-", ms=3, label=_common.tr("full fine-tuning ΔW", "全量微调的ΔW"))
ax.semilogy(np.maximum(s_lora / s_lora[0], 1e-12), "s-", ms=3, label=_common.tr("LoRA ΔW (r = 4)", "LoRA的ΔW（r = 4）"))
ax.set(xlabel=_common.tr("index", "序号"), ylabel=_common.tr("singular value / largest", "奇异值 / 最大奇异值"),
       title=_common.tr(f"{name.split('bert.')[1]}: ΔW spectrum", f"{name.split('bert.')[1]}：ΔW的奇异值谱"))
ax.legend()
_common.savefig(fig, "13_delta_w_singular_values.png")

# %% [markdown]
# ## 5. Merging, and what gets saved
# `merge()` folds ΔW into W; outputs are unchanged up to rounding and inference costs nothing
# extra. `save_merged` writes a plain HF checkpoint (transformers loads it as any BERT);
# `save_adapter` writes only A, B and the head, with PEFT's key names.

# %%
ids, _ = toy_batch(np.random.default_rng(5), n=8)
lora_model.eval()
with mg.no_grad():
    before = lora_model(ids).logits.numpy()
    for _, layer in peft.lora_layers(lora_model):
        layer.merge()
    merged = lora_model(ids).logits.numpy()
    for _, layer in peft.lora_layers(lora_model):
        layer.unmerge()
print(f"merged vs unmerged logits: max diff {np.abs(merged - before).max():.1e}")
assert np.abs(merged - before).max() < 1e-5   # float32: W+ΔW summed once vs two products

out = tempfile.mkdtemp()
peft.save_merged(lora_model, f"{out}/merged")
peft.save_adapter(lora_model, f"{out}/adapter")
hf = transformers.BertForSequenceClassification.from_pretrained(f"{out}/merged").eval()
with torch.no_grad():
    theirs = hf(torch.tensor(ids)).logits.numpy()
assert np.abs(theirs - before).max() < 1e-5
sizes = {k: os.path.getsize(f"{out}/{k}/" + f) for k, f in
         [("merged", "model.safetensors"), ("adapter", "adapter_model.safetensors")]}
print(f"checkpoint sizes: merged {sizes['merged']:,} B, adapter {sizes['adapter']:,} B")
assert sizes["adapter"] < sizes["merged"] / 10

# %% [markdown] tags=["questions"]
# ## Check your understanding
#
# 1. Why does B start at zero and A at random values, and not both at zero?
#
# 2. How many numbers does LoRA train for a 384 × 384 query matrix with r = 8, and how many does
#    full fine-tuning train for it?
#
# 3. Why is rank(ΔW) ≤ r?
#
# 4. Why does a merged LoRA model cost nothing extra at inference, and when would you keep the
#    adapter unmerged?

# %% [markdown] tags=["answers"]
# ## Answers
#
# 1. B = 0 makes ΔW = 0, so training starts from exactly the pre-trained model. If A were zero
#    too, both gradients would be zero (∂L/∂B involves A x, ∂L/∂A involves Bᵀ), and nothing would
#    ever move. With A random, B's gradient is non-zero from the first step.
#
# 2. r·(in + out) = 8 · 768 = 6 144, against 384 · 384 = 147 456 weights (plus 384 biases): 24×
#    fewer.
#
# 3. ΔW = (α/r) B A: every column of ΔW is a combination of B's r columns (everything passes
#    through an r-dimensional bottleneck), so its rank is at most r.
#
# 4. W + (α/r) B A is one matrix of W's shape, so inference is the plain model. Unmerged, each
#    task needs only A, B and its head (here ~30× smaller than the model), and many tasks can
#    share one copy of the pre-trained weights.
