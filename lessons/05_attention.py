# %% [markdown]
# # Lesson 5 — Scaled dot-product attention, and masks
#
# BERT is a stack of attention layers. In each, every token looks at every other token and takes a
# weighted average of what it finds:
#
# $$\operatorname{Attention}(Q, K, V) = \operatorname{softmax}\left(\frac{Q K^\top}{\sqrt{d}} + M\right) V$$
#
# Row i of Q (a *query*) is compared with every row j of K (a *key*) by a dot product; softmax
# turns those scores into weights that sum to 1; the output for token i is the weighted average of
# the rows of V (the *values*). M is an additive *mask*: 0 where attending is allowed, a huge
# negative number where it is not (padding, or the future in a causal model).
#
# **Goal.** Write attention from minigrad ops, understand the √d, build masks that cannot produce
# NaN, draw attention weights, and check every gradient against torch.
#
# **Prerequisites.** Lesson 4 (softmax, its Jacobian, the max trick).

# %%
import _common
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

import minigrad as mg
from minigrad.nn import functional as F

rng = np.random.default_rng(0)


def attention(q: mg.Tensor, k: mg.Tensor, v: mg.Tensor,
              mask: mg.Tensor | None = None) -> tuple[mg.Tensor, mg.Tensor]:
    """(softmax(q kᵀ/√d + mask) v, the weights). q [..., Tq, d]; k, v [..., Tk, d]; mask broadcasts
    to [..., Tq, Tk] and is added to the scores (0 = attend, finfo(dtype).min = do not)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + mask
    weights = F.softmax(scores, dim=-1)
    return weights @ v, weights


def additive_mask(keep: np.ndarray, dtype=np.float32) -> mg.Tensor:
    """Boolean "may attend" array -> additive mask: 0 where True, the dtype's most negative finite
    number where False (not -inf; see §3)."""
    return mg.tensor(np.where(keep, 0.0, np.finfo(dtype).min), dtype=dtype)


# %% [markdown]
# ## 1. Why divide by √d
# If the entries of q and k are independent with mean 0 and variance 1, then q·k = Σ qₐkₐ is a sum
# of d terms of variance 1: its variance is d. With d = 64 the raw scores have a standard deviation
# of 8, softmax of such spread-out scores is nearly one-hot, and lesson 4's Jacobian diag(s) − s sᵀ
# is then nearly 0: almost no gradient flows. Dividing by √d restores unit variance.

# %%
d, n_keys = 64, 16
q_s = mg.tensor(rng.standard_normal((512, 1, d)))        # 512 queries ...
k_s = mg.tensor(rng.standard_normal((512, n_keys, d)))   # ... each with its own 16 keys
raw = q_s @ k_s.transpose(-2, -1)                        # [512, 1, 16] dot products
scaled = raw / math.sqrt(d)
print(f"std of q·k: {raw.numpy().std():.2f} (√d = {math.sqrt(d):.0f}); "
      f"std of q·k/√d: {scaled.numpy().std():.2f}")
# 8192 samples estimate a std to about ±0.8% (1/√(2·8192)); a 10% band cannot fail by chance.
assert abs(raw.numpy().std() / math.sqrt(d) - 1) < 0.1

peak_raw = F.softmax(raw, dim=-1).amax(dim=-1).mean().item()
peak_scaled = F.softmax(scaled, dim=-1).amax(dim=-1).mean().item()
print(f"mean largest weight over {n_keys} keys: unscaled {peak_raw:.2f}, scaled {peak_scaled:.2f}")
assert peak_raw > 0.7 and peak_scaled < 0.5  # nearly one-hot vs spread out

# %% [markdown]
# ## 2. Masks
# Sentences in a batch have different lengths, so short ones are padded. The tokenizer returns an
# `attention_mask` of 1 (real token) and 0 (padding), per sequence. No query may attend to a
# padding *key*: we turn the mask into a [B, 1, T] additive mask that broadcasts over all queries.
# A decoder additionally forbids looking ahead with a *causal* (lower-triangular) mask.
#
# Why the most negative *finite* float, finfo(float32).min ≈ −3.4e38, and not −inf?
# After adding it, the max trick subtracts the row max. If a row is entirely masked (it happens:
# a left-padded sequence under a causal mask has a first query that may see nothing), then with
# −inf every score is −inf, the max is −inf, and −inf − (−inf) = nan. With finfo.min the row is
# uniformly finfo.min, subtracting the max gives zeros, and softmax is a harmless uniform average
# (harmless because that query is itself padding: its output is ignored downstream).
# Where the row is *not* fully masked, e^(finfo.min − max) is exactly 0, so both behave the same.

# %%
B, T, D = 2, 6, 8
X_np = rng.standard_normal((B, T, D)).astype(np.float32)
Wq_np, Wk_np, Wv_np = (rng.standard_normal((D, D)).astype(np.float32) / math.sqrt(D) for _ in range(3))
attention_mask = np.array([[1, 1, 1, 1, 1, 1],
                           [1, 1, 1, 1, 0, 0]])  # sequence 1 has two padding tokens at the end
pad_keep = attention_mask[:, None, :].astype(bool)  # [B, 1, Tk]: which keys may be attended
causal_keep = np.tril(np.ones((T, T), bool))         # [Tq, Tk]: query i sees keys 0..i

X = mg.tensor(X_np)
Wq, Wk, Wv = (mg.tensor(w, requires_grad=True) for w in (Wq_np, Wk_np, Wv_np))
_, w_pad = attention(X @ Wq, X @ Wk, X @ Wv, additive_mask(pad_keep))
_, w_causal = attention(X @ Wq, X @ Wk, X @ Wv, additive_mask(causal_keep))

# Every row sums to 1, and masked keys get exactly zero weight (e^(finfo.min − max) underflows to 0).
np.testing.assert_allclose(w_pad.numpy().sum(-1), 1, rtol=1e-6)
assert (w_pad.numpy()[1, :, 4:] == 0).all() and (w_causal.numpy()[:, np.triu_indices(T, 1)[0],
                                                                 np.triu_indices(T, 1)[1]] == 0).all()

# %% [markdown]
# Now the fully masked row: a left-padded sequence under a causal mask. Query 0 is padding, and the
# causal mask lets it see only key 0, which is padding too. Combine the boolean masks *first*
# (keep = causal AND not padding), then convert once: adding two additive masks would give
# finfo.min + finfo.min = −inf, the very thing we avoid.

# %%
left_pad = np.array([0, 0, 1, 1, 1, 1], bool)   # two padding tokens at the start
keep = causal_keep & left_pad[None, :]          # [Tq, Tk]; row 0 and row 1 keep nothing
assert not keep[0].any() and not keep[1].any()
with np.errstate(over="ignore"):
    assert np.float32(np.finfo(np.float32).min) * 2 == -np.inf

x1 = mg.tensor(X_np[:1])
results = {}
with np.errstate(invalid="ignore"):  # the -inf version produces nan on purpose
    for name, mask in (("finfo.min", additive_mask(keep)),
                       ("-inf", mg.tensor(np.where(keep, 0.0, -np.inf), dtype=mg.float32))):
        for p in (Wq, Wk, Wv):
            p.grad = None
        o, wts = attention(x1 @ Wq, x1 @ Wk, x1 @ Wv, mask)
        o.sum().backward()
        results[name] = (wts.numpy()[0], o.numpy()[0], Wq.grad.numpy())
        print(f"{name:>9}: weights of query 0 = {np.round(wts.numpy()[0, 0], 3)}, "
              f"any nan in ∂L/∂Wq: {np.isnan(Wq.grad.numpy()).any()}")

w_fin, o_fin, g_fin = results["finfo.min"]
w_inf, o_inf, g_inf = results["-inf"]
np.testing.assert_allclose(w_fin[0], 1 / T, rtol=1e-6)  # uniform, finite
assert np.isfinite(o_fin).all() and np.isfinite(g_fin).all()
assert np.isnan(w_inf[:2]).all() and np.isnan(o_inf[:2]).all()
assert np.isnan(g_inf).all()  # two bad rows poison every entry of the shared weight's gradient
np.testing.assert_allclose(w_inf[2:], w_fin[2:], rtol=1e-6)  # elsewhere the two masks agree

# %% [markdown]
# Look at the nan assert above: the nan of two fully-masked rows reached *every* entry of ∂L/∂Wq,
# because Wq is shared by all rows. One bad row in a batch silently destroys the whole update.
#
# ## 3. Attention weights, drawn

# %%
fig, axes = plt.subplots(1, 4, figsize=(15, 3.8))
panels = [(w_pad.numpy()[1], _common.tr("padding mask (last 2 keys padded)", "填充掩码（最后2个key为填充）")),
          (w_causal.numpy()[0], _common.tr("causal mask", "因果掩码")),
          (w_fin, _common.tr("causal + left padding, finfo.min", "因果 + 左侧填充，finfo.min")),
          (w_inf, _common.tr("causal + left padding, −inf (nan = blank)", "因果 + 左侧填充，−inf（nan = 空白）"))]
for ax, (m, title) in zip(axes, panels):
    im = ax.imshow(np.ma.masked_invalid(m), cmap="magma", vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
fig.colorbar(im, ax=axes, shrink=0.8, label=_common.tr("attention weight", "注意力权重"))
_common.savefig(fig, "05_attention_weights.png")

# %% [markdown]
# ## 4. Gradients against torch
# Backward through attention chains the rules of lessons 2–4: matmul (dA = G Bᵀ, dB = Aᵀ G), the
# softmax vector-Jacobian product s ⊙ (g − ⟨g, s⟩), and the projections. We compare every
# gradient with torch's built-in `scaled_dot_product_attention` (an independent implementation;
# its boolean `attn_mask` is True where attending is allowed), first in float64, then in float32.

# %%
def torch_attention_grads(dtype: torch.dtype, G_np: np.ndarray) -> dict[str, np.ndarray]:
    x = torch.tensor(X_np, dtype=dtype, requires_grad=True)
    ws = [torch.tensor(w, dtype=dtype, requires_grad=True) for w in (Wq_np, Wk_np, Wv_np)]
    o = torch.nn.functional.scaled_dot_product_attention(
        x @ ws[0], x @ ws[1], x @ ws[2], attn_mask=torch.tensor(pad_keep))
    (o * torch.tensor(G_np, dtype=dtype)).sum().backward()
    return {"out": o.detach().numpy(), "X": x.grad.numpy(),
            **{n: w.grad.numpy() for n, w in zip(("Wq", "Wk", "Wv"), ws)}}


def minigrad_attention_grads(dtype, G_np: np.ndarray) -> dict[str, np.ndarray]:
    x = mg.tensor(X_np, dtype=dtype, requires_grad=True)
    ws = [mg.tensor(w, dtype=dtype, requires_grad=True) for w in (Wq_np, Wk_np, Wv_np)]
    o, _ = attention(x @ ws[0], x @ ws[1], x @ ws[2], additive_mask(pad_keep, dtype))
    (o * mg.tensor(G_np, dtype=dtype)).sum().backward()
    return {"out": o.numpy(), "X": x.grad.numpy(),
            **{n: w.grad.numpy() for n, w in zip(("Wq", "Wk", "Wv"), ws)}}


G_np = rng.standard_normal((B, T, D))  # a random upstream gradient (never just ones: lesson 2)
# Tolerances: float64 differs only by summation order (~1e-16 per op, a few dozen ops deep);
# float32 rounding is 6e-8 per op, and sums over D = 8 features and T = 6 keys compound it to ~1e-6
# of the largest entry.
for mg_dtype, t_dtype, tol in ((mg.float64, torch.float64, 1e-12), (mg.float32, torch.float32, 1e-5)):
    ours = minigrad_attention_grads(mg_dtype, G_np)
    ref = torch_attention_grads(t_dtype, G_np)
    errs = {k: _common.max_rel_err(ours[k], ref[k]) for k in ref}
    print(f"{np.dtype(mg_dtype).name}: max relative error vs torch SDPA:",
          {k: f"{e:.1e}" for k, e in errs.items()})
    assert max(errs.values()) < tol, errs

# A padded key gets no weight from any query, so its key and value receive exactly zero gradient.
xk = mg.tensor(X_np, dtype=mg.float64)
kk, vv = (mg.tensor(a, requires_grad=True) for a in (X_np.astype(np.float64) @ Wk_np,
                                                      X_np.astype(np.float64) @ Wv_np))
o, _ = attention(xk @ mg.tensor(Wq_np, dtype=mg.float64), kk, vv, additive_mask(pad_keep, np.float64))
(o * mg.tensor(G_np)).sum().backward()
assert (kk.grad.numpy()[1, 4:] == 0).all() and (vv.grad.numpy()[1, 4:] == 0).all()

# Finally, the whole function (mask included) against finite differences, on a small case.
q, k, v = (mg.tensor(rng.standard_normal((3, 4)), requires_grad=True) for _ in range(3))
small_mask = additive_mask(np.array([[1, 1, 0], [1, 1, 1], [1, 0, 1]], bool), np.float64)
assert mg.gradcheck(lambda q, k, v: attention(q, k, v, small_mask)[0], [q, k, v])
print("attention matches torch SDPA (float64 and float32) and finite differences")

# %% [markdown] tags=["questions"]
# ## Check your understanding
#
# 1. Why divide the scores by √d? What happens to the gradient without it, for d = 64?
#
# 2. Why do masked scores get finfo(float32).min rather than −inf?
#
# 3. Why combine the causal and padding masks as booleans first, instead of adding two additive
#    masks?
#
# 4. A padded key gets exactly zero gradient on its key and value vectors. Why?
#
# 5. One fully masked row with −inf made every entry of ∂L/∂Wq nan. Why every entry, not one row?

# %% [markdown] tags=["answers"]
# ## Answers
#
# 1. If q and k have independent entries of mean 0 and variance 1, q·k is a sum of d such
#    products: variance d, standard deviation 8 for d = 64. Softmax of scores that spread is
#    nearly one-hot, its Jacobian diag(s) − s sᵀ is nearly 0, and almost no gradient reaches Q and
#    K. Dividing by √d restores variance 1.
#
# 2. If a whole row is masked, with −inf every score is −inf, the max is −inf, and −inf − (−inf) =
#    nan. With finfo.min the row is uniform after the max is subtracted: a harmless average for a
#    query that is padding anyway. Where a row is only partly masked, e^(finfo.min − max) is
#    exactly 0, as with −inf.
#
# 3. finfo.min + finfo.min overflows to −inf in float32, which brings back the nan of a fully
#    masked row.
#
# 4. Its attention weight is exactly 0 for every query, so no output depends on its value
#    (∂out/∂vⱼ = aᵢⱼ = 0) and the softmax backward s ⊙ (g − ⟨g, s⟩) is 0 at its score, so nothing
#    reaches its key either.
#
# 5. Wq is shared by all tokens: ∂L/∂Wq is a sum over every token of xᵢᵀ ∂L/∂qᵢ. One nan term
#    makes every entry of the sum nan, so one bad row ruins the whole update.
