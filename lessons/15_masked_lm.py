# %% [markdown]
# # Lesson 15 — Masked language modelling: how BERT was pre-trained
#
# Before any fine-tuning, BERT learned by filling in blanks. Pick 15% of the real tokens of a
# batch; replace 80% of those by [MASK], 10% by a random token, keep 10% as they are; predict the
# original token at each picked position i ∈ M:
#
#     L = −(1/|M|) Σ_{i∈M} log softmax(logits_i)[x_i],   logits_i = transform(h_i) Eᵀ + b
#
# where E is the *same* word-embedding matrix that encodes the input (tied weights). The 10%
# random and 10% unchanged matter: [MASK] never appears at fine-tuning time, so the model cannot
# learn that only [MASK] positions need a prediction.
#
# **Goal.** Mask batches as BERT did and check the statistics; match HF's BertForMaskedLM loss
# and every gradient (the tied E collecting gradient from both ends); fill in [MASK] exactly as
# HF's fill-mask pipeline does; and watch a small model's first lesson: token frequencies.
#
# **Prerequisites.** Lessons 4 (cross-entropy), 7 (tokenizer), 8 (BERT).

# %%
import _common

import shutil
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import torch
import transformers

import mini_bert as mb
import minigrad as mg
from mini_bert.data import read_examples
from mini_bert.testing import shared_sst2_dir

transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()

# MiniLM's vocabulary (30522 word pieces) with a small random BertForMaskedLM made by
# transformers: all-MiniLM-L6-v2 itself ships no MLM head.
minilm = mb.default_model_dir()
workdir = tempfile.mkdtemp()
for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
    shutil.copy(f"{minilm}/{name}", workdir)
config = transformers.BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=128,
                                 max_position_embeddings=64, hidden_dropout_prob=0.0,
                                 attention_probs_dropout_prob=0.0)
torch.manual_seed(0)
transformers.BertForMaskedLM(config).save_pretrained(workdir)
tok = mb.BertTokenizer.from_pretrained(workdir)

SST2 = shared_sst2_dir()
if SST2 is not None:
    corpus = [e.text for e in read_examples(str(SST2 / "train.tsv"), "sentence", "label")[:2000]]
else:  # the data is not in the repo: a few stand-in sentences, repeated
    print("SST-2 not found (mini_bert.testing.shared_sst2_dir): using stand-in sentences")
    corpus = ["the movie is a charming and often affecting journey .",
              "it 's slow -- very , very slow .", "a gorgeous , witty , seductive movie ."] * 200
print(f"{len(corpus)} sentences")

# %% [markdown]
# ## 1. Masking, and its statistics
# One batch, shown token by token: what the model sees, and the label it must predict (−100 =
# not picked, ignored by the loss).

# %%
enc = tok(corpus[:64], padding=True, truncation=True, max_length=48, return_tensors="np")
masked, labels = mb.mask_tokens(enc["input_ids"], tok, enc["attention_mask"], rng=0)
row = int(np.argmax((labels != -100).sum(1)))
print(f"{'original':>14} {'input':>14} {'label':>14}")
length = int(enc["attention_mask"][row].sum())
for o, m, lab in zip(enc["input_ids"][row, :length], masked[row, :length], labels[row, :length]):
    print(f"{tok.convert_ids_to_tokens(int(o)):>14} {tok.convert_ids_to_tokens(int(m)):>14} "
          f"{tok.convert_ids_to_tokens(int(lab)) if lab != -100 else '-100':>14}")

# Over many batches: counts against the binomial expectations (5 standard deviations: a correct
# sampler fails about once in a million runs; a 10% vs 15% or 70/15/15 mistake lands far outside).
all_ids = tok(corpus)["input_ids"]   # (reused below for token frequencies)
enc = tok(corpus, padding=True, truncation=True, max_length=48, return_tensors="np")
masked, labels = mb.mask_tokens(enc["input_ids"], tok, enc["attention_mask"], rng=1)
real = (enc["attention_mask"] == 1) & ~np.isin(enc["input_ids"], tok.all_special_ids)
picked = labels != -100
assert not (picked & ~real).any()      # never [CLS], [SEP], [PAD] or padding
kinds = {"[MASK]": picked & (masked == tok.mask_token_id),
         "unchanged": picked & (masked == enc["input_ids"])}
kinds["random"] = picked & ~kinds["[MASK]"] & ~kinds["unchanged"]
n_real, n_picked = int(real.sum()), int(picked.sum())


def within(count, n, p):
    return abs(count - n * p) < 5 * np.sqrt(n * p * (1 - p))


assert within(n_picked, n_real, 0.15)
print(f"picked {n_picked:,} of {n_real:,} real tokens ({n_picked / n_real:.2%})")
for (kind, m), p in zip(kinds.items(), (0.8, 0.1, 0.1)):
    print(f"  {kind:9s} {m.sum() / n_picked:.2%} (expected {p:.0%})")
    assert within(int(m.sum()), n_picked, p)

fig, ax = plt.subplots(figsize=(5, 3))
shares = [m.sum() / n_picked for m in kinds.values()]
bar_names = [_common.tr(k, {"[MASK]": "[MASK]", "unchanged": "不变", "random": "随机"}[k]) for k in kinds]
ax.bar(bar_names, shares, color=["C0", "C2", "C1"])
ax.bar(bar_names, [0.8, 0.1, 0.1], fill=False, edgecolor="k", ls="--",
       label=_common.tr("BERT's 80/10/10", "BERT的80/10/10"))
ax.set(ylabel=_common.tr("share of picked tokens", "占选中token的比例"),
       title=_common.tr(f"{n_picked:,} picked tokens ({n_picked / n_real:.1%} of real)",
                        f"选中{n_picked:,}个token（占真实token的{n_picked / n_real:.1%}）"))
ax.legend()
_common.savefig(fig, "15_masking_split.png")

# %% [markdown]
# ## 2. The loss and every gradient, against HF
# Same masked batch into both models, float64 on both sides. The decoder's weight *is* the word
# embedding table: its gradient is the sum of what the input lookup and the output projection
# send back. HF's `named_parameters` lists the tied matrix once, as we do.

# %%
model = mb.BertForMaskedLM.from_pretrained(workdir).to(dtype=mg.float64)
hf = transformers.BertForMaskedLM.from_pretrained(workdir, attn_implementation="eager").eval().double()
small = tok(corpus[:6], padding=True, truncation=True, max_length=32, return_tensors="np")
loss, batch = mb.mlm_loss(model, tok, small["input_ids"], small["attention_mask"],
                          small["token_type_ids"], rng=2)
loss.backward()
out = hf(input_ids=torch.tensor(batch["input_ids"]), attention_mask=torch.tensor(small["attention_mask"]),
         token_type_ids=torch.tensor(small["token_type_ids"]), labels=torch.tensor(batch["labels"]))
out.loss.backward()
print(f"loss: ours {loss.item():.12f}  HF {out.loss.item():.12f}  (log 30522 = {np.log(30522):.4f})")
assert abs(loss.item() - out.loss.item()) < 1e-12
theirs = dict(hf.named_parameters())
assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
# Errors relative to max(1, |g|): the key biases' gradients are exactly 0 in exact arithmetic
# (adding q·b_k to a whole row of scores leaves the softmax unchanged), so both sides hold only
# ~1e-17 rounding noise there, and noise divided by noise says nothing.
worst = max(np.abs(p.grad.numpy() - theirs[n].grad.numpy()).max()
            / max(1.0, float(theirs[n].grad.abs().max())) for n, p in model.named_parameters())
print(f"largest relative gradient difference over {len(theirs)} parameters: {worst:.1e}")
assert worst < 1e-10   # float64: the same math, rounding ~1e-15

# %% [markdown]
# ## 3. fill_mask, as HF's pipeline
# `mb.fill_mask` returns what `pipeline("fill-mask")` returns: per [MASK], the top-k tokens with
# their softmax probabilities and the completed sentence. On a random model the answers are
# noise, but they must be the *same* noise.

# %%
model32 = mb.BertForMaskedLM.from_pretrained(workdir)
pipe = transformers.pipeline("fill-mask", model=workdir, tokenizer=workdir, device="cpu")
text = "The capital of France is [MASK]."
ours_top, hf_top = mb.fill_mask(model32, tok, text, top_k=5), pipe(text, top_k=5)
for a, b in zip(ours_top, hf_top):
    print(f"{a['token_str']:>12} {a['score']:.6f}   HF: {b['token_str']:>12} {b['score']:.6f}")
    assert (a["token"], a["token_str"], a["sequence"]) == (b["token"], b["token_str"], b["sequence"])
    assert abs(a["score"] - b["score"]) < 1e-4 * b["score"]  # float32 softmax over 30522 logits

# %% [markdown]
# ## 4. A few steps of pre-training
# 40 AdamW steps of 16 SST-2 sentences. The first thing an MLM learns is not grammar but *how often*
# each token occurs: the loss falls from log V toward the entropy of the unigram distribution,
# and the predictions turn into the most frequent tokens.

# %%
mg.manual_seed(0)
model32.train()
opt = mg.optim.AdamW(model32.parameters(), lr=3e-3)
rng = np.random.default_rng(3)
history = []
for step in range(40):
    idx = rng.choice(len(corpus), 16, replace=False)
    enc = tok([corpus[i] for i in idx], padding=True, truncation=True, max_length=24, return_tensors="np")
    opt.zero_grad()
    loss, _ = mb.mlm_loss(model32, tok, enc["input_ids"], enc["attention_mask"],
                          enc["token_type_ids"], rng=rng)
    loss.backward()
    opt.step()
    history.append(loss.item())

counts = np.zeros(30522, np.int64)
for ids in all_ids:
    counts += np.bincount(ids, minlength=30522)
counts[tok.all_special_ids] = 0
p_unigram = counts / counts.sum()
unigram_entropy = -np.sum(p_unigram[p_unigram > 0] * np.log(p_unigram[p_unigram > 0]))
top_after = mb.fill_mask(model32, tok, "this movie is [MASK] .", top_k=5)
frequent = set(np.argsort(-counts)[:30].tolist())
print(f"loss {history[0]:.2f} -> {np.mean(history[-5:]):.2f}; log V = {np.log(30522):.2f}, "
      f"unigram entropy = {unigram_entropy:.2f}")
print("now predicts:", [d["token_str"] for d in top_after])
assert np.mean(history[-5:]) < history[0] - 1.5   # deterministic (seeded); measured ~2
assert sum(d["token"] in frequent for d in top_after) >= 3   # mostly among the 30 most frequent

fig, ax = plt.subplots(figsize=(6, 3.4))
ax.plot(history, label=_common.tr("MLM loss", "MLM损失"))
ax.axhline(np.log(30522), ls="--", color="gray", label=_common.tr("log V (uniform guess)", "log V（均匀猜测）"))
ax.axhline(unigram_entropy, ls=":", color="C1", label=_common.tr("unigram entropy", "一元分布的熵"))
ax.set(xlabel=_common.tr("step", "步数"), ylabel=_common.tr("loss", "损失"),
       title=_common.tr("Pre-training's first lesson: token frequencies", "预训练的第一课：token频率"))
ax.legend()
_common.savefig(fig, "15_mlm_training_loss.png")

# %% [markdown] tags=["questions"]
# ## Check your understanding
#
# 1. Of 1000 real tokens, how many are expected to become [MASK], a random token, and stay
#    unchanged? And what does the label −100 mean?
#
# 2. Why not replace every picked token by [MASK]?
#
# 3. Why does the word-embedding matrix E collect gradient from two places?
#
# 4. Why does the loss start near log V ≈ 10.3 and first fall towards the entropy of the unigram
#    distribution?

# %% [markdown] tags=["answers"]
# ## Answers
#
# 1. 15% are picked: 150; of those 80% → 120 [MASK], 10% → 15 random, 10% → 15 unchanged. Every
#    position not picked has label −100, which the loss ignores (its mean is over the picked
#    positions only).
#
# 2. [MASK] never occurs at fine-tuning time. If only [MASK] positions had to be predicted, the
#    model could learn that only they matter; random and unchanged tokens force it to build a
#    useful representation of every token, since any of them might be a target.
#
# 3. It is tied: E looks up the input tokens and also projects the output (logits = transform(h)
#    Eᵀ + b). A parameter used twice receives the sum of both gradients (lesson 1).
#
# 4. A random model predicts nearly uniformly over V = 30 522 tokens: cross-entropy log V. The
#    easiest improvement needs no context: predict each token with its overall frequency, whose
#    cross-entropy is the unigram entropy. Using the context comes later.
