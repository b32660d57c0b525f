"""Idioms from makemore, HF collators and BERT, sentence-transformers, and manual training loops."""
from __future__ import annotations


from idioms_kit import idiom, raised, rng_array


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


@idiom("makemore 1: F.one_hot(xs, num_classes=27).float()")
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
    exact = e.T.all(dlogits == logits.grad).item()  # bit-exact equality may differ; its type may not
    maxdiff = (dlogits - logits.grad).abs().max().item()
    return e.T.allclose(dlogits, logits.grad, atol=1e-6), type(exact).__name__, maxdiff < 1e-6


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


@idiom("HF DataCollatorForLanguageModeling: masked_fill_(special, 0.0); labels[~masked] = -100; "
       "inputs[masked] = mask_id")
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
