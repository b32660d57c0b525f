# %% [markdown]
# # Lesson 18 — Knowledge distillation: a small student learns from a teacher's soft labels
#
# The source article ends (§8.4, 研究展望, item 5: "知识蒸馏") by proposing knowledge distillation:
# putting what a large "expert" model knows into another model. Hinton et al. (2015) made it
# concrete: train the student on the teacher's *probabilities*, softened by a temperature T,
#
#     KD = T² · (1/N) Σ_n KL(p_n ‖ q_n),   p = softmax(t/T) (teacher),  q = softmax(s/T) (student),
#
# mixed with the ordinary task loss: L = α·KD + (1 − α)·CE. A teacher's "this is 70% positive"
# carries more than the label "positive": which wrong answers are nearly right, and how sure
# to be. DistilBERT (Sanh et al. 2019) starts the student from every other layer of the teacher.
#
# **The gradient.** Only log q depends on s, and ∂log q_c/∂s_j = (δ_cj − q_j)/T, so
#
#     ∂KD/∂s_nj = −(T²/N) Σ_c p_nc (δ_cj − q_nj)/T = (T/N) (q_nj − p_nj):
#
# prediction minus target once more (σ(z) − y in lesson 3, softmax(z) − onehot(y) in lesson 4),
# with the teacher's soft distribution as the target.
#
# **Goal.** Check `mini_bert.distill.kd_loss` and this gradient against torch's `kl_div`; see what
# the temperature does; distil a tiny BERT teacher into a 2-layer student, checking one step
# against the same computation in torch on HF's models; and compare how well the teacher and
# the students are calibrated.
#
# **Prerequisites.** Lessons 3 and 4 (the two losses and their gradients), 8 (BERT), 9 (AdamW),
# 10 (fine-tuning).

# %%
import _common

import tempfile

import matplotlib.pyplot as plt
import numpy as np
import torch
import transformers

import mini_bert as mb
import minigrad as mg
from mini_bert import distill
from minigrad.nn import functional as F

transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()


def torch_kd(s: torch.Tensor, t: torch.Tensor, T: float) -> torch.Tensor:
    """The oracle: torch's KL divergence, both sides as log-probabilities (log_target=True)."""
    return torch.nn.functional.kl_div(torch.log_softmax(s / T, 1), torch.log_softmax(t / T, 1),
                                      reduction="batchmean", log_target=True) * T ** 2


# %% [markdown]
# ## 1. The loss and its gradient, against torch
# Four examples, three classes, float64. The loss is compared with `kl_div`, the gradient with
# torch's autograd *and* with the closed form (T/N)(q − p). A one-logit (BCE) head, P(class 1)
# = σ(z), is distilled as the two-class head with logits (0, z): softmax((0, z)/T) = (1 − σ(z/T),
# σ(z/T)), so the loss is the KL between two Bernoulli distributions and the gradient is
# (T/N)(σ(s/T) − σ(t/T)).

# %%
rng = np.random.default_rng(0)
s_np, t_np = rng.normal(0, 2, (4, 3)), rng.normal(0, 2, (4, 3))
for T in (1.0, 2.0, 4.0):
    s = mg.tensor(s_np, requires_grad=True)
    loss = distill.kd_loss(s, mg.tensor(t_np), T)
    loss.backward()
    s_t = torch.tensor(s_np, requires_grad=True)
    ref = torch_kd(s_t, torch.tensor(t_np), T)
    ref.backward()
    closed = T / 4 * (torch.softmax(s_t.detach() / T, 1) - torch.softmax(torch.tensor(t_np) / T, 1))
    print(f"T={T:g}: KD {loss.item():.6f} (torch {ref.item():.6f}); "
          f"max |grad − torch| {np.abs(s.grad.numpy() - s_t.grad.numpy()).max():.1e}")
    # float64 throughout: both sides are a few dozen flops from the same inputs.
    assert abs(loss.item() - ref.item()) < 1e-12
    assert np.allclose(s.grad.numpy(), s_t.grad.numpy(), rtol=0, atol=1e-13)
    assert np.allclose(s.grad.numpy(), closed.numpy(), rtol=0, atol=1e-13)

    z_s, z_t = s_np[:, :1], t_np[:, :1]       # one logit per example
    one = mg.tensor(z_s, requires_grad=True)
    distill.kd_loss(one, mg.tensor(z_t), T).backward()
    p, q = torch.sigmoid(torch.tensor(z_t) / T), torch.sigmoid(torch.tensor(z_s) / T)
    bernoulli_kl = (p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()).mean() * T ** 2
    assert abs(distill.kd_loss(mg.tensor(z_s), mg.tensor(z_t), T).item() - bernoulli_kl.item()) < 1e-12
    assert np.allclose(one.grad.numpy(), (T / 4 * (q - p)).numpy(), rtol=0, atol=1e-13)

mg.gradcheck(lambda z: distill.kd_loss(z, mg.tensor(t_np), 2.0), [mg.tensor(s_np, requires_grad=True)])
print("gradcheck (float64 finite differences): passed")

# %% [markdown]
# ## 2. What the temperature does
# Dividing the logits by T > 1 flattens the teacher's distribution: the small probabilities of
# the wrong classes ("dark knowledge") grow until the student can see them. The gradient is
# (T/N)(q − p); for large T, q − p ≈ ((s − t) − mean(s − t))/(C·T), so T·(q − p) tends to a
# limit: the T² in front of the loss is what keeps the KD term's gradient the same size at
# every temperature (without it, it would shrink like 1/T²).

# %%
t_row = torch.tensor([[6.0, 2.5, 2.0, -1.0, -3.0]], dtype=torch.float64)
s_row = torch.tensor([[4.0, 3.0, 0.0, 0.0, -2.0]], dtype=torch.float64)
temps = [1.0, 2.0, 4.0, 8.0]
probs = {T: F.softmax(mg.tensor(t_row.numpy()) / T, dim=1).numpy()[0] for T in temps}
entropy = [float(torch.distributions.Categorical(probs=torch.tensor(probs[T])).entropy()) for T in temps]
print("teacher entropy (nats) at T =", temps, ":", [f"{h:.3f}" for h in entropy])
assert all(a < b for a, b in zip(entropy, entropy[1:]))      # softer with every doubling of T
for T in temps:
    assert np.allclose(probs[T], torch.softmax(t_row / T, 1).numpy()[0], atol=1e-15)

d = s_row - t_row
limit = ((d - d.mean()) / d.shape[1]).numpy()[0]          # the large-T limit of T·(q − p)
big_t = [4.0, 16.0, 64.0, 256.0]
gaps = []
for T in big_t:
    g = mg.tensor(s_row.numpy(), requires_grad=True)
    distill.kd_loss(g, mg.tensor(t_row.numpy()), T).backward()
    gaps.append(np.abs(g.grad.numpy()[0] - limit).max())
print("max |∂KD/∂s − limit| at T =", big_t, ":", [f"{x:.1e}" for x in gaps])
assert all(b < a / 3 for a, b in zip(gaps, gaps[1:]))  # the next term is O(1/T): 4x the T, ~1/4 the gap

fig, ax = plt.subplots(figsize=(6.5, 3.2))
width = 0.2
for i, T in enumerate(temps):
    ax.bar(np.arange(5) + (i - 1.5) * width, probs[T], width, label=f"T = {T:g}")
ax.set(xlabel=_common.tr("class", "类别"), ylabel="softmax(t / T)",
       title=_common.tr("The teacher's probabilities, softened by the temperature",
                        "教师模型的概率被温度软化"))
ax.legend()
_common.savefig(fig, "18_temperature.png")

# %% [markdown]
# ## 3. A tiny teacher, distilled into a 2-layer student
# A toy sentiment task: 9 random tokens, label 1 when "positive" tokens (ids 5–14) outnumber
# "negative" ones (ids 15–24), with 10% of the training labels flipped. The teacher, a 4-layer
# BERT (written by transformers, so both libraries load it), is fine-tuned first. The student
# gets the teacher's layers 0 and 2, its embeddings, pooler and head (`distill.build_student`),
# and learns from L = α·KD + (1 − α)·CE with T = 2, α = 0.5. A second copy of the same student
# learns from the labels alone (α = 0), with the same batches.
#
# First, one distillation step checked against the same computation in torch, on HF's
# teacher and HF's model with the same two layers kept.

# %%
VOCAB, LENGTH, N = 40, 10, 768


def toy_data(n: int, seed: int, flip: float):
    r = np.random.default_rng(seed)
    ids = r.integers(5, VOCAB, (n, LENGTH))
    ids[:, 0] = 2                                            # [CLS]
    score = ((ids >= 5) & (ids < 15)).sum(1) - ((ids >= 15) & (ids < 25)).sum(1)
    y = np.where(score == 0, r.integers(0, 2, n), score > 0).astype(np.int64)
    noisy = np.where(r.random(n) < flip, 1 - y, y)
    return ids, noisy, y


x_train, y_train, _ = toy_data(N, seed=1, flip=0.1)
x_test, _, y_test = toy_data(1024, seed=2, flip=0.0)
config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=4,
                                 num_attention_heads=2, intermediate_size=64,
                                 max_position_embeddings=16, num_labels=2, hidden_dropout_prob=0.0,
                                 attention_probs_dropout_prob=0.0)
workdir = tempfile.mkdtemp()
torch.manual_seed(0)
transformers.BertForSequenceClassification(config).save_pretrained(workdir)


def train(model, steps: int, lr: float, teacher=None, T: float = 2.0, alpha: float = 0.5, seed: int = 0):
    """AdamW on batches of 32; with a teacher, alpha·KD + (1 − alpha)·CE."""
    opt = mg.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    order = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        idx = order.integers(0, N, 32)
        out = model(x_train[idx], labels=y_train[idx])
        loss = out.loss
        if teacher is not None:
            with mg.no_grad():
                t_logits = teacher(x_train[idx]).logits
            loss = distill.distillation_loss(out.logits, out.loss, t_logits, T, alpha)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def probs_of(model) -> np.ndarray:
    with mg.no_grad():
        return F.softmax(model(x_test).logits, dim=1).numpy()[:, 1]


teacher = train(mb.BertForSequenceClassification.from_pretrained(workdir), steps=150, lr=3e-3, seed=1)
teacher_dir = tempfile.mkdtemp()
teacher.save_pretrained(teacher_dir)

student, layers = distill.build_student(teacher, 2)
print(f"student layers {layers} of the teacher's {teacher.config.num_hidden_layers}")

# One step's loss and gradients, against torch: HF's teacher, and HF's teacher cut to layers 0, 2.
batch, yb = x_train[:32], y_train[:32]
student.train()
out = student(batch, labels=yb)
with mg.no_grad():
    t_logits = teacher(batch).logits
loss = distill.distillation_loss(out.logits, out.loss, t_logits, 2.0, 0.5)
student.zero_grad()
loss.backward()
hf_teacher = transformers.BertForSequenceClassification.from_pretrained(teacher_dir).eval()
hf_student = transformers.BertForSequenceClassification.from_pretrained(teacher_dir).train()
hf_student.bert.encoder.layer = torch.nn.ModuleList([hf_student.bert.encoder.layer[i] for i in layers])
with torch.no_grad():
    hf_t = hf_teacher(torch.tensor(batch)).logits
hf_s = hf_student(torch.tensor(batch)).logits
hf_loss = (0.5 * torch_kd(hf_s, hf_t, 2.0)
           + 0.5 * torch.nn.functional.cross_entropy(hf_s, torch.tensor(yb)))
hf_loss.backward()
hf_grads = dict(hf_student.named_parameters())
# The key biases' gradient is 0 in exact arithmetic (a bias on the keys adds the same q·b to all
# of a query's scores, which softmax ignores): both libraries return rounding noise there, so
# those are checked in absolute terms, the rest relative to their size.
key_bias = [name for name, _ in student.named_parameters() if name.endswith("key.bias")]
worst = max(_common.max_rel_err(p.grad.numpy(), hf_grads[name].grad.numpy())
            for name, p in student.named_parameters() if name not in key_bias)
noise = max(np.abs(dict(student.named_parameters())[n].grad.numpy()).max() for n in key_bias)
assert noise < 1e-6 and max(np.abs(hf_grads[n].grad.numpy()).max() for n in key_bias) < 1e-6
print(f"loss {loss.item():.6f} (torch {hf_loss.item():.6f}); worst relative gradient error "
      f"over {len(hf_grads) - len(key_bias)} tensors: {worst:.1e}; key biases: |grad| ≤ {noise:.0e}")
# float32: a 2-layer forward and backward, each value a sum of tens of products (~1e-6 relative),
# and small gradient entries amplify relative error: 1e-3 is still far below any real mistake.
assert abs(loss.item() - hf_loss.item()) < 1e-5 and worst < 1e-3

untaught = distill.build_student(teacher, 2)[0]
distilled = train(student, steps=150, lr=3e-3, teacher=teacher, seed=3)
labels_only = train(untaught, steps=150, lr=3e-3, seed=3)
p_teacher, p_distilled, p_labels = probs_of(teacher), probs_of(distilled), probs_of(labels_only)
for name, p in (("teacher", p_teacher), ("distilled", p_distilled), ("labels only", p_labels)):
    print(f"{name:>12}: test accuracy {((p > 0.5) == y_test).mean():.3f}")


# %% [markdown]
# ## 4. Calibration: do the probabilities mean what they say?
# A model is calibrated when, of the examples it gives 80% confidence, 80% are right. The
# reliability diagram bins the test examples by confidence max(p, 1 − p) and plots each bin's
# accuracy against its mean confidence; the expected calibration error (ECE) is the gap,
# averaged with the bins' weights. Trained on the noisy labels alone, a student is pushed towards
# the labels' hard 0 and 1; the distilled one is pulled towards the teacher's probabilities, so
# it should sit closer to the teacher, which is what we measure (KL from the teacher's
# probabilities, computed in torch). The ECEs are printed in the legend but not asserted: with a
# thousand test examples spread over ten bins they move by a few hundredths from seed to seed.


# %%
def reliability(p: np.ndarray, y: np.ndarray, bins: int = 10):
    """(mean confidence, accuracy, count) per confidence bin, and the ECE."""
    conf, right = np.maximum(p, 1 - p), (p > 0.5) == y
    edges = np.linspace(0.5, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges) - 1, 0, bins - 1)
    rows = [(conf[which == b].mean(), right[which == b].mean(), (which == b).sum())
            for b in range(bins) if (which == b).any()]
    ece = sum(n * abs(c - a) for c, a, n in rows) / len(p)
    return np.array(rows), ece


def kl_from_teacher(p: np.ndarray) -> float:
    """Mean KL(teacher ‖ model) over the test set, as torch computes it."""
    t2 = torch.tensor(np.stack([1 - p_teacher, p_teacher], 1))
    m2 = torch.tensor(np.stack([1 - p, p], 1))
    return torch.nn.functional.kl_div(m2.log(), t2, reduction="batchmean").item()


kl_distilled, kl_labels = kl_from_teacher(p_distilled), kl_from_teacher(p_labels)
print(f"KL(teacher ‖ student): distilled {kl_distilled:.4f}, labels only {kl_labels:.4f}")
assert kl_distilled < kl_labels      # the distilled student's probabilities follow the teacher's

fig, ax = plt.subplots(figsize=(5, 4.5))
ax.plot([0.5, 1], [0.5, 1], ":", color="gray", label=_common.tr("perfectly calibrated", "完美校准"))
for name, p, style in ((_common.tr("teacher (4 layers)", "教师（4层）"), p_teacher, "o-"),
                       (_common.tr("distilled student (2)", "蒸馏的学生（2层）"), p_distilled, "s-"),
                       (_common.tr("labels-only student (2)", "仅用标签的学生（2层）"), p_labels, "^-")):
    rows, ece = reliability(p, y_test)
    ax.plot(rows[:, 0], rows[:, 1], style, label=f"{name}, ECE {ece:.3f}")
ax.set(xlabel=_common.tr("mean confidence in the bin", "分箱内的平均置信度"),
       ylabel=_common.tr("accuracy in the bin", "分箱内的准确率"),
       title=_common.tr("Reliability diagram (test set)", "可靠性图（测试集）"))
ax.legend(fontsize=8)
_common.savefig(fig, "18_reliability.png")

# %% [markdown] tags=["questions"]
# ## Check your understanding
#
# 1. Derive ∂KD/∂s = (T/N)(softmax(s/T) − softmax(t/T)) and say what it has in common with the
#    gradients of lessons 3 and 4.
#
# 2. Why is the KD term multiplied by T²? What would happen to its share of the gradient at T = 8
#    without it?
#
# 3. How is a one-logit (BCE) head distilled here, and why is that the natural choice?
#
# 4. Why does the teacher run under `no_grad` and in eval mode?
#
# 5. The student starts from the teacher's layers 0 and 2. What does that buy compared with a
#    random 2-layer student, and what does the `--alpha 0` run of `compare.distill` isolate?

# %% [markdown] tags=["answers"]
# ## Answers
#
# 1. Only log q depends on s, with ∂log q_c/∂s_j = (δ_cj − q_j)/T; summing against p (which sums
#    to 1) leaves (T/N)(q_j − p_j). As in lessons 3 and 4 it is prediction minus target, with
#    the teacher's softened distribution in place of the label.
#
# 2. Each division by T shrinks the gradient: for large T, q − p ≈ ((s − t) − mean)/(C·T), so the
#    gradient of the plain KL falls like 1/T². T² restores it, so α weighs the two losses the
#    same way at every temperature; without it, at T = 8 the KD term would get ~1/64 of its share.
#
# 3. As the two-class head with logits (0, z): softmax((0, z)/T) = (1 − σ(z/T), σ(z/T)), so the
#    loss is the KL between Bernoulli(σ(t/T)) and Bernoulli(σ(s/T)). That is exactly the
#    distribution a BCE head models, and the gradient stays (T/N)(σ(s/T) − σ(t/T)).
#
# 4. The teacher is a fixed target: no gradient should reach it (and recording its graph would
#    cost memory and time for nothing), and dropout would make the target random.
#
# 5. The copied layers, embeddings and head already compute something close to the teacher's
#    function, so the student starts near it instead of from scratch. With α = 0 the student has
#    the same start and the same batches but no KD term, so the difference from the distilled
#    row is the teacher's soft labels alone.
