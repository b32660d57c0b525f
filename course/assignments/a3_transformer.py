"""Assignment 3: a Transformer layer — GELU, LayerNorm, Linear, attention with masks, the residual
(lessons 5-6).

The module checks build the layer in minigrad with random float64 weights, and the same computation
in torch from the same numbers (written out in this file, op by op, as the BERT paper and HF's
modeling_bert define it); outputs and every parameter's gradient must agree.
"""
from __future__ import annotations

import numpy as np

from .. import checks as C
from ..framework import Assignment, Task, TaskFailure

NN = "minigrad/ops/nn.py"
EW = "minigrad/ops/elementwise.py"
MODEL = "mini_bert/model.py"
DT = "float64"


def check_gelu(rng):
    x = C.values(rng, C.rand_shape(rng, 2)) * 3
    x.flat[0] = 0.0
    for approx in ("none", "tanh"):
        C.both(f"Gelu.backward (approximate='{approx}')",
               lambda ns, a, ap=approx: ns.F.gelu(a, approximate=ap), [C.Arg(x, "x")], rng,
               "exact: Φ(a) + a φ(a); tanh: differentiate a/2 (1 + tanh u) through u")


def _ln_cases(rng):
    b, t, h = (int(v) for v in rng.integers(2, 5, 3))
    yield (b, t, h), (h,)
    yield (b, t, h), (t, h)


def check_layernorm_forward(rng):
    for shape, norm in _ln_cases(rng):
        x = C.values(rng, shape) * 2 + 1
        w, b = C.values(rng, norm), C.values(rng, norm)
        for dtype in ("float64", "float32"):
            C.compare(f"LayerNorm.forward (normalized_shape={norm})",
                      lambda ns, x, w, b, n=norm: ns.F.layer_norm(x, n, w, b, 1e-5),
                      [C.Arg(x, "x"), C.Arg(w, "weight"), C.Arg(b, "bias")], rng, dtype=dtype,
                      backward=False, hint="biased variance (divide by D), eps inside the sqrt")
        C.compare("LayerNorm.forward (no weight, no bias)",
                  lambda ns, x, n=norm: ns.F.layer_norm(x, n, None, None, 1e-5), [C.Arg(x, "x")], rng,
                  backward=False)


def _spread_rows(rng, shape, norm):
    """x ~ N(1, 4), redrawn until every normalised group has σ >= 0.25. dx scales like 1/σ, so a
    group of two nearly equal values (normalized_shape=(2,)) amplifies both sides' float32 rounding
    past any fixed tolerance (seed 300970566 drew one: 1.9e-4 apart from torch)."""
    while True:
        x = C.values(rng, shape) * 2 + 1
        if x.reshape(-1, int(np.prod(norm))).std(axis=1).min() >= 0.25:
            return x


def check_layernorm_backward(rng):
    for shape, norm in _ln_cases(rng):
        x = _spread_rows(rng, shape, norm)
        w, b = C.values(rng, norm), C.values(rng, norm)
        C.both(f"LayerNorm.backward (normalized_shape={norm})",
               lambda ns, x, w, b, n=norm: ns.F.layer_norm(x, n, w, b, 1e-5),
               [C.Arg(x, "x"), C.Arg(w, "weight"), C.Arg(b, "bias")], rng,
               "dx has three terms: ĝ, its mean, and x̂ times mean(ĝ x̂), all times 1/σ")
        C.compare("LayerNorm.backward (no weight, no bias)",
                  lambda ns, x, n=norm: ns.F.layer_norm(x, n, None, None, 1e-5), [C.Arg(x, "x")], rng)


def check_linear(rng):
    n_in, n_out = (int(v) for v in rng.integers(2, 6, 2))
    for lead in ((int(rng.integers(2, 5)),), (2, int(rng.integers(2, 4)))):
        x, w, b = C.values(rng, lead + (n_in,)), C.values(rng, (n_out, n_in)), C.values(rng, (n_out,))
        C.both("Linear.backward", lambda ns, x, w, b: ns.F.linear(x, w, b),
               [C.Arg(x, "x"), C.Arg(w, "weight"), C.Arg(b, "bias")], rng,
               "dx = g W, dW = gᵀ x and db = Σ g, both summed over every leading dim")
    C.both("Linear.backward (no bias)", lambda ns, x, w: ns.F.linear(x, w),
           [C.Arg(x, "x"), C.Arg(w, "weight")], rng)


def _padding_mask(rng, b, t):
    """1 for real tokens, 0 for padding at the end; one row fully padded but the first token."""
    lengths = rng.integers(1, t + 1, b)
    lengths[0] = t
    return (np.arange(t)[None, :] < lengths[:, None]).astype(np.int64)


def check_attention_mask(rng):
    from mini_bert.model import additive_attention_mask

    b, t = (int(v) for v in rng.integers(2, 6, 2))
    m2 = _padding_mask(rng, b, t)
    additive_attention_mask(m2, b, t, np.dtype(np.float32), "cpu")  # unfinished: fail before torch
    import torch

    m3 = np.tril(np.ones((t, t), np.int64))[None].repeat(b, 0)  # causal: query i sees keys ≤ i
    for m, want_shape in ((m2, (b, 1, 1, t)), (m3, (b, 1, t, t))):
        for dtype, tdtype in ((np.float32, torch.float32), (np.float64, torch.float64)):
            got = additive_attention_mask(m, b, t, np.dtype(dtype), "cpu")
            tm = torch.tensor(m)
            tm = tm[:, None, None, :] if m.ndim == 2 else tm[:, None, :, :]
            want = ((1.0 - tm.to(tdtype)) * torch.finfo(tdtype).min).numpy()
            if tuple(got.shape) != want_shape:
                raise TaskFailure(f"additive_attention_mask: a {m.shape} mask must become "
                                  f"{want_shape} (broadcast over heads), got {tuple(got.shape)}")
            if got.dtype != np.dtype(dtype) or not np.array_equal(got.numpy(), want):
                raise TaskFailure(f"additive_attention_mask: wrong values for a {m.shape} mask in "
                                  f"{np.dtype(dtype)}: use 0 where attended and finfo(dtype).min "
                                  "(not -inf, which makes a fully masked row nan) elsewhere")
    try:
        additive_attention_mask(m2[:, :-1], b, t, np.dtype(np.float32), "cpu")
    except ValueError as e:
        if str(t) not in str(e):
            raise TaskFailure(f"additive_attention_mask: the error for a wrong shape should name "
                              f"the shapes; got {e!r}") from None
    else:
        raise TaskFailure(f"additive_attention_mask: a {(b, t - 1)} mask for {(b, t)} inputs must "
                          "raise ValueError naming both shapes")


# ---- the BERT modules, in minigrad with random weights and in torch from the same numbers ----------
def _config(rng, layers=1):
    from mini_bert.config import BertConfig

    heads = int(rng.integers(2, 4))  # one head would hide a reshape that skips the transpose
    return BertConfig(vocab_size=11, hidden_size=heads * int(rng.integers(2, 5)),
                      num_hidden_layers=layers, num_attention_heads=heads,
                      intermediate_size=int(rng.integers(4, 10)), hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0, max_position_embeddings=16)


def _randomize(module, rng):
    """Give every parameter random float64 values; return {name: minigrad Parameter}."""
    from minigrad import nn

    params = {}
    for name, p in list(module.named_parameters()):
        *path, attr = name.split(".")
        owner = module
        for part in path:
            owner = getattr(owner, part)
        new = nn.Parameter(C.values(rng, p.shape) * 0.5)
        setattr(owner, attr, new)
        params[name] = new
    return params


def _torch_params(params):
    import torch

    return {k: torch.tensor(v.numpy(), requires_grad=True) for k, v in params.items()}


def _k(prefix, name):
    """A parameter's dotted name under ``prefix`` ("" for the module itself)."""
    return f"{prefix}.{name}" if prefix else name


def _t_linear(p, prefix, x):
    return x @ p[_k(prefix, "weight")].T + p[_k(prefix, "bias")]


def _t_self_attention(p, prefix, x, add_mask, heads):
    import torch

    b, t, h = x.shape
    d = h // heads

    def split(y):
        return y.reshape(b, t, heads, d).transpose(1, 2)

    q, k, v = (split(_t_linear(p, _k(prefix, n), x)) for n in ("query", "key", "value"))
    scores = q @ k.transpose(-1, -2) / d ** 0.5
    if add_mask is not None:
        scores = scores + add_mask
    probs = torch.softmax(scores, dim=-1)
    return (probs @ v).transpose(1, 2).reshape(b, t, h), probs


def _t_output(p, prefix, hid, residual, eps):
    import torch

    y = _t_linear(p, _k(prefix, "dense"), hid) + residual
    return torch.nn.functional.layer_norm(y, y.shape[-1:], p[_k(prefix, "LayerNorm.weight")],
                                          p[_k(prefix, "LayerNorm.bias")], eps)


def _inputs(rng, cfg, masked=True):
    """x [B, T, H] as a minigrad leaf, the additive mask (built here in numpy, so these checks do
    not depend on the attention_mask task), and a function giving both as torch tensors. torch is
    loaded only once minigrad has run: an unfinished task fails before paying for the import."""
    import minigrad as mg

    b, t = (int(v) for v in rng.integers(2, 5, 2))
    x = C.values(rng, (b, t, cfg.hidden_size))
    add = None
    if masked:
        add = ((1.0 - _padding_mask(rng, b, t)) * np.finfo(np.float64).min)[:, None, None, :]

    def to_torch():
        import torch

        return torch.tensor(x, requires_grad=True), None if add is None else torch.tensor(add)

    return mg.tensor(x, dtype=mg.float64, requires_grad=True), \
        None if add is None else mg.tensor(add, dtype=mg.float64), to_torch


def check_heads(rng):
    from mini_bert.model import BertSelfAttention

    cfg = _config(rng)
    att = BertSelfAttention(cfg)
    mx, _, to_torch = _inputs(rng, cfg, masked=False)
    got = att._heads(mx)
    tx, _ = to_torch()
    b, t, h = tx.shape
    want = tx.reshape(b, t, att.num_heads, att.head_size).transpose(1, 2)
    C.compare_graphs("BertSelfAttention._heads", [got], [want], {"x": mx}, {"x": tx}, rng,
                     DT, "[B, T, H] -> [B, T, n, d] -> [B, n, T, d]",
                     f" for x{(b, t, h)} with {att.num_heads} heads")


def check_self_attention(rng):
    from mini_bert.model import BertSelfAttention

    cfg = _config(rng)
    att = BertSelfAttention(cfg)
    params = _randomize(att, rng)
    for masked in (True, False):
        mx, madd, to_torch = _inputs(rng, cfg, masked)
        ctx, probs = att(mx, madd)
        (tx, tadd), tp = to_torch(), _torch_params(params)
        tctx, tprobs = _t_self_attention(tp, "", tx, tadd, cfg.num_attention_heads)
        C.compare_graphs("BertSelfAttention.forward", [ctx, probs], [tctx, tprobs],
                         {"x": mx, **params}, {"x": tx, **tp}, rng, DT,
                         "softmax(Q Kᵀ / sqrt(d) + mask) V per head, heads joined back to width H",
                         f" for x{tuple(tx.shape)}, {cfg.num_attention_heads} heads, "
                         f"{'a padding mask' if masked else 'no mask'}")
        for p in params.values():
            p.grad = None


def check_residual(rng):
    import minigrad as mg

    from mini_bert.model import BertOutput

    cfg = _config(rng)
    out = BertOutput(cfg, cfg.intermediate_size)
    params = _randomize(out, rng)
    mx, _, to_torch = _inputs(rng, cfg, masked=False)
    h = C.values(rng, tuple(mx.shape[:2]) + (cfg.intermediate_size,))
    mh = mg.tensor(h, dtype=mg.float64, requires_grad=True)
    y = out(mh, mx)
    import torch

    (tx, _), tp, th = to_torch(), _torch_params(params), torch.tensor(h, requires_grad=True)
    C.compare_graphs("BertOutput.forward", [y], [_t_output(tp, "", th, tx, cfg.layer_norm_eps)],
                     {"h": mh, "residual": mx, **params}, {"h": th, "residual": tx, **tp}, rng, DT,
                     "LayerNorm(dropout(dense(h)) + residual)")


def check_layer(rng):
    from mini_bert.model import BertLayer

    cfg = _config(rng)
    layer = BertLayer(cfg)
    params = _randomize(layer, rng)
    mx, madd, to_torch = _inputs(rng, cfg)
    y, probs = layer(mx, madd)
    (tx, tadd), tp = to_torch(), _torch_params(params)
    import torch

    ctx, tprobs = _t_self_attention(tp, "attention.self", tx, tadd, cfg.num_attention_heads)
    a = _t_output(tp, "attention.output", ctx, tx, cfg.layer_norm_eps)
    inter = torch.nn.functional.gelu(_t_linear(tp, "intermediate.dense", a))
    ty = _t_output(tp, "output", inter, a, cfg.layer_norm_eps)
    C.compare_graphs("BertLayer.forward", [y, probs], [ty, tprobs], {"x": mx, **params},
                     {"x": tx, **tp}, rng, DT,
                     "attention -> (+ x, LayerNorm) = a -> feed-forward -> (+ a, LayerNorm)",
                     f" for x{tuple(tx.shape)}")


ASSIGNMENT = Assignment("a3", "A Transformer layer: GELU, LayerNorm, attention, the residual", [
    Task("a3.gelu", "GELU backward (exact and tanh)", 3, [f"{EW}:Gelu.backward"],
         "dz/da = Φ(a) + a φ(a) for the exact form", check_gelu),
    Task("a3.layernorm_forward", "LayerNorm forward", 3, [f"{NN}:LayerNorm.forward"],
         "normalise over the last n dims with the biased variance; save x̂ and 1/σ",
         check_layernorm_forward),
    Task("a3.layernorm_backward", "LayerNorm backward", 4, [f"{NN}:LayerNorm.backward"],
         "the gradient flows through x̂, the mean and the variance", check_layernorm_backward,
         hide_doc=True),
    Task("a3.linear", "Linear backward", 2, [f"{NN}:Linear.backward"],
         "fold the leading dims into one matrix; dW = gᵀ x, db = Σ g", check_linear),
    Task("a3.attention_mask", "The additive attention mask", 2, [f"{MODEL}:additive_attention_mask"],
         "[B, T] -> [B, 1, 1, T], [B, T, T] -> [B, 1, T, T]; 0 or finfo(dtype).min",
         check_attention_mask),
    Task("a3.heads", "Splitting into heads", 1, [f"{MODEL}:BertSelfAttention._heads"],
         "reshape to [B, T, n, d], then swap T and n", check_heads),
    Task("a3.self_attention", "Multi-head self-attention with a mask", 4,
         [f"{MODEL}:BertSelfAttention.forward"],
         "Q, K, V, per-head softmax(Q Kᵀ/√d + mask) V, heads joined back; return (context, probs)",
         check_self_attention),
    Task("a3.residual", "Dense + residual + LayerNorm", 2, [f"{MODEL}:BertOutput.forward"],
         "LayerNorm(dropout(dense(h)) + residual)", check_residual),
    Task("a3.layer", "The encoder layer", 3, [f"{MODEL}:BertAttention.forward", f"{MODEL}:BertLayer.forward"],
         "attention (with its residual), then the feed-forward (with its residual); return probs too",
         check_layer),
])
