# %% [markdown]
# # Lesson 8 — A real BERT: loading all-MiniLM-L6-v2 and matching HF layer by layer
#
# Lessons 5–6 built an encoder layer and checked it against torch. `mini_bert.BertModel` stacks
# such layers exactly as HF's BERT does (same parameter names, so a checkpoint loads key for key):
#
#     embeddings:  e_t = LayerNorm(W_word[id_t] + W_type[type_t] + W_pos[t])
#     6 × layer:   h ← LayerNorm(h + Attention(h, mask));  h ← LayerNorm(h + W₂ GELU(W₁ h))
#     pooler:      tanh(W_p h_[CLS] + b_p)
#
# **Goal.** Load the real pre-trained checkpoint (all-MiniLM-L6-v2: 6 layers, hidden size 384,
# 12 heads, 22.7 M parameters) into both `mini_bert` and HF `transformers`, run the same padded
# batch of movie reviews through both, and compare *every* layer's output. Then see what the
# attention mask guarantees, and use the model for what MiniLM was trained for: sentence
# embeddings whose cosine similarity measures closeness of meaning.
#
# **Prerequisites.** Lessons 5 (attention masks), 6 (the encoder layer), 7 (the tokenizer).

# %%
import _common

import matplotlib.pyplot as plt
import numpy as np
import torch
import transformers

import mini_bert
import minigrad as mg
from mini_bert.data import read_examples
from mini_bert.testing import shared_sst2_dir

transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bar in the output
model_dir = mini_bert.default_model_dir()
tokenizer = mini_bert.BertTokenizer.from_pretrained(model_dir)
ours = mini_bert.BertModel.from_pretrained(model_dir)  # eval mode: dropout off
# HF's plain ("eager") attention: softmax(QKᵀ/√d + M)V written out, like ours.
hf = transformers.BertModel.from_pretrained(model_dir, attn_implementation="eager").eval()
print(ours.config)
n_params = sum(p.numel() for p in ours.parameters())
assert n_params == sum(p.numel() for p in hf.parameters())
print(f"{n_params / 1e6:.1f} M parameters, "
      f"{ours.embeddings.word_embeddings.weight.numel() / n_params:.0%} of them in the word embeddings")

SST2 = shared_sst2_dir()
if SST2 is not None:
    sentences = [e.text for e in read_examples(str(SST2 / "dev.tsv"), "sentence", "label")[:8]]
else:  # the data is not part of the repo: stand-ins of varied length
    print("SST-2 not found (mini_bert.testing.shared_sst2_dir): using stand-in sentences")
    sentences = ["it 's a charming and often affecting journey . ", "unflinchingly bleak and desperate ",
                 "the acting , costumes , music , cinematography and sound are all astounding . ",
                 "it 's slow -- very , very slow . "]
batch = tokenizer(sentences, padding=True, return_tensors="np")
lengths = batch["attention_mask"].sum(axis=1)
print(f"batch {batch['input_ids'].shape}; real tokens per row: {lengths.tolist()}")
assert lengths.min() < lengths.max()  # some rows are padded: the mask has work to do

# %% [markdown]
# ## 1. Every layer, side by side
# `output_hidden_states=True` returns 7 tensors [B, T, 384]: the embeddings and each layer's
# output. We compare ours and HF's in float32 (the precision both run in), and, as a yardstick,
# measure how far HF's own float32 result is from the same model in float64: that is the rounding
# float32 itself causes. A third line runs *both* models in float64, where any real difference in
# the math (a wrong mask, ε, GELU or residual) would stand out above ~1e-13.
#
# We compare only **real** tokens: rows of padding are outputs nobody reads (see section 2).

# %%
real = batch["attention_mask"].astype(bool)


def run_ours(model, **kw):
    with mg.no_grad():
        return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                     output_hidden_states=True, **kw)


def run_hf(model):
    with torch.no_grad():
        return model(**{k: torch.tensor(batch[k]) for k in ("input_ids", "attention_mask",
                                                            "token_type_ids")},
                     output_hidden_states=True)


def max_diff(a, b) -> float:
    """max |a - b| over the real tokens of [B, T, H] outputs (tensors of either library)."""
    a = a.numpy() if isinstance(a, mg.Tensor) else a.detach().numpy()
    b = b.numpy() if isinstance(b, mg.Tensor) else b.detach().numpy()
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64))[real].max())


ours32, hf32 = run_ours(ours), run_hf(hf)
ours.to(dtype=mg.float64)
hf.double()
ours64, hf64 = run_ours(ours), run_hf(hf)
ours.to(dtype=mg.float32)
hf.float()

diffs = {
    "ours vs HF (float32)": [max_diff(a, b) for a, b in zip(ours32.hidden_states, hf32.hidden_states)],
    "HF float32 vs HF float64": [max_diff(a, b) for a, b in zip(hf32.hidden_states, hf64.hidden_states)],
    "ours vs HF (float64)": [max_diff(a, b) for a, b in zip(ours64.hidden_states, hf64.hidden_states)],
}
print(f"{'':<11}" + "".join(f"{k:>27}" for k in diffs))
for i in range(len(ours32.hidden_states)):
    name = "embeddings" if i == 0 else f"layer {i}"
    print(f"{name:<11}" + "".join(f"{v[i]:>27.2e}" for v in diffs.values()))
pooler_diff = np.abs(ours32.pooler_output.numpy() - hf32.pooler_output.numpy()).max()
print(f"pooler: max |ours − HF| = {pooler_diff:.2e} (float32)")

# %% [markdown]
# The bounds, from the model tests (`tests/test_model.py`): hidden values reach ~10, where one
# float32 ulp is ~1e-6; after 6 layers of different summation orders we measure a few ulps, so
# **1e-5** has margin yet is far below any real mistake (a wrong ε or GELU shows at 1e-4..1e-1).
# The pooler's outputs are tanh values in [−1, 1]: the same 1e-5 is generous. In float64 the two
# implementations of one formula differ by ~1e-14; 1e-10 leaves a factor 1000. And our float32
# error must be of the size of float32 itself: |ours − HF| ≤ |ours − exact| + |HF − exact|, which
# is 2× HF's own error if ours is as accurate as HF; we allow 4× (ours up to 3× less accurate).

# %%
assert len(ours32.hidden_states) == len(hf32.hidden_states) == ours.config.num_hidden_layers + 1
assert max(diffs["ours vs HF (float32)"]) < 1e-5
assert pooler_diff < 1e-5
assert max(diffs["ours vs HF (float64)"]) < 1e-10
assert max(diffs["ours vs HF (float32)"]) < 4 * max(diffs["HF float32 vs HF float64"])

fig, ax = plt.subplots(figsize=(7, 4))
layers = np.arange(len(ours32.hidden_states))
for (label, values), marker in zip(diffs.items(), "os^"):
    ax.semilogy(layers, values, marker + "-", label=_common.tr(label, {
        "ours vs HF (float32)": "我们的实现 vs HF（float32）",
        "HF float32 vs HF float64": "HF float32 vs HF float64",
        "ours vs HF (float64)": "我们的实现 vs HF（float64）"}[label]))
ax.axhline(1e-5, color="gray", ls=":", label=_common.tr("float32 bound asserted (1e-5)", "断言的float32界限（1e-5）"))
ax.set_xticks(layers, [_common.tr("emb", "嵌入")] + [str(i) for i in layers[1:]])
ax.set_xlabel(_common.tr("hidden state (embeddings, then layer)", "隐藏状态（先是嵌入，然后是各层）"))
ax.set_ylabel(_common.tr("max |difference| over real tokens", "真实token上的最大|差异|"))
ax.set_title(_common.tr("all-MiniLM-L6-v2: mini_bert vs transformers, per layer", "all-MiniLM-L6-v2：mini_bert vs transformers，逐层"))
ax.legend(fontsize=8)
_common.savefig(fig, "08_layer_differences.png")

# %% [markdown]
# ## 2. What the attention mask means
# Padding exists only to make a rectangle out of sentences of different lengths. The mask adds
# finfo(float32).min to the scores of padded *keys*, so after softmax they get weight exactly 0:
# no real token ever reads from a padding position. Consequence: a sentence's real-token outputs
# must be the same whether it is run alone (no padding) or inside the padded batch. The padding
# positions themselves still get outputs (they attend to the real tokens), which nobody should use.
#
# Without the mask, the real tokens *do* attend to the `[PAD]` vectors, and their outputs change.

# %%
alone_err, unmasked_err = [], []
with mg.no_grad():
    no_mask = ours(batch["input_ids"], None, batch["token_type_ids"]).last_hidden_state.numpy()
    for i, n in enumerate(lengths):
        ids = batch["input_ids"][i:i + 1, :n]  # the sentence alone, unpadded
        alone = ours(ids, np.ones_like(ids)).last_hidden_state.numpy()[0]
        alone_err.append(np.abs(alone - ours32.last_hidden_state.numpy()[i, :n]).max())
        unmasked_err.append(np.abs(no_mask[i, :n] - ours32.last_hidden_state.numpy()[i, :n]).max())
for i in np.argsort(lengths)[:3]:
    print(f"row {i} ({lengths[i]} real of {batch['input_ids'].shape[1]} tokens): alone vs in the "
          f"padded batch {alone_err[i]:.1e};  padded batch without the mask {unmasked_err[i]:.1e}")
# Same computation, only matrix shapes differ (BLAS may sum in another order): float32 rounding,
# bounded as above by 1e-5. Attending to padding changes outputs at the scale of the values (~1).
assert max(alone_err) < 1e-5
padded_rows = lengths < lengths.max()
assert min(np.array(unmasked_err)[padded_rows]) > 1e-2
# The longest row has no padding, so the mask is all ones there and changes nothing.
assert np.array(unmasked_err)[~padded_rows].max() < 1e-5

# %% [markdown]
# ## 3. Sentence embeddings
# all-MiniLM-L6-v2 was trained (by sentence-transformers) so that the **mean of the real tokens'
# final vectors**, scaled to unit length, places sentences of similar meaning close together:
#
#     s = Σ_t m_t h_t / Σ_t m_t,   ŝ = s / ‖s‖₂,   similarity(a, b) = ŝ_a · ŝ_b = cos(s_a, s_b)
#
# (the pooler above is not used for this). We add two sentences of our own: a paraphrase of the
# first review and an unrelated one. `mean_pooling` and `l2_normalize` are checked against the
# same recipe written in torch on HF's output.

# %%
extra = ["a journey that is charming and often moving .", "the train leaves from platform four ."]
texts = sentences + extra
enc = tokenizer(texts, padding=True, return_tensors="np")
with mg.no_grad():
    h = ours(enc["input_ids"], enc["attention_mask"]).last_hidden_state
    emb = mini_bert.l2_normalize(mini_bert.mean_pooling(h, enc["attention_mask"])).numpy()
with torch.no_grad():
    th = hf(input_ids=torch.tensor(enc["input_ids"]),
            attention_mask=torch.tensor(enc["attention_mask"])).last_hidden_state
    m = torch.tensor(enc["attention_mask"], dtype=th.dtype)[:, :, None]
    ref = torch.nn.functional.normalize((th * m).sum(1) / m.sum(1), dim=-1).numpy()
# Unit vectors averaged from outputs accurate to ~1e-6 (of values ~1..10) and divided by norms
# ~5..10: errors ~1e-7; 1e-6 is the model tests' bound.
assert np.abs(emb - ref).max() < 1e-6
np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)

sim = emb @ emb.T
paraphrase, unrelated = len(sentences), len(sentences) + 1
print(f"cos(review 0, its paraphrase) = {sim[0, paraphrase]:.3f};  "
      f"cos(review 0, unrelated sentence) = {sim[0, unrelated]:.3f}")
# What the embedding is for: the paraphrase is review 0's nearest neighbour among all the others.
assert np.argmax(np.where(np.eye(len(texts), dtype=bool), -np.inf, sim)[paraphrase]) == 0

fig, ax = plt.subplots(figsize=(7.5, 6.5))
im = ax.imshow(sim, vmin=-0.2, vmax=1, cmap="viridis")
short = [t.strip()[:32] + ("…" if len(t.strip()) > 32 else "") for t in texts]
ax.set_xticks(range(len(texts)), range(len(texts)))
ax.set_yticks(range(len(texts)), [f"{i}: {s}" for i, s in enumerate(short)], fontsize=7)
for i in range(len(texts)):
    for j in range(len(texts)):
        ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", fontsize=6,
                color="black" if sim[i, j] > 0.6 else "white")
fig.colorbar(im, ax=ax, shrink=0.8, label=_common.tr("cosine similarity", "余弦相似度"))
ax.set_title(_common.tr("sentence embeddings (mean pooling + L2 norm)", "句子嵌入（平均池化 + L2归一化）"))
_common.savefig(fig, "08_cosine_similarity.png")

# %% [markdown]
# ## Takeaways
# - A checkpoint is a dict {parameter name: array}; with HF's names, loading is a lookup.
# - Two independent float32 implementations agree to a few float32 ulps (~1e-6) at every layer;
#   in float64 to ~1e-14. Judge float32 differences against float32's own error, not against 0.
# - The attention mask makes padding invisible to real tokens: same outputs alone or padded.
# - Mean pooling over the real tokens + L2 normalisation turns MiniLM into a sentence encoder.

# %% [markdown] tags=["questions"]
# ## Check your understanding
#
# 1. mini_bert and HF agree to ~1e-6 at every layer in float32. Why is that the expected size, and
#    what does the float64 comparison add?
#
# 2. A sentence's real-token outputs are the same alone and inside a padded batch, yet the padding
#    positions still get outputs. Why both?
#
# 3. How is a sentence embedding made from MiniLM's outputs, and why must the mean use the
#    attention mask?
#
# 4. What makes loading a checkpoint "key for key" possible, and what should a loader do when it
#    is not?

# %% [markdown] tags=["answers"]
# ## Answers
#
# 1. Hidden values reach ~10, where one float32 ulp is ~1e-6, and the two libraries sum in
#    different orders, so they differ by a few ulps; HF's own float32 result is as far from
#    float64. In float64 the two agree to ~1e-14, so any real difference in the math (a mask, an
#    ε, a GELU) would stand far above that floor, whereas in float32 a small bug could hide in the
#    rounding.
#
# 2. The mask adds finfo.min to the scores of padded keys, so their softmax weight is exactly 0:
#    no real token reads from padding. Padded positions are still queries that attend to the real
#    tokens, so they get (meaningless) outputs, which everything downstream must ignore.
#
# 3. s = Σₜ mₜ hₜ / Σₜ mₜ over the real tokens, then ŝ = s/‖s‖₂; similarity is ŝ_a · ŝ_b, the
#    cosine. Including padded rows would make a sentence's embedding depend on how long the other
#    sentences in its batch were.
#
# 4. The model's parameter names (its module tree) and shapes equal the checkpoint's, so loading
#    is a dictionary lookup. A missing or unexpected key, or a shape mismatch, must be reported by
#    name, never silently skipped: a silently skipped tensor stays at its random initialisation.
