# %% [markdown]
# # Lesson 19 — Prompt tuning and data augmentation
#
# The source article closes with where fine-tuning goes next. §8.2 lists "参数高效微调"
# (parameter-efficient fine-tuning) and names prompt learning among the methods; §8.4 puts
# "数据增强" (data augmentation) first among the research directions, "to enlarge the training set
# and improve generalisation". This lesson builds one of each and measures both.
#
# **Prompt tuning** (Lester et al., 2021) freezes the whole BERT, like LoRA (lesson 13), but
# trains no weight matrix at all: it learns N "virtual token" vectors P ∈ ℝ^{N×H} that are put in
# front of every input's word embeddings, plus the classification head:
#
#     e = [P₁, ..., P_N, W_word[x₁], ..., W_word[x_T]]
#
# **Data augmentation** makes extra training texts from the ones we have: EDA's random swap,
# deletion and insertion of words (Wei & Zou, 2019), and substitution of a word by one of its
# nearest neighbours in MiniLM's own word-embedding space.
#
# **Goal.** Build `mini_bert.peft.apply_prompt_tuning` and check its logits, its gradient and its
# saved files against the `peft` package; count what each method trains on MiniLM and plot SST-2
# accuracy against it (from a measured run); look at augmented sentences side by side, and at why
# an embedding neighbour can flip a label.
#
# **Prerequisites.** Lessons 8 (MiniLM), 10 (fine-tuning), 13 (LoRA).

# %%
import _common

import json
import os
import tempfile
import warnings

import matplotlib.pyplot as plt
import numpy as np
import peft as hf_peft
import torch
import transformers

import mini_bert as mb
import minigrad as mg
from mini_bert import augment as A
from mini_bert import peft
from mini_bert.checkpoint import read_weights

transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()
warnings.filterwarnings("ignore", message=".*fresh initialisation.*")  # the new heads, expected
warnings.filterwarnings("ignore", category=FutureWarning)

# %% [markdown]
# ## 1. Where the prompt goes, checked against peft
# On a small random BERT (2 layers, H = 32), we wrap our model with N = 5 virtual tokens and
# HF's model with peft's `PromptTuningConfig(task_type="SEQ_CLS")`, give both the same prompt
# values, and compare. Following peft exactly means:
#
# - the prompt goes **before** `[CLS]`, so `[CLS]` moves to position N, and position embeddings
#   0..N+T−1 are added as usual;
# - the attention mask gets N ones in front (every token may attend to the prompt), the token
#   types N zeros;
# - the pooler still reads row 0, which is now the **first virtual token**: the prompt learns to
#   carry what the classifier needs.

# %%
N = 5
config = transformers.BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=37, max_position_embeddings=64, num_labels=3,
                                 attn_implementation="eager")
workdir = tempfile.mkdtemp()
torch.manual_seed(0)
hf = transformers.BertForSequenceClassification(config).eval()
hf.save_pretrained(f"{workdir}/base")
ours = peft.apply_prompt_tuning(mb.BertForSequenceClassification.from_pretrained(f"{workdir}/base"), N).eval()
theirs = hf_peft.get_peft_model(hf, hf_peft.PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=N)).eval()
prompt = np.random.default_rng(0).normal(0, 0.5, (N, 32)).astype(np.float32)
ours.prompt_embeddings._data = prompt.copy()
with torch.no_grad():
    theirs.prompt_encoder["default"].embedding.weight.copy_(torch.tensor(prompt))

rng = np.random.default_rng(1)
ids = rng.integers(5, 97, (4, 9))
ids[:, 0] = 2                                       # a [CLS]-like first token
mask = (np.arange(9)[None] < np.array([9, 7, 5, 3])[:, None]).astype(np.int64)   # padded rows
labels = np.array([0, 2, 1, 2])
out = ours(ids, attention_mask=mask, labels=labels)
out.loss.backward()
ref = theirs(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), labels=torch.tensor(labels))
ref.loss.backward()
grad_ref = theirs.prompt_encoder["default"].embedding.weight.grad.numpy()
# float32 through 2 layers: ~1e-7 relative rounding per op; 1e-4 relative leaves a wide margin.
for name, a, b in [("logits", out.logits.numpy(), ref.logits.detach().numpy()),
                   ("dL/dP", ours.prompt_embeddings.grad.numpy(), grad_ref)]:
    err = _common.max_rel_err(a, b)
    print(f"{name:6s} max rel err vs peft {err:.1e}")
    assert err < 1e-4, name
print(peft.trainable_summary(ours))
assert peft.count_trainable(ours) == theirs.get_nb_trainable_parameters()[0] == N * 32 + 3 * 32 + 3

# %% [markdown]
# **The gradient.** e = cat(broadcast(P), words): every sequence of the batch uses the same P,
# so ∂L/∂P_j = Σ_b ∂L/∂e_{b,j}, the sum over the batch of the gradient arriving at input row j —
# the broadcast-gradient rule of lesson 2. We check it by feeding the same input as plain
# `inputs_embeds` to the frozen base model and summing the gradient of the first N rows.

# %%
words = ours.base_model.bert.embeddings.word_embeddings(ids).detach()
e = mg.tensor(np.concatenate([np.broadcast_to(prompt, (4, N, 32)), words.numpy()], axis=1), requires_grad=True)
full_mask = np.concatenate([np.ones((4, N), np.int64), mask], axis=1)
ours.base_model(attention_mask=full_mask, inputs_embeds=e, labels=labels).loss.backward()
summed = e.grad.numpy()[:, :N].sum(axis=0)
assert _common.max_rel_err(summed, grad_ref) < 1e-4   # same float32 margin as above
print("dL/dP = sum over the batch of dL/de[:, :N]: checked against peft's gradient")

# %% [markdown]
# The saved prompt uses peft's file names and keys (`prompt_embeddings`,
# `base_model.classifier.weight`), so peft loads ours onto the HF model and gives our logits.

# %%
peft.save_adapter(ours, f"{workdir}/adapter", f"{workdir}/base")
fresh = transformers.BertForSequenceClassification.from_pretrained(f"{workdir}/base").eval()
loaded = hf_peft.PeftModel.from_pretrained(fresh, f"{workdir}/adapter").eval()
with torch.no_grad(), mg.no_grad():
    err = _common.max_rel_err(ours(ids, attention_mask=mask).logits.numpy(),
                              loaded(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy())
print(f"peft loading our adapter: max rel err {err:.1e}; files {sorted(os.listdir(f'{workdir}/adapter'))}")
assert err < 1e-4

# %% [markdown]
# ## 2. What each method trains on MiniLM
# MiniLM: H = 384, 6 layers, 22.7 M weights, and the one-logit BCE head of lesson 10 (384 + 1
# numbers), as in the runs of section 3. Prompt tuning with N = 20 trains 20 · 384 = 7 680 prompt
# numbers plus the head; LoRA r = 8 on query and value trains 6 · 2 · 8 · (384 + 384) plus the
# head; head-only trains the head alone. peft counts the same for its two methods on HF's MiniLM,
# and with the same prompt values its prompt-tuned MiniLM gives our logits.

# %%
model_dir = mb.default_model_dir()
hf_minilm = transformers.BertForSequenceClassification.from_pretrained(model_dir, num_labels=1)
counts = {"full": sum(p.numel() for p in hf_minilm.parameters()), "head": 384 + 1}
ours_minilm = peft.apply_prompt_tuning(mb.BertForSequenceClassification.from_pretrained(model_dir, num_labels=1), 20)
counts["prompt"] = peft.count_trainable(ours_minilm)
m = mb.BertForSequenceClassification.from_pretrained(model_dir, num_labels=1)
counts["lora"] = peft.count_trainable(peft.apply_lora(m, "query,value", r=8))
theirs_minilm = {}
for kind, cfg in [("prompt", hf_peft.PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=20)),
                  ("lora", hf_peft.LoraConfig(task_type="SEQ_CLS", r=8, target_modules=["query", "value"]))]:
    fresh = transformers.BertForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    theirs_minilm[kind] = hf_peft.get_peft_model(fresh, cfg).eval()
    assert counts[kind] == theirs_minilm[kind].get_nb_trainable_parameters()[0], kind
assert counts["prompt"] == 20 * 384 + counts["head"] and counts["lora"] == 6 * 2 * 8 * 768 + counts["head"]
for kind, n in counts.items():
    print(f"{kind:6s} {n:>12,d} trainable ({100 * n / counts['full']:.3f}%)")

# Section 1's check once more on the real MiniLM: peft's random prompt and head copied into ours.
theirs_p = theirs_minilm["prompt"]
ours_minilm.prompt_embeddings._data = theirs_p.prompt_encoder["default"].embedding.weight.detach().numpy().copy()
head = theirs_p.base_model.classifier.modules_to_save["default"]
ours_minilm.base_model.classifier.weight._data = head.weight.detach().numpy().copy()
ours_minilm.base_model.classifier.bias._data = head.bias.detach().numpy().copy()
tok = mb.BertTokenizer.from_pretrained(model_dir)
enc = tok(["a gorgeous, witty, seductive movie.", "the plot is nothing but boilerplate clichés"],
          padding=True, return_tensors="np")
with torch.no_grad(), mg.no_grad():
    a = ours_minilm.eval()(enc["input_ids"], attention_mask=enc["attention_mask"]).logits.numpy()
    b = theirs_p(input_ids=torch.tensor(enc["input_ids"]), attention_mask=torch.tensor(enc["attention_mask"])).logits
# float32 through 6 layers of 384-wide sums: measured ~1e-6 relative; 1e-4 leaves a wide margin.
print(f"MiniLM + 20 virtual tokens: logits {a.ravel()} vs peft {b.numpy().ravel()}")
assert _common.max_rel_err(a, b.numpy()) < 1e-4

# %% [markdown]
# ## 3. Accuracy against trainable parameters, measured
# A lesson must not train MiniLM for minutes, so this reads the numbers measured by
# `compare.peft_adv` (its command is printed with them): the same SST-2 training examples, the
# same steps, each method at its usual learning rate, dev accuracy on the 872 SST-2 dev sentences.
# The run: 189 steps (3 epochs of 2,000 examples). LoRA, with 0.33% of the weights, came within
# 3.5 points of full fine-tuning. Prompt tuning had barely left chance, and the head alone had not:
# it ended at 444/872 = 50.9%, the share of positive dev sentences, i.e. it predicts one class.
# (After 63 steps, LoRA too was still there.) Updates that start at zero (LoRA's B) or from random
# vectors (the prompt) need more steps; prompt tuning in particular is known to need many steps,
# and large models, to catch up with full fine-tuning (Lester et al. 2021, fig. 1). A measurement,
# not a verdict.

# %%
results = json.loads((_common.ROOT / "compare" / "results" /
                      "peft-prompt-head-sst2-2026-12-03-3epochs.json").read_text())
print("measured with:", results["command"])
rows = {r["run"]: r for r in results["rows"]}
for kind in ("full", "lora", "prompt", "head"):
    r = rows[kind]
    assert r["trainable"] == counts[kind], kind   # the run trained what section 2 counted
    print(f"{kind:6s} lr {r['lr']:<7g} dev acc {r['accuracy']:.4f}  trainable {r['trainable']:>10,d}  "
          f"{r['s_per_step']:.2f} s/step")
# What the text above says about this run, checked against the file.
assert {r["steps"] for r in rows.values()} == {189}
assert 0 < rows["full"]["accuracy"] - rows["lora"]["accuracy"] < 0.035
assert rows["prompt"]["accuracy"] < 0.55 and round(rows["head"]["accuracy"] * 872) == 444

fig, ax = plt.subplots(figsize=(6.5, 3.8))
names = {"full": _common.tr("full fine-tuning", "全量微调"), "lora": "LoRA (r = 8)",
         "prompt": _common.tr("prompt tuning (N = 20)", "提示调优（N = 20）"),
         "head": _common.tr("head only", "仅分类头")}
for kind, r in rows.items():
    ax.scatter(r["trainable"], r["accuracy"], s=50)
    ax.annotate(names[kind], (r["trainable"], r["accuracy"]), textcoords="offset points", xytext=(6, 4))
ax.set_xscale("log")
ax.set(xlabel=_common.tr("trainable parameters (log scale)", "可训练参数量（对数坐标）"),
       ylabel=_common.tr("SST-2 dev accuracy", "SST-2开发集准确率"),
       title=_common.tr(f"Same data, same {rows['full']['steps']} steps", f"相同数据、相同的{rows['full']['steps']}步"))
ax.margins(x=0.3, y=0.15)
_common.savefig(fig, "19_accuracy_vs_trainable.png")

# %% [markdown]
# ## 4. Augmented sentences, side by side
# Each augmentation is a pure function (text, rate, seed) → text. With n words and rate p it
# makes k = max(1, round(p·n)) edits, on whole words only: inserted words are drawn from the
# vocabulary's whole-word tokens (no `##` pieces, no `[CLS]`), and a neighbour substitute is the
# cosine-nearest whole-word token of MiniLM's embedding matrix E, cos(u, v) = u·v / (‖u‖‖v‖).

# %%
vocab = open(os.path.join(model_dir, "vocab.txt"), encoding="utf-8").read().split("\n")[:-1]
E = read_weights(model_dir)["embeddings.word_embeddings.weight"]
neighbors = A.Neighbors(E, vocab, k=5)
whole = A.whole_word_vocab(vocab)
ops = {"swap": A.random_swap, "deletion": A.random_deletion,
       "insertion": lambda t, r, s: A.random_insertion(t, r, s, whole),
       "neighbors": lambda t, r, s: A.neighbor_substitution(t, r, s, neighbors)}
sentences = ["a gorgeous , witty , seductive movie .",
             "the plot is nothing but boilerplate cliches from start to finish",
             "it 's a good film , but not a great one"]
hf_tok = transformers.BertTokenizer(os.path.join(model_dir, "vocab.txt"))
table = []
for seed, s in enumerate(sentences):
    for name, op in ops.items():
        new = op(s, 0.2, seed)
        assert op(s, 0.2, seed) == new                          # a seed fixes the output
        assert hf_tok.unk_token not in hf_tok.tokenize(new)     # whole in-vocabulary words only
        table.append((s if name == "swap" else "", name, new))
        print(f"{name:9s} | {new}")
    print()

fig, ax = plt.subplots(figsize=(11, 4.6))
ax.axis("off")
cells = ax.table(cellText=table, colLabels=[_common.tr("original", "原句"), _common.tr("operation", "操作"),
                                            _common.tr("augmented (rate 0.2, seeds 0, 1, 2)", "增强后（比例0.2，种子0、1、2）")],
                 loc="center", cellLoc="left", colWidths=[0.36, 0.1, 0.54])
cells.auto_set_font_size(False)
cells.set_fontsize(7.5)
ax.set_title(_common.tr("EDA and embedding-neighbour substitution", "EDA与嵌入近邻替换"))
_common.savefig(fig, "19_augmented_examples.png")

# %% [markdown]
# **A neighbour is not a synonym.** Words that occur in the same contexts get similar embeddings,
# and "good" and "bad" occur in exactly the same contexts. We recompute the neighbours with torch
# and look:

# %%
ids_whole = [i for i, t in enumerate(vocab) if A.WHOLE_WORD.fullmatch(t)]
table_t = torch.tensor(E[ids_whole], dtype=torch.float64)
for word in ("good", "boring"):
    sims = torch.nn.functional.cosine_similarity(table_t, table_t[whole.index(word)][None], dim=1)
    top = [whole[j] for j in sims.argsort(descending=True)[1:6].tolist()]   # [0] is the word itself
    assert neighbors.of(word) == top
    print(f"{word!r}: nearest {top}")
assert "bad" in neighbors.of("good")   # a substitution can turn a positive review negative

# %% [markdown]
# So "label-preserving" is an assumption, and for sentiment it fails exactly on the words that
# matter (and a swap can move a "not"). The measured effect on low-resource SST-2, from
# `compare.augment` (3 seeds, same steps with and without), is printed below; read the ± before
# the means.

# %%
print((_common.ROOT / "compare" / "results" / "augment-sst2-2026-12-03.md").read_text())

# %% [markdown] tags=["questions"]
# ## Check your understanding
#
# 1. With peft's SEQ_CLS prompt tuning on BERT, which position does the pooler read, and at which
#    position is `[CLS]`?
#
# 2. Why is the prompt's gradient the sum over the batch of the gradients at its input rows?
#
# 3. How many numbers does prompt tuning with N = 20 train on MiniLM with a one-logit head, and
#    how much longer does each sequence get?
#
# 4. Why can embedding-neighbour substitution hurt a sentiment classifier, although every
#    substitute is a close neighbour?

# %% [markdown] tags=["answers"]
# ## Answers
#
# 1. Row 0, which is the first virtual token; `[CLS]` is at position N (here 5, or 20 on MiniLM),
#    because the prompt is prepended before it.
#
# 2. Every sequence uses the same P: P is broadcast over the batch before the concatenation, and
#    a broadcast's gradient is the sum of the gradients of its copies (lesson 2).
#
# 3. 20 · 384 = 7 680 prompt numbers plus the head's 384 + 1 = 385, so 8 065 (0.04% of the
#    model); each sequence is 20 tokens longer, and attention costs grow with (N + T)².
#
# 4. Embedding neighbours are words used in similar contexts, not words with the same meaning:
#    "good" has "bad" among its five nearest, "boring" has "exciting". A substitution can flip the
#    label while the copy keeps the old one, which teaches the model noise.
