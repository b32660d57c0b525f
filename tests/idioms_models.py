"""Idioms from micrograd, the PyTorch blitz and CIFAR tutorials, nanoGPT and the Annotated Transformer."""
from __future__ import annotations

import math

import numpy as np
from idioms_kit import idiom, load, rng_array


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


@idiom("Annotated Transformer LabelSmoothing: true_dist.scatter_(1, target.unsqueeze(1), conf)")
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
