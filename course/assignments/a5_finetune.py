"""Assignment 5: fine-tuning: AdamW, the warmup schedule, gradient clipping, the decay groups, the
classification head's loss, and one training step on the real all-MiniLM-L6-v2.

Oracles: torch.optim.Adam/AdamW, transformers' get_linear_schedule_with_warmup,
torch.nn.utils.clip_grad_norm_, transformers' decay-parameter rule, HF's
BertForSequenceClassification (its loss from problem_type, its gradients on MiniLM).
"""
from __future__ import annotations

import numpy as np

from course.assignments._oracle import (as_numpy, expect_close, expect_grads, fail, hf_model,
                                        minilm_dir, ours_from_hf, quiet, random_batch,
                                        random_config, torch_batch)
from course.framework import Assignment, Task

# float64 optimizer arithmetic on both sides: a few ulps per step; 1e-10 relative is ~1e6 ulps of
# headroom and far below the effect of a missing bias correction (x10 on the first step) or of
# eps added in the wrong place (gradients down to 1e-6 make eps matter).
OPT_TOL = 1e-10


def _float(x) -> float:
    """A Python float from a float or a 0-d tensor (torch returns the norm as a tensor)."""
    return float(x.item()) if hasattr(x, "item") else float(x)


def _params(rng: np.random.Generator):
    """The same random parameters in minigrad and torch (float64), 2-3 tensors."""
    import torch

    import minigrad as mg

    arrays = [rng.standard_normal(tuple(int(s) for s in rng.integers(1, 5, size=int(rng.integers(1, 3)))))
              for _ in range(int(rng.integers(2, 4)))]
    ours = [mg.nn.Parameter(mg.tensor(a, dtype=mg.float64)) for a in arrays]
    theirs = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in arrays]
    return ours, theirs


def _set_grads(ours, theirs, rng: np.random.Generator) -> None:
    """The same random gradients on both sides; each tensor's scale from 1e-6 to 1, so that Adam's
    eps matters for some and not for others."""
    import torch

    import minigrad as mg

    for p, q in zip(ours, theirs):
        g = rng.standard_normal(tuple(q.shape)) * 10.0 ** rng.uniform(-6, 0)
        p.grad = mg.tensor(g, dtype=mg.float64)
        q.grad = torch.from_numpy(g.copy())


def check_adam(rng: np.random.Generator) -> None:
    import torch

    import minigrad as mg

    for name in ("AdamW", "Adam"):
        ours, theirs = _params(rng)
        split = int(rng.integers(1, len(ours)))  # two groups with their own lr and decay
        hyper = [dict(lr=float(10 ** rng.uniform(-3, -1)), weight_decay=float(rng.choice([0.0, 0.1])))
                 for _ in range(2)]
        common = dict(betas=(float(rng.uniform(0.8, 0.95)), float(rng.uniform(0.9, 0.999))),
                      eps=float(10 ** rng.uniform(-8, -6)))
        groups = lambda ps: [{"params": ps[:split], **hyper[0]}, {"params": ps[split:], **hyper[1]}]  # noqa: E731
        opt = getattr(mg.optim, name)(groups(ours), **common)
        ref = getattr(torch.optim, name)(groups(theirs), **common)
        for step in range(1, int(rng.integers(3, 7)) + 1):
            _set_grads(ours, theirs, rng)
            opt.step()
            ref.step()
            for i, (p, q) in enumerate(zip(ours, theirs)):
                expect_close(f"{name} step {step}, parameter {i} (lr={hyper[i >= split]['lr']:.2g}, "
                             f"weight_decay={hyper[i >= split]['weight_decay']}, "
                             f"betas={tuple(round(b, 3) for b in common['betas'])}, "
                             f"eps={common['eps']:.1g})", p, q, OPT_TOL,
                             hint="bias corrections 1 - beta^t with t counted from 1; "
                                  "denominator sqrt(v)/sqrt(1 - beta2^t) + eps; AdamW decays "
                                  "theta by (1 - lr*wd) first, Adam adds wd*theta to the gradient")


def check_schedule(rng: np.random.Generator) -> None:
    import torch
    import transformers

    import minigrad as mg

    for warmup in (0, int(rng.integers(1, 8))):
        total = warmup + int(rng.integers(1, 15))
        lr = float(10 ** rng.uniform(-5, -2))
        opt = mg.optim.SGD([mg.nn.Parameter(mg.tensor(np.zeros(2)))], lr=lr)
        ref_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)
        sched = mg.optim.get_linear_schedule_with_warmup(opt, warmup, total)
        ref = transformers.get_linear_schedule_with_warmup(ref_opt, warmup, total)
        got, want = [], []
        for _ in range(total + 3):  # and past the end, where the rate stays 0
            got.append(opt.param_groups[0]["lr"])
            want.append(ref_opt.param_groups[0]["lr"])
            ref_opt.step()  # (no gradients: no update) torch expects it before the schedule's step
            sched.step()
            ref.step()
        if not np.allclose(got, want, rtol=1e-12, atol=0):
            fail(f"get_linear_schedule_with_warmup(warmup={warmup}, total={total}, lr={lr:.2g}): "
                 f"the learning rates at steps 0, 1, 2, ... are {np.round(got, 12).tolist()}, "
                 f"expected {np.round(want, 12).tolist()} (step/warmup while warming up, then "
                 "(total - step)/(total - warmup), never below 0; step 0 is applied on creation)")


def check_clip(rng: np.random.Generator) -> None:
    import torch

    import minigrad as mg

    for case in range(4):
        ours, theirs = _params(rng)
        _set_grads(ours, theirs, rng)
        if case == 3:  # a parameter without a gradient is skipped
            ours[0].grad, theirs[0].grad = None, None
        total = float(np.sqrt(sum(np.sum(as_numpy(q.grad) ** 2) for q in theirs if q.grad is not None)))
        # below, at, and above the norm: clipping must act only when the norm exceeds max_norm
        max_norm = total * [0.3, 2.0, 0.01, 0.5][case]
        got = mg.nn.utils.clip_grad_norm_(ours, max_norm)
        want = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
        if abs(_float(got) - float(want)) > OPT_TOL * float(want):
            fail(f"clip_grad_norm_ returned {_float(got):.6g}, expected the total norm before "
                 f"clipping, {float(want):.6g} (sqrt of the sum of every gradient's squares)")
        for i, (p, q) in enumerate(zip(ours, theirs)):
            if q.grad is None:
                if p.grad is not None:
                    fail("clip_grad_norm_ gave a gradient to a parameter that had none")
                continue
            expect_close(f"clip_grad_norm_(max_norm={max_norm:.3g}) with total norm {total:.3g}: "
                         f"gradient {i}", p.grad, q.grad, OPT_TOL,
                         hint="one coefficient max_norm / (total + 1e-6) for all gradients, "
                              "applied only when it is below 1")
    one, = _params(rng)[0][:1]  # a single tensor, as torch accepts
    one.grad = mg.tensor(np.full(one.shape, 3.0))
    mg.nn.utils.clip_grad_norm_(one, 1.0)
    if abs(float(np.linalg.norm(as_numpy(one.grad))) - 1.0) > 1e-5:
        fail("clip_grad_norm_(tensor, 1.0) on one tensor should scale its gradient to norm 1")


def check_param_groups(rng: np.random.Generator) -> None:
    import torch
    from transformers.trainer_pt_utils import get_parameter_names

    from mini_bert import finetune as FT

    config = random_config(rng, num_labels=int(rng.integers(2, 4)))
    hf = hf_model("BertForSequenceClassification", config, rng)
    ours = ours_from_hf(hf, "BertForSequenceClassification", float64=False)
    names = [n for n, _ in ours.named_parameters()]
    frozen = set(rng.choice(names, size=int(rng.integers(0, len(names) // 2)), replace=False))
    for name, p in ours.named_parameters():
        p.requires_grad_(name not in frozen)
    # HF Trainer's rule: decay every parameter outside LayerNorm modules whose name has no "bias";
    # frozen parameters are not given to the optimizer at all.
    hf_decay = {n for n in get_parameter_names(hf, [torch.nn.LayerNorm]) if "bias" not in n}
    wd = float(rng.uniform(0.01, 0.2))
    groups = FT.param_groups(ours, wd)
    by_id = {id(p): n for n, p in ours.named_parameters()}
    got = {}
    for g in groups:
        for p in g["params"]:
            got.setdefault(g["weight_decay"], []).append(by_id.get(id(p), "?"))
    want = {wd: [n for n in names if n in hf_decay and n not in frozen],
            0.0: [n for n in names if n not in hf_decay and n not in frozen]}
    for decay, want_names in want.items():
        if sorted(got.get(decay, [])) != sorted(want_names):
            extra = sorted(set(got.get(decay, [])) - set(want_names))[:4]
            missing = sorted(set(want_names) - set(got.get(decay, [])))[:4]
            wrong = ", ".join(s for s in (extra and f"wrongly holds {extra}",
                                          missing and f"lacks {missing}") if s)
            fail(f"param_groups(model, {wd:.3g}): the group with weight_decay={decay:.3g} {wrong} "
                 "(decay weight matrices and embeddings; not biases, not LayerNorm weights; leave "
                 "frozen parameters out)")


def check_head_loss(rng: np.random.Generator) -> None:
    import torch

    for kind in ("single_label_classification", "multi_label_classification", "regression"):
        k = 1 if kind == "regression" and rng.random() < 0.5 else int(rng.integers(2, 5))
        explicit = bool(rng.random() < 0.5)  # given in the config, or inferred from the labels
        config = random_config(rng, num_labels=k, problem_type=kind if explicit else None)
        hf = hf_model("BertForSequenceClassification", config, rng)
        ours = ours_from_hf(hf, "BertForSequenceClassification")
        batch = random_batch(rng, config.vocab_size, config.type_vocab_size)
        b = len(batch["input_ids"])
        if kind == "single_label_classification":
            labels = rng.integers(0, k, size=b)
        elif kind == "multi_label_classification":
            labels = rng.integers(0, 2, size=(b, k)).astype(np.float64)
        else:
            labels = rng.standard_normal(b if k == 1 else (b, k))
        if kind == "regression" and k > 1 and not explicit:
            continue  # float labels with k > 1 are inferred as multi-label (HF's rule), not regression
        out = ours(**batch, labels=labels)
        ref = hf(**torch_batch(batch), labels=torch.from_numpy(labels))
        what = f"{kind} with {k} label(s), problem_type {'set' if explicit else 'inferred'}"
        if out.loss is None:
            fail(f"{what}: the loss is None")
        expect_close(f"{what}: loss", out.loss, ref.loss,
                     hint="CE on integer labels, BCE-with-logits on float labels, MSE with one output")
        out.loss.backward()
        ref.loss.backward()
        expect_grads(ours, hf, hint=what)


# The project's parity rule (compare/gradients.py, tests/test_gradient_parity.py), restated here
# because a check must not read it from the tree being graded: 1e-4 relative in norm per tensor,
# plus an absolute floor of 1e-7 of the largest gradient for gradients that are 0 in exact
# arithmetic (the attention key biases), where float32 leaves only unrelated rounding noise.
REL_BOUND, NOISE_FLOOR = 1e-4, 1e-7


def check_train_step(rng: np.random.Generator) -> None:
    import torch
    import transformers

    import minigrad as mg
    from mini_bert import BertForSequenceClassification, BertTokenizer
    from mini_bert import data as D
    from mini_bert import finetune as FT

    path = minilm_dir()
    words = ["a", "truly", "great", "film", "awful", "boring", "plot", "i", "loved", "it", "not", "."]
    n = int(rng.integers(3, 6))
    texts = [" ".join(rng.choice(words, size=int(rng.integers(3, 12)))) for _ in range(n)]
    names = ["neg", "pos"]
    y = rng.integers(0, 2, size=n)
    y[:2] = [0, 1]
    loss = ["bce", "ce"][int(rng.integers(2))]
    examples = [D.Example(t, names[c]) for t, c in zip(texts, y)]
    cfg = FT.TrainConfig(loss=loss, max_length=int(rng.integers(6, 16)))
    mg.manual_seed(int(rng.integers(2**31)))
    no_dropout = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    with quiet():
        ours = BertForSequenceClassification.from_pretrained(path, **FT.head_config(loss, names),
                                                              **no_dropout).train()
        head = (dict(num_labels=1, problem_type="multi_label_classification") if loss == "bce" else
                dict(num_labels=2, problem_type="single_label_classification"))
        hf = transformers.BertForSequenceClassification.from_pretrained(
            path, attn_implementation="eager", **head, **no_dropout).train()
    if ours.classifier.out_features != head["num_labels"] or ours.config.problem_type != head["problem_type"]:
        fail(f"head_config({loss!r}, {names}) should give num_labels={head['num_labels']} and "
             f"problem_type={head['problem_type']!r}")
    with torch.no_grad():
        hf.classifier.weight.copy_(torch.from_numpy(ours.classifier.weight.numpy()))
        hf.classifier.bias.copy_(torch.from_numpy(ours.classifier.bias.numpy()))
    out = FT.forward(ours, BertTokenizer.from_pretrained(path), examples, y, cfg)
    out.loss.backward()
    with quiet():
        enc = transformers.BertTokenizerFast.from_pretrained(path)(
            texts, padding=True, truncation=True, max_length=cfg.max_length, return_tensors="pt")
    labels = torch.tensor(y, dtype=torch.float32)[:, None] if loss == "bce" else torch.tensor(y)
    ref = hf(**enc, labels=labels)
    ref.loss.backward()
    what = f"one {loss} step on all-MiniLM-L6-v2 ({n} texts, max_length {cfg.max_length})"
    if abs(out.loss.item() - ref.loss.item()) > 1e-5:  # a mean of n float32 values of order 1
        fail(f"{what}: loss {out.loss.item():.6f}, HF's {ref.loss.item():.6f} (encode the batch with "
             "the tokenizer, truncated and padded; labels as floats [B, 1] for bce, ids [B] for ce)")
    theirs = dict(hf.named_parameters())
    rows = [(n_, as_numpy(p.grad), theirs[n_].grad.double().numpy())
            for n_, p in ours.named_parameters()]
    largest = max(np.linalg.norm(r) for _, _, r in rows)
    for name, g, r in rows:
        diff, ref_norm = float(np.linalg.norm(g - r)), float(np.linalg.norm(r))
        if not diff <= REL_BOUND * ref_norm + NOISE_FLOOR * largest:
            fail(f"{what}: the gradient of {name} differs from HF's by {diff / max(ref_norm, 1e-30):.2g} "
                 f"relative (allowed {REL_BOUND:g})")
    preds = FT.predictions(out.logits.numpy(), loss)
    logits = ref.logits.detach().numpy()
    want = (logits[:, 0] > 0).astype(np.int64) if loss == "bce" else logits.argmax(axis=1)
    if list(np.asarray(preds)) != list(want):
        fail(f"predictions(logits, {loss!r}) gave {list(preds)}, expected {list(want)} "
             "(bce: z > 0, i.e. sigma(z) > 1/2; ce: the argmax)")


ASSIGNMENT = Assignment(id="a5", title="Fine-tuning: AdamW, warmup, clipping, the training step", tasks=[
    Task("a5.adam", "Adam and AdamW: one update, torch's order", 5,
         ["minigrad/optim/adam.py:Adam._update"],
         "grad and p._data are raw arrays (xp = p._xp), update p._data; keep step, exp_avg, "
         "exp_avg_sq in state; bias-correct both moments; AdamW decays p._data by (1 - lr*wd) first",
         check_adam),
    Task("a5.schedule", "Linear warmup, then linear decay to 0", 2,
         ["minigrad/optim/lr_scheduler.py:get_linear_schedule_with_warmup"],
         "a LambdaLR whose factor is step/warmup, then (total - step)/(total - warmup), >= 0",
         check_schedule),
    Task("a5.clip", "clip_grad_norm_: one global L2 norm", 3,
         ["minigrad/nn/utils.py:clip_grad_norm_"],
         "total = sqrt(sum of squares over all grads); scale by max_norm/(total + 1e-6) if < 1",
         check_clip),
    Task("a5.param_groups", "AdamW groups: no decay on biases and LayerNorm", 2,
         ["mini_bert/finetune.py:param_groups"],
         "two groups: weights (decayed) and biases + LayerNorm (weight_decay 0); skip frozen",
         check_param_groups),
    Task("a5.head_loss", "The classification head's loss for each problem type", 4,
         ["mini_bert/model.py:BertForSequenceClassification.resolve_problem_type",
          "mini_bert/model.py:BertForSequenceClassification.loss"],
         "single-label: cross-entropy; multi-label: BCE with logits; regression: MSE (squeezed "
         "when there is one output)", check_head_loss),
    Task("a5.train_step", "One training step on all-MiniLM-L6-v2: gradient parity with HF", 5,
         ["mini_bert/finetune.py:head_config", "mini_bert/finetune.py:targets",
          "mini_bert/finetune.py:predictions", "mini_bert/finetune.py:forward"],
         "bce: one logit, multi_label problem, float labels [B, 1]; ce: one logit per class, "
         "ids [B]; forward encodes the batch and calls the model with labels", check_train_step),
])
