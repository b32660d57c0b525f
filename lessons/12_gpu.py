# %% [markdown]
# # Lesson 12 — The same model on another device
#
# minigrad computes with *backends*: flat namespaces of array functions. `"cpu"` is numpy; with
# `"torch:cpu"` or `"cuda"` the very same ops run on torch tensors, torch being used purely as an
# array library (minigrad keeps its own graph; torch's autograd records nothing). Every op's
# `forward`/`backward` is written against `ctx.xp`, the backend of its inputs, so no model code
# changes: a BERT moves to a GPU with `model.to("cuda")`, as in PyTorch.
#
# **Goal.** Run one small BERT on two devices — numpy, and CUDA when torch sees a GPU (otherwise
# the `"torch:cpu"` backend, which exercises exactly the same code path minus the GPU) — and check
# that outputs and every gradient of a training step agree to float32 precision; see what happens
# when tensors on different devices meet; and see how `Module.to` and the optimizer cooperate.
#
# **Prerequisites.** Lessons 8 (BERT), 9 (optimizers).

# %%
import _common
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

import mini_bert
import minigrad as mg

DEVICE = "cuda" if torch.cuda.is_available() else "torch:cpu"
print(f"second device: {DEVICE}" + (f" ({torch.cuda.get_device_name(0)})" if DEVICE == "cuda" else
                                     " (no GPU visible to torch: same code path, on the CPU)"))
if DEVICE == "cuda":
    # Ampere and newer GPUs can do float32 matmuls in TF32 (10-bit mantissa, ~1e-3 relative
    # error). torch's default is full float32, which the tolerances below assume.
    assert torch.get_float32_matmul_precision() == "highest"

# %% [markdown]
# ## 1. One model, two copies
# A small random BERT (2 layers, hidden size 128), with dropout off so that a training step is a
# deterministic function of the weights and the batch on both devices. The second copy gets the
# first one's weights through `state_dict`, then `to(DEVICE)` moves every parameter in place.

# %%
config = mini_bert.BertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=2,
                              num_attention_heads=4, intermediate_size=512,
                              max_position_embeddings=64, hidden_dropout_prob=0.0,
                              attention_probs_dropout_prob=0.0, num_labels=3)
mg.manual_seed(0)
model_cpu = mini_bert.BertForSequenceClassification(config).train()
model_dev = mini_bert.BertForSequenceClassification(config).train()
model_dev.load_state_dict(model_cpu.state_dict())
params_before = {name: p for name, p in model_dev.named_parameters()}
print("before .to():", {p.device for p in model_dev.parameters()})
model_dev.to(DEVICE)
print("after  .to():", {p.device for p in model_dev.parameters()},
      "| raw array type:", type(model_dev.classifier.weight._data).__module__)
assert all(p.device == model_dev.device for p in model_dev.parameters())
# In place: the very same Parameter objects, now holding device arrays (so anything that kept a
# reference to them, like an optimizer, sees the move).
assert all(params_before[name] is p for name, p in model_dev.named_parameters())

rng = np.random.default_rng(0)
B, T = 4, 24
lengths = np.array([24, 20, 13, 7])
mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)
ids = np.where(mask == 1, rng.integers(1, config.vocab_size, (B, T)), 0)
labels = rng.integers(0, config.num_labels, B)

# %% [markdown]
# ## 2. Forward and backward on both devices
# Inputs are numpy arrays either way: the model turns ids, masks and labels into tensors on its
# own device. The outputs come back with `.numpy()` (from a GPU that is a copy to host memory).
#
# Tolerances, as in the model tests: logits are O(1) and both devices round every float32
# operation to ~6e-8 relative, in different orders (different matmul kernels sum in different
# orders), through 2 layers: a few 1e-7; we allow 1e-5. Gradients: relative error in norm ≤ 1e-4
# per parameter (~1000 float32 ulps; a wrong derivative is off by O(1)), with a floor of 1e-7 of
# the largest gradient for the key biases, whose exact gradient is 0 (lesson 6) so both devices
# return rounding noise there.

# %%
out = {}
for name, model in (("cpu", model_cpu), (DEVICE, model_dev)):
    model.zero_grad()
    res = model(ids, mask, labels=labels)
    res.loss.backward()
    out[name] = dict(logits=res.logits.numpy(), loss=res.loss.item(),
                     grads={n: p.grad.numpy() for n, p in model.named_parameters()})
    assert res.logits.device == model.device and model.classifier.weight.grad.device == model.device

logit_err = np.abs(out["cpu"]["logits"] - out[DEVICE]["logits"]).max()
print(f"logits: max |cpu − {DEVICE}| = {logit_err:.1e};  loss {out['cpu']['loss']:.6f} vs "
      f"{out[DEVICE]['loss']:.6f}")
assert logit_err < 1e-5
assert abs(out["cpu"]["loss"] - out[DEVICE]["loss"]) < 1e-5 * max(1.0, out["cpu"]["loss"])

g_cpu, g_dev = out["cpu"]["grads"], out[DEVICE]["grads"]
largest = max(np.linalg.norm(g) for g in g_cpu.values())
rel = {}
for n in g_cpu:
    diff = np.linalg.norm(g_dev[n].astype(np.float64) - g_cpu[n])
    assert diff <= 1e-4 * np.linalg.norm(g_cpu[n]) + 1e-7 * largest, n
    # For the picture, a key bias (exact gradient 0) is measured against its query bias's scale.
    rel[n] = diff / np.linalg.norm(g_cpu[n.replace("key.bias", "query.bias")])
worst = max(rel, key=rel.get)
print(f"{len(rel)} parameter gradients agree; worst relative difference {rel[worst]:.1e} ({worst})")

fig, ax = plt.subplots(figsize=(10, 3.8))
names = list(rel)
ax.bar(range(len(names)), [max(rel[n], 1e-12) for n in names], color="tab:blue")
ax.axhline(1e-4, color="gray", ls=":", label=_common.tr("asserted bound 1e-4", "断言的上界1e-4"))
ax.set_yscale("log")
ax.set_xticks(range(len(names)), [n.replace("bert.", "").replace("encoder.layer.", "L")
                                  for n in names], rotation=90, fontsize=6)
ax.set_ylabel(f"‖g_{DEVICE} − g_cpu‖ / ‖g_cpu‖")
ax.set_title(_common.tr(f"every gradient of one training step: numpy vs {DEVICE}",
                        f"一个训练步的每个梯度：numpy与{DEVICE}对比"))
ax.legend()
_common.savefig(fig, "12_gradients_across_devices.png")

# %% [markdown]
# ## 3. Mixing devices is an error, not a silent copy
# An op whose inputs live on different devices refuses to run, and says which op and which
# devices. (Copying silently would hide a transfer that, on a GPU, can cost more than the op.)
# To combine them, move one side explicitly with `.to(device)`; gradients flow back through the
# copy to the original device.

# %%
hidden_cpu = mg.randn(B, config.hidden_size)
try:
    model_dev.classifier(hidden_cpu)  # device weights, CPU input
    raise AssertionError("mixing devices should have failed")
except RuntimeError as e:
    print(f"RuntimeError: {e}")
    assert "cpu" in str(e) and model_dev.device in str(e)

x = mg.randn(B, config.hidden_size, requires_grad=True)
y = model_dev.classifier(x.to(DEVICE))  # an explicit, differentiable copy
y.sum().backward()
assert y.device == model_dev.device and x.grad.device == "cpu"
# d(sum(x Wᵀ + b))/dx = column sums of W for every row: the same on both sides of the copy.
np.testing.assert_allclose(x.grad.numpy(), np.tile(model_dev.classifier.weight.numpy().sum(0), (B, 1)),
                           rtol=1e-5, atol=1e-6)
print("x.to(device): gradient came back to x on", x.grad.device)

# %% [markdown]
# ## 4. The optimizer follows its parameters
# An optimizer holds references to the Parameter objects, and `Module.to` moves those objects in
# place, so an optimizer created *before* the move updates the moved parameters. Its state (Adam's
# moment estimates) is created at the first `step()`, next to each parameter, on its device.
# (So: move the model first, or at least before the first step. In PyTorch, state made on one
# device stays there when the model moves later, and the next step fails with a device error;
# minigrad's optimizer moves each parameter's state with it at the next step, a convenience
# torch does not have, so code that relies on it will not port back.)
#
# Three AdamW steps on each device, from the same weights: the losses must follow the same path.
# (The time per step is printed for curiosity. `"torch:cpu"` is not meant to be fast: torch's
# per-op overhead weighs on such small arrays. On a GPU a model this small is dominated by kernel
# launch latency too; the GPU pays off at BERT-base sizes, see `compare/bench.py`.)

# %%
mg.manual_seed(1)
fresh = mini_bert.BertForSequenceClassification(config).train()
copies = {"cpu": fresh, DEVICE: mini_bert.BertForSequenceClassification(config).train()}
copies[DEVICE].load_state_dict(fresh.state_dict())
optimizers = {name: mg.optim.AdamW(m.parameters(), lr=1e-3) for name, m in copies.items()}
copies[DEVICE].to(DEVICE)  # after the optimizer was made, before its first step

losses = {name: [] for name in copies}
seconds = {}
for name, model in copies.items():
    opt = optimizers[name]
    start = time.perf_counter()
    for _ in range(3):
        opt.zero_grad()
        loss = model(ids, mask, labels=labels).loss
        loss.backward()
        opt.step()
        losses[name].append(loss.item())  # .item() waits for the device to finish
    seconds[name] = (time.perf_counter() - start) / 3
    p = model.classifier.weight
    state = optimizers[name].state[id(p)]
    print(f"{name:>9}: losses {np.round(losses[name], 6).tolist()}, exp_avg lives in "
          f"{type(state['exp_avg']).__module__}, {seconds[name] * 1e3:.0f} ms per step")
    assert optimizers[name].param_groups[0]["params"][0] is next(model.parameters())
    assert mg.Tensor(state["exp_avg"]).device == p.device == model.device

# Same tolerance as the loss above: three steps of float32 rounding differences.
np.testing.assert_allclose(losses[DEVICE], losses["cpu"], rtol=1e-4)
assert losses["cpu"][-1] < losses["cpu"][0]  # and the steps did train

# %% [markdown]
# ## Takeaways
# - One model code, several backends: `model.to("cuda")` moves parameters in place, and inputs
#   given as numpy arrays follow the model's device.
# - The same float32 math on another device agrees to float32 rounding: outputs to ~1e-7,
#   gradients to ≤ 1e-4 relative, loss curves step for step.
# - Devices never mix silently: the error names the op and both devices; `.to()` is the explicit,
#   differentiable copy.
# - Create (or at least first step) the optimizer after moving the model: its state is made next
#   to each parameter at the first step.
# - On a real GPU, check `torch.get_float32_matmul_precision()`: TF32 trades ~3 decimal digits for
#   speed, which is fine for training and breaks float32 parity tests.

# %% [markdown] tags=["questions"]
# ## Check your understanding
#
# 1. Why is mixing devices an error rather than a silent copy?
#
# 2. `Module.to` moves parameters in place. Why does that matter for an optimizer created before
#    the move?
#
# 3. Two devices running the same float32 math do not agree bit for bit. Why, and how is the
#    tolerance chosen?
#
# 4. On a real GPU, why check `torch.get_float32_matmul_precision()` before a float32 parity test?

# %% [markdown] tags=["answers"]
# ## Answers
#
# 1. A silent copy hides a transfer that on a GPU can cost more than the op itself. The error
#    names the op and both devices, and `.to(device)` makes the copy explicit (and
#    differentiable).
#
# 2. The optimizer holds references to the same Parameter objects, so after the move it updates
#    the moved parameters; its state (Adam's moments) is created at the first `step()`, next to
#    each parameter on its device.
#
# 3. Different kernels sum in different orders, and each float32 operation rounds by ~6e-8
#    relative. Through two layers that accumulates to a few 1e-7 on O(1) logits: 1e-5 leaves
#    margin yet is far below the O(1) error of a wrong formula.
#
# 4. If it is "high" or "medium", float32 matrix products use TF32 (about 3 fewer decimal digits)
#    or bfloat16 passes: fine for training, but the differences are far larger than the float32
#    tolerances.
