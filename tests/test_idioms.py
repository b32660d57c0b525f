"""PyTorch idioms from real tutorials and model code, each run with torch and with minigrad.

Every idiom is one small function written once against an environment ``e`` whose ``e.T`` is either
``torch`` or ``minigrad`` (``e.F`` its nn.functional, ``e.tensor(...)`` a tensor on the device under
test). It returns what a user would look at (values, dtypes, shapes, gradients, Python scalars, the
type of an error raised); the test runs it with torch (the oracle) and with minigrad on both
backends, ``cpu`` (numpy) and ``torch:cpu``, and compares the two results structurally.

Sources: micrograd's tests, the PyTorch 60-minute blitz and CIFAR tutorial, nanoGPT (model.py,
train.py), the Annotated Transformer, makemore (parts 1-4), HF's collators and BERT's attention
mask, sentence-transformers' mean pooling, and the manual-SGD loops every course starts with.

Idioms that minigrad does not support on purpose are marked ``xfail(strict=True)`` with the reason,
so the suite fails if one starts passing.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import minigrad as mg

MG_DEVICES = ["cpu", "torch:cpu"]
# float32 on both sides; results are sums/products of O(1) values over <= a few hundred terms,
# summed in different orders by numpy and torch, so 1e-4 relative / 1e-5 absolute (as
# conftest.REDUCTION) is ~100x looser than rounding and ~1000x tighter than any real bug.
RTOL, ATOL = 1e-4, 1e-5

IDIOMS: dict = {}


def idiom(source: str, unsupported: str | None = None):
    """Register an idiom; ``unsupported`` says why minigrad does not do it on purpose."""
    def register(fn):
        IDIOMS[fn.__name__] = (fn, source, unsupported)
        return fn
    return register


def env(T, device: str):
    return SimpleNamespace(T=T, F=T.nn.functional, nn=T.nn, optim=T.optim, dev=device,
                           tensor=lambda data, **kw: T.tensor(data, device=device, **kw))


def rng_array(seed: int, *shape, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def raised(fn) -> str:
    """The name of the exception ``fn()`` raises, or 'no error'."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the type is the result
        return type(exc).__name__
    return "no error"


def load(e, module, *arrays):
    """Copy numpy arrays into a module's parameters (torch's usual ``with no_grad(): p.copy_(x)``)."""
    with e.T.no_grad():
        for p, a in zip(module.parameters(), arrays):
            p.copy_(e.tensor(a))
    return module


# ---- micrograd (test_engine.py) -------------------------------------------------------------------
@idiom("micrograd test_sanity_check")
def micrograd_sanity(e):
    x = e.tensor(-4.0, dtype=e.T.float64, requires_grad=True)
    z = 2 * x + 2 + x
    q = z.relu() + z * x
    h = (z * z).relu()
    y = h + q + q * x
    y.backward()
    return y, x.grad


@idiom("micrograd test_more_ops: += on non-leaf tensors, ** and / with Python numbers")
def micrograd_more_ops(e):
    a = e.tensor(-4.0, dtype=e.T.float64, requires_grad=True)
    b = e.tensor(2.0, dtype=e.T.float64, requires_grad=True)
    c = a + b
    d = a * b + b ** 3
    c += c + 1
    c += 1 + c + (-a)
    d += d * 2 + (b + a).relu()
    d += 3 * d + (b - a).relu()
    f = (c - d) ** 2
    g = f / 2.0
    g += 10.0 / f
    g.backward()
    return g, a.grad, b.grad


# ---- PyTorch 60-minute blitz ----------------------------------------------------------------------
@idiom("blitz tensors: from a list, from numpy, *_like")
def blitz_creation(e):
    data = [[1, 2], [3, 4]]
    x = e.tensor(data)
    return x, e.T.ones_like(x), e.T.rand_like(x, dtype=e.T.float32).shape, e.T.zeros_like(x, dtype=e.T.float64)


@idiom("blitz: from_numpy shares memory")
def blitz_from_numpy(e):
    n = np.ones(5, dtype=np.float32)
    t = e.T.from_numpy(n)
    np.add(n, 1, out=n)
    return t


@idiom("blitz: t.numpy() shares memory, t.add_(1) shows through")
def blitz_numpy_bridge(e):
    t = e.T.ones(5)
    n = t.numpy()
    t.add_(1)
    return n.copy(), t


@idiom("blitz: tensor[:, 1] = 0, cat, matmul three ways, * and mul")
def blitz_operations(e):
    t = e.tensor(rng_array(0, 4, 4))
    t[:, 1] = 0
    t1 = e.T.cat([t, t, t], dim=1)
    y1, y2 = t @ t.T, t.matmul(t.T)
    y3 = e.T.matmul(t, t.T)
    return t, t1.shape, y1, y2, y3, t * t, t.mul(t)


@idiom("blitz: agg = tensor.sum(); agg.item(); tensor.add_(5)")
def blitz_item_and_inplace(e):
    t = e.tensor([[1.0, 2.0], [3.0, 4.0]])
    agg = t.sum()
    item = agg.item()
    t.add_(5)
    return item, type(item).__name__, t


@idiom("blitz autograd: Q.backward(gradient=external_grad)")
def blitz_external_grad(e):
    a = e.tensor([2.0, 3.0], requires_grad=True)
    b = e.tensor([6.0, 4.0], requires_grad=True)
    Q = 3 * a ** 3 - b ** 2
    Q.backward(gradient=e.tensor([1.0, 1.0]))
    return a.grad, b.grad, a.grad == 9 * a ** 2


@idiom("blitz autograd: no_grad, detach, requires_grad_")
def blitz_no_grad_detach(e):
    x = e.tensor([1.0, 2.0]).requires_grad_()
    with e.T.no_grad():
        z = x * 2
    return z.requires_grad, x.detach().requires_grad, (x * 2).requires_grad, x.is_leaf, (x * 2).is_leaf


@idiom("blitz nn: optimizer.zero_grad(); loss.backward(); optimizer.step()")
def blitz_training_loop(e):
    net = load(e, e.nn.Sequential(e.nn.Linear(4, 8), e.nn.ReLU(), e.nn.Linear(8, 2)),
               rng_array(1, 8, 4), rng_array(2, 8), rng_array(3, 2, 8), rng_array(4, 2)).to(e.dev)
    opt = e.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x, y = e.tensor(rng_array(5, 16, 4)), e.tensor(rng_array(6, 16, 2))
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = ((net(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, [p for p in net.parameters()]


@idiom("CIFAR tutorial: _, predicted = torch.max(outputs.data, 1); (predicted == labels).sum().item()")
def cifar_accuracy(e):
    outputs = e.tensor(rng_array(7, 10, 4))
    labels = e.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    _, predicted = e.T.max(outputs.data, 1)
    correct = (predicted == labels).sum().item()
    return predicted, correct, 100 * correct // labels.size(0)


# ---- nanoGPT ---------------------------------------------------------------------------------------
@idiom("nanoGPT CausalSelfAttention: tril mask, masked_fill(bias == 0, -inf), softmax, transpose/view")
def nanogpt_attention(e):
    B, T_, C, nh = 2, 4, 6, 2
    bias = e.T.tril(e.T.ones(T_, T_, device=e.dev)).view(1, 1, T_, T_)
    x = e.tensor(rng_array(8, B, T_, 3 * C), requires_grad=True)
    q, k, v = x.split(C, dim=2)
    k = k.view(B, T_, nh, C // nh).transpose(1, 2)
    q = q.view(B, T_, nh, C // nh).transpose(1, 2)
    v = v.view(B, T_, nh, C // nh).transpose(1, 2)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
    att = att.masked_fill(bias[:, :, :T_, :T_] == 0, float("-inf"))
    att = e.F.softmax(att, dim=-1)
    y = (att @ v).transpose(1, 2).contiguous().view(B, T_, C)
    y.sum().backward()
    return att, y, x.grad


@idiom("nanoGPT: logits.view(-1, logits.size(-1)), targets.view(-1), F.cross_entropy")
def nanogpt_loss(e):
    logits = e.tensor(rng_array(9, 2, 3, 5), requires_grad=True)
    targets = e.tensor([[0, 4, 2], [1, 1, 3]])
    loss = e.F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
    loss.backward()
    return loss, logits.grad


@idiom("nanoGPT generate: logits[:, -1, :] / temperature, topk, logits[logits < v[:, [-1]]] = -inf")
def nanogpt_generate_step(e):
    idx = e.tensor([[1, 2], [3, 0]])
    logits = e.tensor(rng_array(10, 2, 2, 6))
    with e.T.no_grad():
        logits = logits[:, -1, :] / 0.8
        v, _ = e.T.topk(logits, 3)
        logits[logits < v[:, [-1]]] = -float("Inf")
        probs = e.F.softmax(logits, dim=-1)
        idx_next = e.T.argmax(probs, dim=-1, keepdim=True)
        idx = e.T.cat((idx, idx_next), dim=1)
    return probs, idx


@idiom("nanoGPT: parameter count, decay groups by p.dim() >= 2")
def nanogpt_param_groups(e):
    model = e.nn.Sequential(e.nn.Embedding(10, 4), e.nn.LayerNorm(4), e.nn.Linear(4, 3))
    param_dict = {pn: p for pn, p in model.named_parameters() if p.requires_grad}
    decay = [p for n, p in param_dict.items() if p.dim() >= 2]
    nodecay = [p for n, p in param_dict.items() if p.dim() < 2]
    return (sum(p.numel() for p in model.parameters()), sum(p.numel() for p in decay),
            sum(p.numel() for p in nodecay), sorted(param_dict))


@idiom("nanoGPT train.py: loss / accumulation steps, clip_grad_norm_, zero_grad(set_to_none=True)")
def nanogpt_accumulate_and_clip(e):
    lin = load(e, e.nn.Linear(3, 2), rng_array(11, 2, 3), rng_array(12, 2)).to(e.dev)
    opt = e.optim.AdamW(lin.parameters(), lr=1e-2, weight_decay=0.1)
    for micro in range(2):
        x = e.tensor(rng_array(13 + micro, 4, 3))
        loss = (lin(x) ** 2).sum() / 2
        loss.backward()
    norm = float(e.nn.utils.clip_grad_norm_(lin.parameters(), 1.0))
    opt.step()
    opt.zero_grad(set_to_none=True)
    return norm, lin.weight, lin.bias, lin.weight.grad is None


@idiom("nanoGPT estimate_loss: losses = zeros(n); losses[k] = loss.item(); losses.mean()")
def nanogpt_estimate_loss(e):
    losses = e.T.zeros(4, device=e.dev)
    for k in range(4):
        loss = (e.tensor(rng_array(20 + k, 3)) ** 2).mean()
        losses[k] = loss.item()
    return losses, losses.mean()


@idiom("nanoGPT: @torch.no_grad() decorator, model.eval()/train()")
def nanogpt_no_grad_decorator(e):
    lin = e.nn.Linear(2, 2).to(e.dev)

    @e.T.no_grad()
    def evaluate(x):
        lin.eval()
        out = lin(x)
        lin.train()
        return out

    out = evaluate(e.tensor([[1.0, 2.0]]))
    return out.requires_grad, lin.training, e.T.is_grad_enabled()


# ---- The Annotated Transformer ---------------------------------------------------------------------
@idiom("Annotated Transformer subsequent_mask: triu(ones).type(torch.uint8) == 0",
       unsupported="minigrad has one integer dtype (int64): no uint8/int32")
def annotated_subsequent_mask(e):
    mask = e.T.triu(e.T.ones((1, 4, 4)), diagonal=1).type(e.T.uint8)
    return mask == 0


@idiom("Annotated Transformer attention(): matmul / sqrt(d_k), masked_fill(mask == 0, -1e9), softmax")
def annotated_attention(e):
    query = e.tensor(rng_array(30, 2, 3, 4), requires_grad=True)
    key = e.tensor(rng_array(31, 2, 3, 4))
    value = e.tensor(rng_array(32, 2, 3, 4))
    mask = e.T.triu(e.T.ones(1, 3, 3, device=e.dev), diagonal=1) == 0
    d_k = query.size(-1)
    scores = e.T.matmul(query, key.transpose(-2, -1)) / math.sqrt(d_k)
    scores = scores.masked_fill(mask == 0, -1e9)
    p_attn = scores.softmax(dim=-1)
    out = e.T.matmul(p_attn, value)
    out.sum().backward()
    return p_attn, out, query.grad


@idiom("Annotated Transformer LayerNorm: mean(-1, keepdim=True), std(-1, keepdim=True)")
def annotated_layer_norm(e):
    x = e.tensor(rng_array(33, 2, 5), requires_grad=True)
    a_2, b_2 = e.T.ones(5, device=e.dev, requires_grad=True), e.T.zeros(5, device=e.dev, requires_grad=True)
    mean, std = x.mean(-1, keepdim=True), x.std(-1, keepdim=True)
    y = a_2 * (x - mean) / (std + 1e-6) + b_2
    (y * y * e.tensor(rng_array(34, 5))).sum().backward()
    return y, x.grad, a_2.grad, b_2.grad


@idiom("Annotated Transformer PositionalEncoding: pe[:, 0::2] = sin(position * div_term)")
def annotated_positional_encoding(e):
    max_len, d_model = 6, 8
    pe = e.T.zeros(max_len, d_model, device=e.dev)
    position = e.T.arange(0, max_len, device=e.dev).unsqueeze(1)
    div_term = e.T.exp(e.T.arange(0, d_model, 2, device=e.dev) * -(math.log(10000.0) / d_model))
    pe[:, 0::2] = e.T.sin(position * div_term)
    pe[:, 1::2] = e.T.cos(position * div_term)
    return pe.unsqueeze(0)


@idiom("Annotated Transformer Generator: log_softmax(self.proj(x), dim=-1)")
def annotated_generator(e):
    proj = load(e, e.nn.Linear(4, 6), rng_array(35, 6, 4), rng_array(36, 6)).to(e.dev)
    x = e.tensor(rng_array(37, 3, 4))
    out = e.F.log_softmax(proj(x), dim=-1)
    out.sum().backward()
    return out, proj.weight.grad


@idiom("Annotated Transformer LabelSmoothing: true_dist.scatter_(1, target.unsqueeze(1), conf)",
       unsupported="scatter_ is not implemented; one_hot arithmetic or t[rows, cols] = v does the same")
def annotated_label_smoothing(e):
    x = e.tensor(rng_array(38, 3, 5))
    true_dist = x.data.clone()
    true_dist.fill_(0.1 / 3)
    true_dist.scatter_(1, e.tensor([1, 2, 0]).unsqueeze(1), 0.9)
    return true_dist


@idiom("Annotated Transformer run_epoch: total_tokens += batch.ntokens; loss / ntokens")
def annotated_token_count(e):
    tgt = e.tensor([[1, 5, 2, 0, 0], [1, 3, 3, 2, 0]])
    ntokens = (tgt != 0).data.sum()
    loss = e.tensor(12.5)
    return ntokens, loss / ntokens, (loss / ntokens).item()


# ---- makemore ---------------------------------------------------------------------------------------
@idiom("makemore 1: N = zeros((27, 27), dtype=int32); N[ix1, ix2] += 1",
       unsupported="minigrad has one integer dtype (int64): no int32")
def makemore_counts_int32(e):
    N = e.T.zeros((3, 3), dtype=e.T.int32)
    N[0, 1] += 1
    return N


@idiom("makemore 1: counts N[ix1, ix2] += 1 (int64), P = (N+1).float(); P /= P.sum(1, keepdims=True)")
def makemore_bigram_counts(e):
    N = e.T.zeros((4, 4), dtype=e.T.int64, device=e.dev)
    for ix1, ix2 in [(0, 1), (1, 2), (2, 0), (0, 1), (3, 3), (1, 2)]:
        N[ix1, ix2] += 1
    P = (N + 1).float()
    P /= P.sum(1, keepdims=True)
    return N, P


@idiom("makemore 1: loss = -probs[arange(n), ys].log().mean() + 0.01 * (W**2).mean(); W.data += -50 * W.grad")
def makemore_neural_bigram(e):
    xs, ys = e.tensor([0, 1, 2, 3, 1]), e.tensor([1, 2, 3, 0, 0])
    W = e.tensor(rng_array(40, 4, 4), requires_grad=True)
    xenc = (xs.unsqueeze(1) == e.T.arange(4, device=e.dev)).float()  # one-hot without F.one_hot
    for _ in range(3):
        logits = xenc @ W
        counts = logits.exp()
        probs = counts / counts.sum(1, keepdims=True)
        loss = -probs[e.T.arange(5, device=e.dev), ys].log().mean() + 0.01 * (W ** 2).mean()
        W.grad = None
        loss.backward()
        W.data += -50 * W.grad
    return loss, W


@idiom("makemore 1: F.one_hot(xs, num_classes=27).float()",
       unsupported="F.one_hot is not in minigrad.nn.functional (compare with arange instead)")
def makemore_one_hot(e):
    return e.F.one_hot(e.tensor([0, 2]), num_classes=3).float()


@idiom("makemore 2 MLP: emb = C[X]; h = tanh(emb.view(-1, 6) @ W1 + b1); F.cross_entropy; p.data += -lr * p.grad")
def makemore_mlp_step(e):
    X = e.tensor([[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 0]])
    Y = e.tensor([1, 2, 3, 0])
    C = e.tensor(rng_array(41, 5, 2), requires_grad=True)
    W1 = e.tensor(rng_array(42, 6, 8, scale=0.5), requires_grad=True)
    b1 = e.tensor(rng_array(43, 8), requires_grad=True)
    W2 = e.tensor(rng_array(44, 8, 5, scale=0.5), requires_grad=True)
    parameters = [C, W1, b1, W2]
    for _ in range(2):
        emb = C[X]
        h = e.T.tanh(emb.view(-1, 6) @ W1 + b1)
        loss = e.F.cross_entropy(h @ W2, Y)
        for p in parameters:
            p.grad = None
        loss.backward()
        for p in parameters:
            p.data += -0.1 * p.grad
    return loss, C, W1, b1, W2


@idiom("makemore 2: lre = linspace(-3, 0, n); lrs = 10**lre")
def makemore_learning_rates(e):
    lre = e.T.linspace(-3, 0, 7, device=e.dev)
    return lre, 10 ** lre


@idiom("makemore 2: ix = torch.randint(0, X.shape[0], (32,)) (shape, dtype and range)")
def makemore_randint(e):
    e.T.manual_seed(0)
    ix = e.T.randint(0, 10, (32,), device=e.dev)
    return ix.shape, ix.dtype == e.T.int64, bool(((ix >= 0) & (ix < 10)).all())


@idiom("makemore 3: hpreact.mean(0, keepdim=True), std(0, keepdim=True); running stats under no_grad")
def makemore_batchnorm(e):
    hpreact = e.tensor(rng_array(45, 6, 3), requires_grad=True)
    bngain, bnbias = e.T.ones((1, 3), device=e.dev), e.T.zeros((1, 3), device=e.dev)
    bnmean_running, bnstd_running = e.T.zeros((1, 3), device=e.dev), e.T.ones((1, 3), device=e.dev)
    bnmeani, bnstdi = hpreact.mean(0, keepdim=True), hpreact.std(0, keepdim=True)
    out = bngain * (hpreact - bnmeani) / bnstdi + bnbias
    with e.T.no_grad():
        bnmean_running = 0.999 * bnmean_running + 0.001 * bnmeani
        bnstd_running = 0.999 * bnstd_running + 0.001 * bnstdi
    out.tanh().sum().backward()
    return out, bnmean_running, bnstd_running, bnmean_running.requires_grad, hpreact.grad


@idiom("makemore 3: Kaiming init W * (5/3) / fan_in**0.5; saturation (h.abs() > 0.97).float().mean()")
def makemore_saturation(e):
    W1 = e.tensor(rng_array(46, 6, 10)) * (5 / 3) / (6 ** 0.5)
    h = e.T.tanh(e.tensor(rng_array(47, 8, 6)) @ W1)
    return W1, (h.abs() > 0.97).float().mean(), h.std(), h.mean()


@idiom("makemore 4: logits.max(1, keepdim=True).values; counts_sum**-1; logprobs[range(n), Yb]")
def makemore_manual_backprop_forward(e):
    logits = e.tensor(rng_array(48, 4, 5), requires_grad=True)
    Yb = e.tensor([1, 0, 4, 2])
    n = 4
    logit_maxes = logits.max(1, keepdim=True).values
    norm_logits = logits - logit_maxes
    counts = norm_logits.exp()
    counts_sum = counts.sum(1, keepdims=True)
    counts_sum_inv = counts_sum ** -1
    probs = counts * counts_sum_inv
    logprobs = probs.log()
    loss = -logprobs[range(n), Yb].mean()
    loss.backward()
    return loss, logits.grad


@idiom("makemore 4: dlogprobs = zeros_like(logprobs); dlogprobs[range(n), Yb] = -1.0/n; cmp with allclose")
def makemore_manual_grad_compare(e):
    logits = e.tensor(rng_array(49, 4, 5), requires_grad=True)
    Yb = e.tensor([1, 0, 4, 2])
    logprobs = e.F.log_softmax(logits, 1)
    loss = -logprobs[range(4), Yb].mean()
    loss.backward()
    dlogits = e.F.softmax(logits, 1)
    dlogits[range(4), Yb] -= 1
    dlogits /= 4
    exact = bool(e.T.all(dlogits == logits.grad).item())
    return e.T.allclose(dlogits, logits.grad, atol=1e-6), type(exact).__name__, (dlogits - logits.grad).abs().max().item() < 1e-6


# ---- HF collators and BERT ---------------------------------------------------------------------------
@idiom("HF padding collator: full((n, L), pad, dtype=long); batch[i, :len(s)] = tensor(s); (batch != pad).long()")
def hf_padding(e):
    seqs = [[101, 7, 8, 102], [101, 9, 102], [101, 102]]
    max_len = max(len(s) for s in seqs)
    batch = e.T.full((len(seqs), max_len), 0, dtype=e.T.long, device=e.dev)
    for i, s in enumerate(seqs):
        batch[i, :len(s)] = e.tensor(s)
    attention_mask = (batch != 0).long()
    return batch, attention_mask, attention_mask.sum(1)


@idiom("HF DataCollatorForLanguageModeling: masked_fill_(special, 0.0); labels[~masked] = -100; inputs[masked] = mask_id")
def hf_mlm_masking(e):
    inputs = e.tensor([[101, 5, 6, 7, 102], [101, 8, 9, 102, 0]])
    labels = inputs.clone()
    probability_matrix = e.T.full(labels.shape, 0.15, device=e.dev)
    special_tokens_mask = (inputs == 101) | (inputs == 102) | (inputs == 0)
    probability_matrix.masked_fill_(special_tokens_mask, value=0.0)
    masked_indices = probability_matrix * e.tensor(rng_array(50, 2, 5)).abs() > 0.1
    labels[~masked_indices] = -100
    inputs[masked_indices] = 103
    return probability_matrix, masked_indices, labels, inputs


@idiom("HF: labels = input_ids.clone(); labels[labels == pad_token_id] = -100")
def hf_ignore_padding_labels(e):
    input_ids = e.tensor([[5, 6, 0, 0], [7, 0, 0, 0]])
    labels = input_ids.clone()
    labels[labels == 0] = -100
    return labels, input_ids


@idiom("HF BERT extended mask: mask[:, None, None, :].to(dtype); (1.0 - m) * finfo(float32).min")
def hf_extended_attention_mask(e):
    attention_mask = e.tensor([[1, 1, 0], [1, 0, 0]])
    extended = attention_mask[:, None, None, :]
    extended = extended.to(dtype=e.T.float32)
    extended = (1.0 - extended) * e.T.finfo(e.T.float32).min
    return extended


@idiom("sentence-transformers mean pooling: unsqueeze(-1).expand(size()).float(); sum / clamp(min=1e-9); normalize")
def sbert_mean_pooling(e):
    token_embeddings = e.tensor(rng_array(51, 2, 3, 4), requires_grad=True)
    attention_mask = e.tensor([[1, 1, 0], [1, 0, 0]])
    input_mask_expanded = attention_mask.unsqueeze(-1).expand(token_embeddings.size()).float()
    pooled = e.T.sum(token_embeddings * input_mask_expanded, 1) / e.T.clamp(input_mask_expanded.sum(1), min=1e-9)
    normed = pooled / pooled.norm(dim=1, keepdim=True)
    (normed * e.tensor(rng_array(52, 2, 4))).sum().backward()
    return pooled, normed, token_embeddings.grad


# ---- manual SGD, .data, gradients --------------------------------------------------------------------
@idiom("manual SGD: with no_grad(): for p in params: p -= lr * p.grad; p.grad.zero_()")
def manual_sgd_isub(e):
    w = e.tensor(rng_array(60, 3), requires_grad=True)
    b = e.tensor(0.5, requires_grad=True)
    x, y = e.tensor(rng_array(61, 5, 3)), e.tensor(rng_array(62, 5))
    for _ in range(3):
        loss = ((x @ w + b - y) ** 2).mean()
        loss.backward()
        with e.T.no_grad():
            for p in (w, b):
                p -= 0.1 * p.grad
                p.grad.zero_()
    return w, b, w.grad, w.is_leaf, w.requires_grad


@idiom("old-style SGD: p.data.add_(p.grad.data, alpha=-lr); p.grad.data.zero_()")
def manual_sgd_data(e):
    w = e.tensor(rng_array(63, 3), requires_grad=True)
    (w * w).sum().backward()
    w.data.add_(w.grad.data, alpha=-0.1)
    w.grad.data.zero_()
    return w, w.grad


@idiom("p.data.copy_(src); p.data = other; p.data -= lr * p.grad.data")
def data_copy_and_assign(e):
    w = e.tensor([1.0, 2.0], requires_grad=True)
    w.data.copy_(e.tensor([3.0, 4.0]))
    (w * w).sum().backward()
    w.data -= 0.5 * w.grad.data
    before = w.clone().detach()
    w.data = e.tensor([7.0, 8.0])
    return before, w, w.requires_grad, w.data.requires_grad


@idiom("in-place on a leaf that requires grad, outside no_grad: torch's RuntimeError")
def inplace_leaf_error(e):
    w = e.tensor([1.0, 2.0], requires_grad=True)

    def setitem():
        w[0] = 5.0
    return raised(lambda: w.add_(1)), raised(setitem), raised(lambda: w.zero_())


@idiom("modifying a saved tensor in place, then backward: torch's version-counter RuntimeError")
def inplace_version_error(e):
    w = e.tensor([1.0, 2.0], requires_grad=True)
    h = w.exp()
    h.add_(1)
    s = w.sigmoid()
    out = s * 2
    s.mul_(3)
    return raised(lambda: h.sum().backward()), raised(lambda: out.sum().backward())


@idiom("in-place on a non-leaf is recorded: h = w * 2; h.add_(w); h.mul_(w); backward")
def inplace_non_leaf_recorded(e):
    w = e.tensor([1.0, 2.0], requires_grad=True)
    h = w * 2
    h.add_(w)
    h.mul_(w)
    h.sum().backward()
    return h, w.grad, h.is_leaf


@idiom("buffer += tensor that requires grad makes the buffer part of the graph")
def inplace_into_plain_buffer(e):
    w = e.tensor([1.0, 2.0], requires_grad=True)
    buf = e.T.zeros(2, device=e.dev)
    buf += w * w
    buf.sum().backward()
    return buf.requires_grad, buf.is_leaf, w.grad


@idiom("x[mask] = 0 on data; with no_grad(): weight[0] = 0")
def setitem_mask_and_no_grad(e):
    x = e.tensor(rng_array(64, 3, 4))
    x[x < 0] = 0
    lin = e.nn.Linear(4, 2).to(e.dev)
    with e.T.no_grad():
        lin.weight[0] = 0
        lin.weight[:, 1] = e.tensor([5.0, 6.0])
    return x, lin.weight[0], lin.weight[:, 1]


@idiom("y = x.clone(); y += 1 leaves x alone; y = x (alias) does not")
def clone_vs_alias(e):
    x = e.tensor([1.0, 2.0])
    y = x.clone()
    y += 1
    z = x
    z += 10
    return x, y


@idiom("gradient accumulation across backward calls, retain_graph=True")
def grad_accumulation(e):
    w = e.tensor([1.0, -2.0], requires_grad=True)
    loss = (w ** 3).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    return w.grad


@idiom("a second backward through a graph that saved nothing (y = w + 1)")
def second_backward_no_saved(e):
    w = e.tensor([1.0, 2.0], requires_grad=True)
    y = w + 1
    y.sum().backward()
    y.sum().backward()
    z = (w * w).sum()
    z.backward()
    return w.grad, raised(z.backward)


# ---- comparisons, truthiness, Python builtins ----------------------------------------------------------
@idiom("accuracy: (pred == y).float().mean(); (logits.argmax(-1) == y).sum().item()")
def accuracy_idioms(e):
    logits = e.tensor(rng_array(65, 6, 3))
    y = e.tensor([0, 1, 2, 0, 1, 2])
    pred = logits.argmax(dim=-1)
    return (pred == y).float().mean(), (pred == y).sum().item(), (pred != y), pred.eq(y)


@idiom("comparisons with tensors, Python and numpy scalars give bool tensors")
def comparisons(e):
    t = e.tensor([0.0, 1.0, 2.0])
    return (t == 1, t != 1, t < 1, t <= 1, t > np.float64(1), t >= 1, t == e.tensor([0.0, 5.0, 2.0]),
            1 < t, e.tensor([1, 2]) == 2)


@idiom("if loss.item() < x / if t.sum() > 0 / bool() of a multi-element tensor raises")
def truthiness(e):
    t = e.tensor([-1.0, 2.0])
    first = "pos" if t.sum() > 0 else "neg"
    second = bool(e.tensor([0.0]) > 1)
    return first, second, raised(lambda: bool(t > 0)), bool(e.tensor(3)), raised(lambda: len(e.tensor(1.0)))


@idiom("(x > 0).any() / .all() in conditions; torch.all(dt == t)")
def any_all(e):
    x = e.tensor([[-1.0, 2.0], [3.0, 4.0]])
    return (x > 0).any(), (x > 0).all(), e.T.all(x > -2), (x > 0).all(dim=1), bool((x > 0).any())


@idiom("tensors as dict keys and set members (identity hash)")
def hash_identity(e):
    a, b = e.tensor([1.0]), e.tensor([1.0])
    d = {a: "a", b: "b"}
    return len(d), d[a], a in {a}, len({a, b}), list(d.values())


@idiom("float(t), int(t), abs(t), round(t.item(), 2), t.tolist(), -t, ~mask")
def python_builtins(e):
    t = e.tensor([-1.25])
    mask = e.tensor([True, False])
    return float(t), int(e.tensor(7)), abs(t), round(t.item(), 2), t.tolist(), -t, ~mask, [1, 2, 3][e.tensor(1)]


@idiom("sum(losses) / len(losses) over 0-d tensors; total += loss.item() * x.size(0)")
def python_sum_of_tensors(e):
    losses = [e.tensor(v) for v in (0.5, 1.5, 2.0)]
    total = 0.0
    for loss in losses:
        total += loss.item() * 4
    return sum(losses) / len(losses), total


@idiom("for row in t: ...; len(t); list(t)")
def iterate_rows(e):
    t = e.tensor([[1.0, 2.0], [3.0, 4.0]])
    return [row.sum() for row in t], len(t), raised(lambda: iter(e.tensor(1.0)))


# ---- dtypes and promotion --------------------------------------------------------------------------------
@idiom("promotion: int tensor * 0.5, int / int, arange(5) / 5, float32 * np.float64, bool + int")
def promotion_scalars(e):
    i, f = e.tensor([1, 2]), e.tensor([1.0, 2.0])
    return (i * 0.5, i / 2, e.T.arange(5, device=e.dev) / 5, f * np.float64(2), e.tensor([True, False]) + 1,
            i + 1, i * True, f / np.int64(2), 2 / i, i - 0.5)


@idiom("promotion: int tensor + float tensor, float32 + float64 tensors, 0-d float64 * float32 vector")
def promotion_tensors(e):
    i, f32 = e.tensor([1, 2]), e.tensor([1.0, 2.0])
    f64 = e.tensor([1.0, 2.0], dtype=e.T.float64)
    return i + f32, f32 + f64, e.tensor(2.0, dtype=e.T.float64) * f32, i * e.tensor(0.5), f32 * e.tensor(3)


@idiom("dtype conversions: .float() .double() .long() .bool() .half() .type_as() .to(torch.float64)")
def dtype_conversions(e):
    t = e.tensor([0.0, 1.5, -2.0])
    return (t.long(), t.bool(), t.double(), t.half(), t.long().float(), e.tensor([1, 2]).type_as(t),
            t.to(e.T.float64), t.to(e.dev, e.T.float64), t.to(e.tensor([1], dtype=e.T.float64)),
            t.to(dtype=e.T.float64).dtype, t.is_floating_point())


@idiom("int tensors into float functions: arange(4).exp(), sqrt, mean of .float()")
def int_into_float_functions(e):
    a = e.T.arange(4, device=e.dev)
    return a.exp(), a.sqrt(), a.float().mean(), e.T.sigmoid(a), a.sin()


# ---- powers ------------------------------------------------------------------------------------------------
@idiom("powers: x ** 2, x.pow(3), 2 ** x, 0.0 ** x at 0, (-2.0) ** x, math.e ** x, x ** 0 (with gradients)")
def powers(e):
    x = e.tensor([0.0, 2.0, 3.0, -1.0], requires_grad=True)
    out = [x ** 2, x.pow(3), 2 ** x, 0.0 ** x, (-2.0) ** x, math.e ** x, x ** 0, 10 ** x, x ** 0.5]
    grads = []
    for o in out:
        x.grad = None
        o.sum().backward()
        grads.append(x.grad)
    return out, grads


# ---- shapes, reductions, indexing ------------------------------------------------------------------------------
@idiom("view(-1), view(B, -1), flatten(1), squeeze(-1), unsqueeze(0), permute, T, mT, reshape_as")
def shape_idioms(e):
    x = e.tensor(rng_array(70, 2, 3, 1))
    return (x.view(-1).shape, x.view(2, -1), x.flatten(1), x.squeeze(-1), x.unsqueeze(0).shape,
            x.permute(2, 0, 1).shape, x.squeeze().T, x.mT.shape, x.view_as(e.tensor(rng_array(71, 6))),
            x.size(), x.size(-1), x.ndim, x.dim(), x.numel(), len(x), x.shape[0])


@idiom("max/min in all forms: max(), max(dim) -> (values, indices), max(other), torch.max(x, 1), amax, argmin")
def max_min_forms(e):
    x = e.tensor([[1.0, 5.0, 3.0], [4.0, 2.0, 6.0]], requires_grad=True)
    y = e.tensor([[2.0, 2.0, 2.0], [5.0, 5.0, 5.0]])
    vals, idx = x.max(dim=1)
    mn = x.min(0)
    outs = [x.max(), x.min(), vals, mn.values, x.max(y), e.T.max(x, 1)[0], x.amax(0), e.T.maximum(x, y), e.T.min(x, y)]
    sum(o.sum() for o in outs).backward()
    return outs, idx, mn.indices, x.argmin(1), x.argmax(), x.grad


@idiom("torch.where(cond, x, y), where(cond, x, 0.0), where(cond) (indices), masked_fill")
def where_forms(e):
    x = e.tensor([-1.0, 2.0, -3.0, 4.0], requires_grad=True)
    a = e.T.where(x > 0, x, e.T.zeros_like(x))
    b = e.T.where(x > 0, x, 0.0)
    c = x.masked_fill(x < -2, 0.0)
    (a * 1 + b * 2 + c * 3).sum().backward()
    return a, b, c, e.T.where(x > 0), x.grad, e.T.where(x > 0, 1.0, -1.0)


@idiom("reductions: sum(dim), mean(dim, keepdim), var(unbiased=False), std(0), norm(), clamp(min=0)")
def reductions(e):
    x = e.tensor(rng_array(72, 3, 4), requires_grad=True)
    outs = [x.sum(1), x.mean(0, keepdim=True), x.var(1, unbiased=False), x.std(0), x.norm(), x.clamp(min=0),
            x.clamp(-0.5, 0.5), e.T.sum(x), e.T.mean(x, dim=(0, 1)), x.abs().sum(-1)]
    sum(o.sum() for o in outs).backward()
    return outs, x.grad


@idiom("stack, cat, split, chunk; advanced indexing x[[0, 2]], x[idx_tensor], x[:, -1]")
def joining_and_indexing(e):
    x = e.tensor(rng_array(73, 4, 3), requires_grad=True)
    parts = x.chunk(2, dim=0)
    a, b = x.split([1, 2], dim=1)
    out = [e.T.stack([x, x], dim=0).sum(0), e.T.cat(parts, 0), a, b, x[[0, 2]], x[e.tensor([3, 3, 1])], x[:, -1], x[1:3, ::2]]
    sum(o.sum() for o in out).backward()
    return out, x.grad


@idiom("creation: zeros/ones/full/eye/arange(start, end, step)/full_like/empty(...).shape/tensor(scalar)")
def creation(e):
    T = e.T
    return (T.zeros(2, 3, device=e.dev), T.ones((2,), device=e.dev), T.full((2, 2), 7.0, device=e.dev),
            T.eye(3, device=e.dev), T.arange(1, 7, 2, device=e.dev), T.arange(0.0, 1.0, 0.25, device=e.dev),
            T.full_like(e.tensor([1.0, 2.0]), 3.0), T.empty(2, 5, device=e.dev).shape, e.tensor(3),
            e.tensor(2.5), T.full((2,), 4, device=e.dev), T.is_tensor(e.tensor(1)), T.is_tensor(1.0))


@idiom("x.new_zeros / new_ones / new_tensor keep x's dtype and device (HF model code)")
def new_tensors(e):
    x = e.tensor([1.0, 2.0], dtype=e.T.float64)
    return x.new_zeros(2, 3), x.new_ones((2,)), x.new_tensor([1, 2]), x.new_full((2,), 5)


@idiom("no_grad as decorator (bare), enable_grad inside no_grad, set_grad_enabled(False) block")
def grad_modes(e):
    x = e.tensor([1.0], requires_grad=True)

    @e.T.no_grad
    def f(t):
        return t * 2

    with e.T.no_grad():
        with e.T.enable_grad():
            inner = x * 2
    with e.T.set_grad_enabled(False):
        off = x * 2
    return f(x).requires_grad, inner.requires_grad, off.requires_grad, e.T.is_grad_enabled()


@idiom("softmax/log_softmax: torch.softmax(x, -1), x.softmax(-1), F.log_softmax, exp(log_softmax) = softmax")
def softmax_forms(e):
    x = e.tensor(rng_array(74, 2, 5), requires_grad=True)
    outs = [e.T.softmax(x, dim=-1), x.softmax(-1), e.F.log_softmax(x, dim=1), e.T.log_softmax(x, 0),
            e.F.log_softmax(x, -1).exp()]
    (sum(o.sum() for o in outs[2:4]) + (outs[0] * outs[0]).sum()).backward()
    return outs, x.grad


@idiom("state_dict round trip: model2.load_state_dict(model.state_dict()) gives the same outputs")
def state_dict_round_trip(e):
    m1 = load(e, e.nn.Linear(3, 2), rng_array(75, 2, 3), rng_array(76, 2)).to(e.dev)
    m2 = e.nn.Linear(3, 2).to(e.dev)
    m2.load_state_dict(m1.state_dict())
    x = e.tensor(rng_array(77, 4, 3))
    return m2(x), sorted(m1.state_dict()), m2.weight is not m1.weight


@idiom("model.zero_grad(); p.requires_grad = False freezes; sum(p.numel() for p if p.requires_grad)")
def freezing(e):
    net = e.nn.Sequential(e.nn.Linear(3, 4), e.nn.Linear(4, 2))
    for p in net[0].parameters():
        p.requires_grad = False
    out = net.to(e.dev)(e.tensor(rng_array(78, 2, 3)))
    out.sum().backward()
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    grads_none = [p.grad is None for p in net.parameters()]
    net.zero_grad()
    return trainable, grads_none, [p.grad is None for p in net.parameters()]


@idiom("Adam: three steps on a quadratic")
def adam_steps(e):
    w = e.tensor([1.0, -2.0, 3.0], requires_grad=True)
    opt = e.optim.Adam([w], lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        ((w - 1) ** 2).sum().backward()
        opt.step()
    return w


@idiom("init in place under no_grad: weight.normal_(0, 0.02) then zero_(); bias.fill_(0.1); uniform_ shape")
def init_in_place(e):
    lin = e.nn.Linear(3, 2)
    with e.T.no_grad():
        lin.weight.normal_(0.0, 0.02)
        std = lin.weight.std().item()
        lin.weight.zero_()
        lin.bias.fill_(0.1)
        lin.bias.uniform_(-1, 1)
        in_range = bool(((lin.bias >= -1) & (lin.bias <= 1)).all())
    return lin.weight, std < 0.1, in_range, lin.weight.requires_grad


@idiom("clamp_ / masked_fill_ / div_ / mul_ / sub_ in place under no_grad, _version counts")
def inplace_family(e):
    x = e.tensor([-2.0, 0.5, 3.0])
    x.clamp_(-1, 1)
    x.mul_(2)
    x.sub_(e.tensor([1.0, 1.0, 1.0]), alpha=0.5)
    x.div_(2)
    x.masked_fill_(x < 0, 0.0)
    return x, x._version


@idiom("detach().numpy() / cpu().numpy() / .item() / .tolist() on results")
def to_numpy(e):
    x = e.tensor([[1.0, 2.0]], requires_grad=True)
    y = x * 3
    return y.detach().numpy(), y.detach().cpu().numpy(), y.sum().item(), y.tolist()


@idiom("x.sum(dtype=torch.float64) (reduction with an accumulation dtype)",
       unsupported="reductions take no dtype= argument; cast first (x.double().sum())")
def sum_with_dtype(e):
    return e.tensor([1.0, 2.0]).sum(dtype=e.T.float64)


@idiom("torch.multinomial / bernoulli sampling",
       unsupported="minigrad's generators are numpy's/torch's own streams: samples cannot match torch's")
def sampling(e):
    e.T.manual_seed(0)
    return e.T.multinomial(e.tensor([0.2, 0.8]), 5, replacement=True)


# ---- the harness ----------------------------------------------------------------------------------------
def _canon(x):
    """A comparable, backend-free form of an idiom's result."""
    if isinstance(x, (mg.Tensor, torch.Tensor)):
        arr = x.numpy() if isinstance(x, mg.Tensor) else x.detach().cpu().numpy()
        dtype = str(x.dtype).replace("torch.", "")
        return ("tensor", dtype, tuple(arr.shape), arr)
    if isinstance(x, (tuple, list)):  # torch.Size and torch.return_types are tuples too
        return ("seq", [_canon(v) for v in x])
    if isinstance(x, np.ndarray):
        return ("ndarray", str(x.dtype), x.shape, x)
    if isinstance(x, (torch.dtype, np.dtype)):
        return ("py", "dtype", str(x).replace("torch.", ""))
    if isinstance(x, dict):
        return ("dict", sorted(x), [_canon(v) for v in x.values()])
    return ("py", type(x).__name__, x)


def _compare(got, want, path: str = "result") -> None:
    assert got[0] == want[0], f"{path}: minigrad gave a {got[0]}, torch a {want[0]}"
    if got[0] in ("tensor", "ndarray"):
        assert got[1] == want[1], f"{path}: dtype {got[1]}, torch {want[1]}"
        assert got[2] == want[2], f"{path}: shape {got[2]}, torch {want[2]}"
        if got[3].dtype.kind == "f":
            np.testing.assert_allclose(got[3], want[3], rtol=RTOL, atol=ATOL, err_msg=path)
        else:
            np.testing.assert_array_equal(got[3], want[3], err_msg=path)
    elif got[0] == "seq":
        assert len(got[1]) == len(want[1]), f"{path}: {len(got[1])} items, torch {len(want[1])}"
        for i, (g, w) in enumerate(zip(got[1], want[1])):
            _compare(g, w, f"{path}[{i}]")
    elif got[0] == "dict":
        assert got[1] == want[1], f"{path}: keys {got[1]}, torch {want[1]}"
        for k, g, w in zip(got[1], got[2], want[2]):
            _compare(g, w, f"{path}[{k!r}]")
    else:
        assert got[1] == want[1], f"{path}: Python {got[1]}, torch {want[1]}"
        if isinstance(want[2], float):
            assert math.isclose(got[2], want[2], rel_tol=RTOL, abs_tol=ATOL) or got[2] == want[2], \
                f"{path}: {got[2]} vs torch {want[2]}"
        else:
            assert got[2] == want[2], f"{path}: {got[2]!r} vs torch {want[2]!r}"


def _cases():
    for name, (fn, source, unsupported) in IDIOMS.items():
        for device in MG_DEVICES:
            marks = [pytest.mark.xfail(strict=True, reason=unsupported)] if unsupported else []
            yield pytest.param(name, device, marks=marks, id=f"{name}-{device}")


@pytest.mark.parametrize("name, device", list(_cases()))
def test_idiom(name: str, device: str) -> None:
    fn, source, _ = IDIOMS[name]
    want = _canon(fn(env(torch, "cpu")))
    got = _canon(fn(env(mg, device)))
    _compare(got, want, f"{name} ({source})")


def test_suite_size() -> None:
    assert len(IDIOMS) >= 60, f"only {len(IDIOMS)} idioms"
