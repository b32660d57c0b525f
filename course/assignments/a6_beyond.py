"""Assignment 6: beyond plain fine-tuning: LoRA (Hu et al., 2021) and adversarial training on the
word embeddings, FGM (Miyato et al., 2017) and PGD (Madry et al., 2018).

Oracles: the ``peft`` package (its LoRA layers, its merge, its trainable set, loading our adapter
files) and the usual torch recipe for FGM/PGD on HF's BertForSequenceClassification, written here.
Compared in float64 on both sides (see ``_oracle.TOL64``).
"""
from __future__ import annotations

import tempfile

import numpy as np

from course.assignments._oracle import (expect_close, expect_grads, fail, hf_model,
                                        ours_from_hf, quiet, random_batch, random_config,
                                        torch_batch, torch_fgm, torch_pgd)
from course.framework import Assignment, Task


# ---- LoRA ----------------------------------------------------------------------------------------
def _lora_pair(rng: np.random.Generator):
    """Our LoRALinear and peft's LoRA layer around the same float64 Linear, with the same random
    A and B (B non-zero: with peft's B = 0 the detour would contribute nothing to compare)."""
    import peft
    import torch

    import minigrad as mg
    from mini_bert.peft import LoRALinear

    n_in, n_out, r = (int(v) for v in rng.integers(2, 9, size=3))
    alpha = float(rng.choice([1.0, 4.0, 16.0]))
    W, b = rng.standard_normal((n_out, n_in)), rng.standard_normal(n_out)
    A, B = rng.standard_normal((r, n_in)), rng.standard_normal((n_out, r))
    base = mg.nn.Linear(n_in, n_out).to(dtype=mg.float64)
    base.load_state_dict({"weight": W, "bias": b})
    ours = LoRALinear(base, r=r, alpha=alpha)
    ours.load_state_dict({"lora_A.weight": A, "lora_B.weight": B}, strict=False)
    net = torch.nn.Sequential()
    net.add_module("proj", torch.nn.Linear(n_in, n_out).double())
    with torch.no_grad():
        net.proj.weight.copy_(torch.from_numpy(W))
        net.proj.bias.copy_(torch.from_numpy(b))
    theirs = peft.get_peft_model(net, peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=["proj"]))
    layer = theirs.base_model.model.proj
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(torch.from_numpy(A))
        layer.lora_B["default"].weight.copy_(torch.from_numpy(B))
    x = rng.standard_normal((int(rng.integers(1, 4)), int(rng.integers(1, 5)), n_in))
    return ours, theirs, layer, x, f"LoRALinear(in={n_in}, out={n_out}, r={r}, alpha={alpha:g})"


def check_lora_forward(rng: np.random.Generator) -> None:
    import torch

    import minigrad as mg

    ours, theirs, layer, x, what = _lora_pair(rng)
    xs, xt = mg.tensor(x, requires_grad=True), torch.from_numpy(x).requires_grad_(True)
    y, ref = ours(xs), theirs(xt)
    expect_close(f"{what} output", y, ref, hint="x Wᵀ + b + (alpha/r) · (x Aᵀ) Bᵀ")
    weights = rng.standard_normal(tuple(ref.shape))
    (y * mg.tensor(weights)).sum().backward()
    (ref * torch.from_numpy(weights)).sum().backward()
    for name, p, q in (("lora_A", ours.lora_A.weight, layer.lora_A["default"].weight),
                       ("lora_B", ours.lora_B.weight, layer.lora_B["default"].weight),
                       ("the input", xs, xt)):
        if p.grad is None:
            fail(f"{what}: {name} got no gradient (build the detour from minigrad ops)")
        expect_close(f"{what}: the gradient of {name}", p.grad, q.grad)
    ours.merge()  # W now holds W + ΔW: the detour must not be added a second time
    expect_close(f"{what} output after merge()", ours(mg.tensor(x)), ref,
                 hint="when self.merged, the update is already inside W: return the base output")


def check_lora_merge(rng: np.random.Generator) -> None:
    import minigrad as mg

    ours, theirs, layer, x, what = _lora_pair(rng)
    W0 = ours.weight.numpy().copy()
    expect_close(f"{what}: delta_weight()", ours.delta_weight(), layer.get_delta_weight("default"),
                 hint="(alpha/r) · B A, of shape [out, in]")
    before = ours(mg.tensor(x)).numpy()
    ours.merge()
    theirs.merge_adapter()
    if not ours.merged:
        fail(f"{what}: after merge(), .merged should be True")
    expect_close(f"{what}: the weight after merge()", ours.weight, layer.base_layer.weight,
                 hint="W + ΔW")
    ours.merge()  # merging twice must not add ΔW twice
    expect_close(f"{what}: the weight after a second merge()", ours.weight, layer.base_layer.weight,
                 hint="merge() of a merged layer does nothing")
    expect_close(f"{what}: the output after merge()", ours(mg.tensor(x)), before)
    ours.unmerge()
    if ours.merged:
        fail(f"{what}: after unmerge(), .merged should be False")
    expect_close(f"{what}: the weight after unmerge()", ours.weight, W0, tol=1e-12,
                 hint="W - ΔW, or better the original array back")
    expect_close(f"{what}: the output after unmerge()", ours(mg.tensor(x)), before)


def check_apply_lora(rng: np.random.Generator) -> None:
    import peft
    import torch

    import minigrad as mg
    from mini_bert import peft as P

    config = random_config(rng, num_labels=int(rng.integers(2, 4)))
    hf = hf_model("BertForSequenceClassification", config, rng)
    with tempfile.TemporaryDirectory() as base_dir:
        with quiet():
            hf.save_pretrained(base_dir)
        ours = ours_from_hf(hf, "BertForSequenceClassification", float64=False)
        choices = ["query", "key", "value", "dense"]
        targets = [str(t) for t in rng.choice(choices, size=int(rng.integers(1, 4)), replace=False)]
        r, alpha = int(rng.integers(1, 5)), float(rng.choice([2.0, 8.0]))
        try:
            P.apply_lora(ours, ["query", "no_such_layer"], r=r)
        except ValueError:
            pass
        else:
            fail("apply_lora with a target that matches no Linear ('no_such_layer') should raise "
                 "ValueError, so that a typo is not a silently LoRA-free run")
        if P.lora_layers(ours):
            fail("apply_lora changed the model although it raised: find every match first")
        P.apply_lora(ours, targets, r=r, alpha=alpha)
        what = f"apply_lora(model, {targets}, r={r}, alpha={alpha:g})"
        with quiet():
            oracle = peft.get_peft_model(hf, peft.LoraConfig(
                r=r, lora_alpha=alpha, target_modules=targets, task_type="SEQ_CLS"))
        want = {n.removeprefix("base_model.model.").removesuffix(".lora_A.default.weight")
                for n, _ in oracle.named_parameters() if n.endswith("lora_A.default.weight")}
        got = {n for n, _ in P.lora_layers(ours)}
        if got != want:
            fail(f"{what} wrapped {sorted(got)[:6]}, peft wraps {sorted(want)[:6]} (every "
                 "nn.Linear whose attribute name is one of the targets, in every submodule)")
        trainable = oracle.get_nb_trainable_parameters()[0]
        if P.count_trainable(ours) != trainable:
            fail(f"{what}: {P.count_trainable(ours)} trainable scalars, peft has {trainable} (only "
                 "the LoRA A and B matrices and the classification head stay trainable)")
        # Our adapter files, loaded by peft onto HF's base model, give our outputs.
        for _, layer in P.lora_layers(ours):
            layer.load_state_dict({"lora_B.weight": rng.standard_normal(layer.lora_B.weight.shape)},
                                  strict=False)
        ours.eval()
        batch = random_batch(rng, config.vocab_size, config.type_vocab_size)
        with mg.no_grad():
            expected = ours(**batch).logits
        with tempfile.TemporaryDirectory() as adapter_dir, quiet():
            P.save_adapter(ours, adapter_dir, base_model_name_or_path=base_dir)
            import transformers

            base = transformers.BertForSequenceClassification.from_pretrained(
                base_dir, attn_implementation="eager")
            loaded = peft.PeftModel.from_pretrained(base, adapter_dir).eval()
            with torch.no_grad():
                logits = loaded(**torch_batch(batch)).logits
        # float32 logits of a small random BERT: the libraries round differently, ~1e-6.
        expect_close(f"{what}: peft's logits with our saved adapter", expected, logits, tol=1e-4,
                     hint="record the LoRA settings on the model (model.lora_config) as "
                          "save_adapter expects them")


# ---- adversarial training --------------------------------------------------------------------------
def _attack_pair(rng: np.random.Generator, n_batches: int = 1):
    """Our classifier and HF's, same random float64 weights; for each of ``n_batches`` random
    batches (with labels) the loss on both sides, as functions to call."""
    import torch

    config = random_config(rng, num_labels=int(rng.integers(2, 4)))
    hf = hf_model("BertForSequenceClassification", config, rng)
    ours = ours_from_hf(hf, "BertForSequenceClassification")
    scale = float(rng.choice([1.0, 0.5]))  # as with gradient accumulation
    ours_losses, hf_losses = [], []
    for _ in range(n_batches):
        batch = random_batch(rng, config.vocab_size, config.type_vocab_size)
        y = rng.integers(0, config.num_labels, size=len(batch["input_ids"]))
        ours_losses.append(lambda b=batch, y=y: ours(**b, labels=y).loss * scale)
        hf_losses.append(lambda b=batch, y=y: hf(**torch_batch(b), labels=torch.from_numpy(y)).loss * scale)
    return ours, hf, ours_losses, hf_losses


def _run_attack(rng: np.random.Generator, kind: str, micro_batches: int = 1) -> None:
    import mini_bert as mb

    ours, hf, ours_losses, hf_losses = _attack_pair(rng, micro_batches)
    emb = ours.bert.embeddings.word_embeddings.weight
    original = emb.numpy().copy()
    eps = float(rng.uniform(0.2, 1.0))
    if kind == "fgm":
        attack, what = mb.FGM(ours, eps=eps), f"FGM(eps={eps:.2f})"
        oracle = lambda loss: torch_fgm(hf, loss, eps)  # noqa: E731
    else:
        alpha, steps = eps * float(rng.uniform(0.6, 0.9)), int(rng.integers(2, 5))  # eps < 2 alpha:
        attack, what = mb.PGD(ours, eps=eps, alpha=alpha, steps=steps), \
            f"PGD(eps={eps:.2f}, alpha={alpha:.2f}, steps={steps})"   # the projection acts
        oracle = lambda loss: torch_pgd(hf, loss, eps, alpha, steps)  # noqa: E731
    for ours_loss, hf_loss in zip(ours_losses, hf_losses):
        attack.backward(ours_loss(), ours_loss)
        # The torch side: each micro-batch attacks along its own gradient; the results add up.
        earlier = [p.grad for p in hf.parameters()]
        hf.zero_grad()
        oracle(hf_loss)
        for p, g in zip(hf.parameters(), earlier):
            if g is not None:
                p.grad = p.grad + g
    if micro_batches > 1:
        what += f" over {micro_batches} accumulated micro-batches"
    if not np.array_equal(emb.numpy(), original):
        fail(f"{what}: the word embeddings were not restored exactly after the attack (keep the "
             "original array aside and put it back)")
    expect_grads(ours, hf, hint=f"{what}: the gradients must be those of the clean loss plus the "
                                "loss at the perturbed embeddings")


def check_fgm(rng: np.random.Generator) -> None:
    _run_attack(rng, "fgm")


def check_pgd(rng: np.random.Generator) -> None:
    import mini_bert as mb

    _run_attack(rng, "pgd")
    ours, _, (ours_loss,), _ = _attack_pair(rng)   # every step overshoots the ball: it stays on it
    emb = ours.bert.embeddings.word_embeddings.weight
    original = emb.numpy().copy()
    eps = float(rng.uniform(0.05, 0.2))
    pgd = mb.PGD(ours, eps=eps, alpha=5 * eps, steps=3)
    for t in range(3):
        ours.zero_grad()
        ours_loss().backward()
        pgd.attack(first=t == 0)
        norm = float(np.linalg.norm(emb.numpy() - original))
        if abs(norm - eps) > 1e-9:
            fail(f"PGD(eps={eps:.3f}, alpha={5 * eps:.3f}) step {t + 1}: ||E - E0|| = {norm:.4f}, "
                 f"expected {eps:.3f} (project back onto the ball: r <- r * eps / ||r||)")
    pgd.restore()


def check_accumulation(rng: np.random.Generator) -> None:
    _run_attack(rng, ["fgm", "pgd"][int(rng.integers(2))], micro_batches=2)


ASSIGNMENT = Assignment(id="a6", title="Beyond: LoRA and adversarial training (FGM, PGD)", tasks=[
    Task("a6.lora_forward", "LoRALinear.forward: the low-rank detour", 3,
         ["mini_bert/peft.py:LoRALinear.forward"],
         "F.linear(x, W, b) + lora_B(lora_A(dropout(x))) * scaling, unless merged", check_lora_forward),
    Task("a6.lora_merge", "Merging ΔW = (α/r) B A into W, and back", 3,
         ["mini_bert/peft.py:LoRALinear.delta_weight", "mini_bert/peft.py:LoRALinear.merge",
          "mini_bert/peft.py:LoRALinear.unmerge"],
         "ΔW = (B A)·scaling on the raw arrays (.weight._data); merge: W += ΔW once, remembering "
         "the original array; unmerge: put it back",
         check_lora_merge),
    Task("a6.apply_lora", "apply_lora: wrap the targets, freeze the rest (as peft)", 4,
         ["mini_bert/peft.py:apply_lora"],
         "find every matching Linear first (ValueError for a target that matches none), wrap, "
         "freeze all but LoRA and the head, set model.lora_config", check_apply_lora),
    Task("a6.fgm", "FGM: one step of size eps along g/||g||", 4,
         ["mini_bert/adversarial.py:_EmbeddingAttack._step", "mini_bert/adversarial.py:_EmbeddingAttack.restore",
          "mini_bert/adversarial.py:FGM.attack", "mini_bert/adversarial.py:FGM._adversarial_backward"],
         "_step: p._data = p._data + size·g/||g|| (a new array); attack: back up p._data first; "
         "backward the loss again (grads add); restore the backed-up arrays", check_fgm),
    Task("a6.pgd", "PGD: K projected steps inside the eps-ball", 5,
         ["mini_bert/adversarial.py:PGD.attack", "mini_bert/adversarial.py:PGD.project",
          "mini_bert/adversarial.py:PGD._adversarial_backward"],
         "step alpha g/||g||, project r = E - E0 onto ||r|| <= eps; clear grads between steps, "
         "clean grads back before the last backward", check_pgd),
    Task("a6.accumulation", "Attacks with gradient accumulation: each micro-batch its own direction", 2,
         ["mini_bert/adversarial.py:_EmbeddingAttack._take_grads",
          "mini_bert/adversarial.py:_EmbeddingAttack._add_grads",
          "mini_bert/adversarial.py:_EmbeddingAttack.backward"],
         "set the trainable params' .grad aside (and clear them), loss.backward() + the attack on "
         "this batch alone, then add the earlier grads back as new Tensors (the checks use "
         "grad_wrt='weight', the default)",
         check_accumulation),
])
