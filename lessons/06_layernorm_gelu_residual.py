# %% [markdown]
# # Lesson 6 — LayerNorm, GELU, residuals: a whole Transformer encoder layer
#
# A BERT encoder layer is lesson 5's attention plus three small ideas:
#
# $$\begin{aligned} h &= \operatorname{LayerNorm}(x + \operatorname{Attention}(x)) && \text{(residual connection, then normalise)} \\ \mathrm{out} &= \operatorname{LayerNorm}\left(h + W_2\, \operatorname{GELU}(W_1 h + b_1) + b_2\right) && \text{(the same around a feed-forward network)} \end{aligned}$$
#
# BERT-base stacks 12 of these. **Goal.** Understand each new piece (with its gradient), then write
# the whole layer with minigrad and check its output and *every* parameter gradient against the
# same layer in torch (`torch.nn.TransformerEncoderLayer`, loaded with the same weights).
#
# **Prerequisites.** Lessons 2 (gradcheck), 4 (softmax), 5 (attention, masks).

# %%
import _common
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

import minigrad as mg
from minigrad import nn
from minigrad.nn import functional as F

rng = np.random.default_rng(0)
LAYER_NORM_EPS = 1e-12  # BERT's config.layer_norm_eps (torch's default would be 1e-5)

# %% [markdown]
# ## 1. LayerNorm
# For each token separately, over its D features:
#
# $$\mu = \operatorname{mean}(x), \quad \sigma^2 = \operatorname{mean}\left((x - \mu)^2\right), \quad \hat{x} = \frac{x - \mu}{\sqrt{\sigma^2 + \varepsilon}}, \quad y = \gamma \odot \hat{x} + \beta$$
#
# It keeps activations at a fixed scale however deep the network, which is what lets 12 (or 96)
# layers train. minigrad fuses it into one op with a hand-derived backward (with ĝ = γ ⊙ g):
#
# $$\frac{\partial L}{\partial x} = \frac{\hat{g} - \operatorname{mean}(\hat{g}) - \hat{x} \cdot \operatorname{mean}(\hat{g} \odot \hat{x})}{\sqrt{\sigma^2 + \varepsilon}}$$
#
# The two subtracted means are the gradient flowing back through μ and σ². We check the fused op
# against the same formula composed from primitive ops (autograd derives that backward for us),
# against torch, and against finite differences.

# %%
x_np = rng.standard_normal((4, 10)) * 3 + 1
gamma_np, beta_np, G_np = rng.standard_normal(10), rng.standard_normal(10), rng.standard_normal((4, 10))


def layer_norm_composed(x: mg.Tensor, gamma: mg.Tensor, beta: mg.Tensor, eps: float) -> mg.Tensor:
    mu = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, unbiased=False, keepdim=True)
    return (x - mu) / (var + eps).sqrt() * gamma + beta


grads = {}
for name in ("fused", "composed"):
    x, gamma, beta = (mg.tensor(a, dtype=mg.float64, requires_grad=True)
                      for a in (x_np, gamma_np, beta_np))
    y = (F.layer_norm(x, 10, gamma, beta, LAYER_NORM_EPS) if name == "fused"
         else layer_norm_composed(x, gamma, beta, LAYER_NORM_EPS))
    (y * mg.tensor(G_np)).sum().backward()
    grads[name] = [y.numpy(), x.grad.numpy(), gamma.grad.numpy(), beta.grad.numpy()]
tx, tg, tb = (torch.tensor(a, requires_grad=True) for a in (x_np, gamma_np, beta_np))
ty = torch.nn.functional.layer_norm(tx, (10,), tg, tb, LAYER_NORM_EPS)
(ty * torch.tensor(G_np)).sum().backward()
grads["torch"] = [ty.detach().numpy(), tx.grad.numpy(), tg.grad.numpy(), tb.grad.numpy()]

for other in ("composed", "torch"):  # float64, different operation order: ~1e-15 relative
    for ours, ref, what in zip(grads["fused"], grads[other], ("y", "dx", "dγ", "dβ")):
        assert _common.max_rel_err(ours, ref) < 1e-12, (other, what)
assert mg.gradcheck(lambda x, g, b: F.layer_norm(x, 10, g, b, LAYER_NORM_EPS), [x, gamma, beta])
# Shifting a row by a constant leaves LayerNorm unchanged, so its gradient sums to 0 along the row.
np.testing.assert_allclose(grads["fused"][1].sum(axis=-1), 0, atol=1e-12)
print("LayerNorm: fused = composed = torch = finite differences; each row of ∂L/∂x sums to 0")

# %% [markdown]
# ## 2. GELU
# BERT's activation is GELU(x) = x·Φ(x), with Φ the standard normal CDF, Φ(x) = (1 + erf(x/√2))/2.
# Its derivative is Φ(x) + x·φ(x), φ the normal density. Older code used a tanh approximation
# ("gelu_new"); the two differ by up to ~5e-4, far more than float32 parity tolerances, so a model
# must use the one its checkpoint was trained with. BERT's config says "gelu": the exact erf form.

# %%
xs = np.linspace(-4, 4, 801)
exact, approx = [F.gelu(mg.tensor(xs), approximate=a).numpy() for a in ("none", "tanh")]
for a, ours in (("none", exact), ("tanh", approx)):
    ref = torch.nn.functional.gelu(torch.tensor(xs), approximate=a).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-14)  # float64, same formula
gap = np.abs(exact - approx).max()
print(f"max |GELU exact − GELU tanh| on [−4, 4]: {gap:.1e}")
assert gap > 1e-4  # large enough to break a 1e-5 comparison: the two are not interchangeable
xg = mg.tensor(rng.standard_normal(9) * 2, requires_grad=True)
assert mg.gradcheck(F.gelu, [xg]) and mg.gradcheck(lambda t: F.gelu(t, approximate="tanh"), [xg])

xt = mg.tensor(xs, requires_grad=True)
F.gelu(xt).sum().backward()
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.8))
ax0.plot(xs, exact, label="GELU (erf)")
ax0.plot(xs, np.maximum(xs, 0), ":", label="ReLU")
ax0.plot(xs, (exact - approx) * 1000, label=_common.tr("(erf − tanh approx) × 1000", "（erf − tanh近似）× 1000"))
ax0.legend()
ax0.set_title("GELU(x) = x Φ(x)")
ax1.plot(xs, xt.grad.numpy(), label=_common.tr("d GELU/dx (minigrad backward)", "d GELU/dx（minigrad的backward）"))
ax1.plot(xs, (xs > 0).astype(float), ":", label="d ReLU/dx")
ax1.legend()
ax1.set_title(_common.tr("derivative: smooth, slightly negative for x < 0", "导数：光滑，x < 0时略为负"))
for ax in (ax0, ax1):
    ax.grid(alpha=0.3)
_common.savefig(fig, "06_gelu.png")

# %% [markdown]
# ## 3. Residual connections
# With y = x + f(x), the Jacobian is ∂y/∂x = I + ∂f/∂x: the identity gives the gradient a path
# that no layer can shrink. Without it, the gradient reaching layer 1 of a deep stack is a product
# of many Jacobians, and if those shrink vectors even slightly, it vanishes exponentially.
# We measure ‖∂L/∂x₀‖ through stacks of blocks f(x) = tanh(W x), with and without the "x +".

# %%
D_res, depth = 32, 30
Ws = [mg.tensor(rng.standard_normal((D_res, D_res)) * 0.5 / math.sqrt(D_res)) for _ in range(depth)]
x0_np = rng.standard_normal((1, D_res))
norms = {}
for kind in ("plain", "residual"):
    norms[kind] = []
    for n in range(1, depth + 1):
        x0 = mg.tensor(x0_np, requires_grad=True)
        h = x0
        for W in Ws[:n]:
            h = (h @ W).tanh() + (h if kind == "residual" else 0.0)
        h.sum().backward()
        norms[kind].append(float(np.linalg.norm(x0.grad.numpy())))
print(f"‖∂L/∂x₀‖ after {depth} blocks: plain {norms['plain'][-1]:.1e}, "
      f"residual {norms['residual'][-1]:.1e}")
# Each plain block multiplies the gradient by roughly 0.5 (the gain chosen for W), so 30 of them
# give ~1e-9. The residual stack's Jacobians are I + something small: the gradient cannot vanish.
# (Here it even grows, since I + J can stretch vectors; keeping *that* in check is one of
# LayerNorm's jobs.)
assert norms["plain"][-1] < 1e-6 * norms["plain"][0]
assert norms["residual"][-1] > 0.1 * norms["residual"][0]

fig, ax = plt.subplots(figsize=(6, 4))
for kind, vals in norms.items():
    ax.semilogy(range(1, depth + 1), vals, "o-", ms=3, label=_common.tr(kind, {"plain": "无残差", "residual": "有残差"}[kind]))
ax.set_xlabel(_common.tr("number of blocks", "块数"))
ax.set_ylabel("‖∂L/∂x₀‖")
ax.set_title(_common.tr("gradient reaching the input", "到达输入的梯度"))
ax.legend()
_common.savefig(fig, "06_residual_gradients.png")


# %% [markdown]
# ## 4. The encoder layer
# Multi-head attention runs H attentions side by side, each on its own D/H-dimensional slice of
# the projected queries, keys and values: reshape [B, T, D] → [B, T, H, D/H] → [B, H, T, D/H], run
# lesson 5's attention on all heads at once (matmul broadcasts over B and H), then undo the
# reshape and mix the heads with an output projection. The padding mask has shape [B, 1, 1, T]:
# the same for every head and every query.

# %%
class EncoderLayer(nn.Module):
    """Post-LayerNorm Transformer encoder layer (BERT's): attention and FFN, each with a residual."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, eps: float):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.query, self.key, self.value = (nn.Linear(d_model, d_model) for _ in range(3))
        self.attn_out = nn.Linear(d_model, d_model)
        self.ln1 = nn.LayerNorm(d_model, eps=eps)
        self.ffn_in, self.ffn_out = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.ln2 = nn.LayerNorm(d_model, eps=eps)

    def _heads(self, x: mg.Tensor) -> mg.Tensor:
        B, T, D = x.shape
        return x.reshape(B, T, self.n_heads, D // self.n_heads).transpose(1, 2)

    def forward(self, x: mg.Tensor, attention_mask: np.ndarray) -> mg.Tensor:
        B, T, D = x.shape
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        mask = np.where(attention_mask[:, None, None, :] == 1, 0.0, np.finfo(x.dtype).min)
        scores = q @ k.transpose(-2, -1) / math.sqrt(D // self.n_heads) + mg.tensor(mask, dtype=x.dtype)
        context = (F.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, D)
        h = self.ln1(x + self.attn_out(context))
        return self.ln2(h + self.ffn_out(F.gelu(self.ffn_in(h))))


# %% [markdown]
# The same layer in torch is `nn.TransformerEncoderLayer(norm_first=False, activation="gelu")`:
# written independently of ours, so a match means something. It packs the three projections into
# one `in_proj_weight` [3D, D]; we copy our weights in, run both on the same batch (the second
# sequence padded), push the same random upstream gradient back through both, and compare the
# output, ∂L/∂x, and the gradient of every one of the 16 parameters.
#
# One gradient is special: **the key bias gets exactly zero gradient**. Adding b to every key adds
# q·b to all of a query's scores at once, and softmax ignores a constant shift (lesson 4). So both
# frameworks return pure rounding noise for it, and "relative to its own size" is meaningless: we
# measure it against the scale of the query-bias gradient instead.

# %%
B, T, D, H, D_FF = 2, 7, 32, 4, 64
mg.manual_seed(0)
layer = EncoderLayer(D, H, D_FF, LAYER_NORM_EPS)
ref_layer = torch.nn.TransformerEncoderLayer(D, H, D_FF, dropout=0.0, activation="gelu",
                                             layer_norm_eps=LAYER_NORM_EPS, batch_first=True)
p = {k: torch.tensor(v.numpy()) for k, v in layer.named_parameters()}
ref_layer.load_state_dict({
    "self_attn.in_proj_weight": torch.cat([p["query.weight"], p["key.weight"], p["value.weight"]]),
    "self_attn.in_proj_bias": torch.cat([p["query.bias"], p["key.bias"], p["value.bias"]]),
    "self_attn.out_proj.weight": p["attn_out.weight"], "self_attn.out_proj.bias": p["attn_out.bias"],
    "linear1.weight": p["ffn_in.weight"], "linear1.bias": p["ffn_in.bias"],
    "linear2.weight": p["ffn_out.weight"], "linear2.bias": p["ffn_out.bias"],
    "norm1.weight": p["ln1.weight"], "norm1.bias": p["ln1.bias"],
    "norm2.weight": p["ln2.weight"], "norm2.bias": p["ln2.bias"]})

X_np = rng.standard_normal((B, T, D))
attn_mask = np.array([[1] * T, [1] * (T - 3) + [0] * 3])
G_np = rng.standard_normal((B, T, D))


def torch_grads(ref: torch.nn.Module, dtype: torch.dtype) -> dict[str, np.ndarray]:
    """Output and gradients of the torch layer, renamed (and in_proj split) to our names."""
    ref.zero_grad()
    x = torch.tensor(X_np, dtype=dtype, requires_grad=True)
    out = ref(x, src_key_padding_mask=torch.tensor(attn_mask == 0))
    (out * torch.tensor(G_np, dtype=dtype)).sum().backward()
    g = {k: v.grad.numpy() for k, v in ref.named_parameters()}
    res = {"output": out.detach().numpy(), "x": x.grad.numpy()}
    for i, name in enumerate(("query", "key", "value")):
        res[f"{name}.weight"] = np.split(g["self_attn.in_proj_weight"], 3)[i]
        res[f"{name}.bias"] = np.split(g["self_attn.in_proj_bias"], 3)[i]
    ours_of = {"self_attn.out_proj": "attn_out", "linear1": "ffn_in", "linear2": "ffn_out",
               "norm1": "ln1", "norm2": "ln2"}
    for theirs, ours in ours_of.items():
        for kind in ("weight", "bias"):
            res[f"{ours}.{kind}"] = g[f"{theirs}.{kind}"]
    return res


def minigrad_grads(dtype) -> dict[str, np.ndarray]:
    layer.zero_grad()
    x = mg.tensor(X_np, dtype=dtype, requires_grad=True)
    out = layer(x, attn_mask)
    (out * mg.tensor(G_np, dtype=dtype)).sum().backward()
    return {"output": out.numpy(), "x": x.grad.numpy(),
            **{k: v.grad.numpy() for k, v in layer.named_parameters()}}


# Tolerances (relative to each tensor's largest entry). float64: both sides are exact formulas
# evaluated in different orders, ~1e-16 per op through a few hundred ops. float32: 6e-8 per op,
# amplified by LayerNorm's division by σ and by sums over D = 32 and T = 7. We observe ~1e-6;
# 1e-4 leaves a wide margin, yet a wrong formula anywhere gives errors of order 1.
def scale_of(name: str, ref: dict[str, np.ndarray]) -> float:
    """The size against which an error is judged: the tensor's own, except for the key bias."""
    return float(np.abs(ref["query.bias" if name == "key.bias" else name]).max())


errors = {}
for mg_dtype, t_dtype, tol in ((mg.float32, torch.float32, 1e-4), (mg.float64, torch.float64, 1e-12)):
    layer.to(dtype=mg_dtype)
    ref_layer.to(t_dtype)
    ours, ref = minigrad_grads(mg_dtype), torch_grads(ref_layer, t_dtype)
    assert set(ours) == set(ref) and len(ours) == 18  # output, x, and 16 parameters
    errors[np.dtype(mg_dtype).name] = {k: np.abs(ours[k] - ref[k]).max() / scale_of(k, ref)
                                       for k in ref}
    assert np.abs(ref["key.bias"]).max() < tol * scale_of("key.bias", ref)  # zero, up to rounding
    worst = max(errors[np.dtype(mg_dtype).name].items(), key=lambda kv: kv[1])
    print(f"{np.dtype(mg_dtype).name}: worst relative error vs torch: {worst[1]:.1e} ({worst[0]})")
    assert worst[1] < tol, worst

fig, ax = plt.subplots(figsize=(10, 4))
names = list(errors["float32"])
xpos = np.arange(len(names))
for i, (dtype_name, errs) in enumerate(errors.items()):
    ax.bar(xpos + (i - 0.5) * 0.4, [max(errs[n], 1e-18) for n in names], width=0.4, label=dtype_name)
ax.set_yscale("log")
ax.set_xticks(xpos, names, rotation=60, ha="right", fontsize=8)
ax.set_ylabel("max |ours − torch| / scale_of(name)")
ax.set_title(_common.tr("encoder layer: output and every gradient vs torch.nn.TransformerEncoderLayer",
                        "编码器层：输出与每个梯度对照torch.nn.TransformerEncoderLayer"))
ax.legend(loc="center right")
_common.savefig(fig, "06_encoder_layer_parity.png")

# %% [markdown]
# ## Takeaways
# - LayerNorm's gradient has two correction terms (through μ and σ²); a fused op computes them in
#   one pass. Use the ε the checkpoint was trained with (BERT: 1e-12).
# - GELU means the erf form unless the config says otherwise.
# - The residual "x +" is why deep stacks train: ∂y/∂x = I + ∂f/∂x.
# - With these, lesson 5's attention becomes a full encoder layer whose every gradient matches
#   torch: to ~1e-16 in float64, and to float32 rounding in float32.

# %% [markdown] tags=["questions"]
# ## Check your understanding
#
# 1. LayerNorm's backward is (ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂))/√(σ² + ε). Where do the two
#    subtracted terms come from, and what does that imply for the sum of ∂L/∂x along a row?
#
# 2. Why must a BERT checkpoint run with the exact-erf GELU rather than the tanh approximation?
#
# 3. A stack of 30 plain blocks shrinks the gradient ~0.5× per block; the same stack with
#    residuals does not. Why?
#
# 4. Why does the key bias get exactly zero gradient, and how do the tests compare such a
#    gradient?

# %% [markdown] tags=["answers"]
# ## Answers
#
# 1. They are the gradient flowing back through μ and σ², which depend on every x in the row.
#    Adding a constant to a row does not change LayerNorm's output, so the gradient has no
#    component along the all-ones vector: it sums to 0 along the row.
#
# 2. The two differ by up to ~5e-4 per activation, and the weights were trained with one of them;
#    the difference passes through every layer, shifting outputs far beyond float32 rounding
#    (parity tests at 1e-5 fail). BERT's config says "gelu", which means erf.
#
# 3. Without residuals ∂L/∂x₀ is a product of 30 Jacobians: about 0.5³⁰ ≈ 1e-9. With y = x + f(x)
#    each Jacobian is I + ∂f/∂x, so the product always contains the identity path: the gradient
#    reaches the first layer undiminished.
#
# 4. b_k adds q·b_k to every score of a query's row, a constant shift, and softmax ignores shifts,
#    so the output does not depend on b_k at all. Both frameworks return rounding noise there, so
#    it is compared against the scale of another gradient (the query bias), not relative to its
#    own size.
