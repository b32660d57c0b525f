"""FGM and PGD (mini_bert.adversarial) against the same recipes written here in torch on HF's
BertForSequenceClassification (same weights, same batch, dropout off), plus the geometry:
the perturbation is ε g/‖g‖ (FGM) or stays in the ε-ball (PGD), and the embeddings come back
as the very same array (bit for bit).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from course.assignments._oracle import torch_fgm, torch_pgd  # the grader's a6 oracle: one recipe
from hf_oracle import max_abs, random_batch, saved_classifier, torch

import mini_bert as mb
import minigrad as mg

LABELS = np.array([0, 2, 1, 2])
# float64: the same math on both sides with ~1e-16 rounding; 1e-10 leaves ~1e6x headroom and is
# still far below the O(1e-3) effect of the perturbation on any gradient. float32: values and
# gradients O(1) through 2 layers, measured ~1e-6 apart; 2e-5 leaves margin.
TOL = {mg.float64: 1e-10, mg.float32: 2e-5}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return saved_classifier(tmp_path_factory.mktemp("adv"))


def pair(checkpoint: str, dtype):
    import transformers

    ours = mb.BertForSequenceClassification.from_pretrained(checkpoint).to(dtype=dtype)
    hf = transformers.BertForSequenceClassification.from_pretrained(
        checkpoint, attn_implementation="eager").eval()
    return ours, (hf.double() if dtype == mg.float64 else hf)


def batch_for(seed: int = 0) -> dict:
    return random_batch(97, 2, batch=4, seq=9, seed=seed)


# ---- the torch oracle: the usual FGM / PGD recipe for BERT fine-tuning ----------------------------
def torch_loss(hf, batch, scale: float = 1.0):
    return hf(**{k: torch.tensor(v) for k, v in batch.items()}, labels=torch.tensor(LABELS)).loss * scale


def assert_grads_match(ours, hf, tol: float) -> None:
    theirs = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        ref = theirs[name].grad
        assert max_abs(p.grad, ref) <= tol * max(1.0, float(ref.abs().max())), name


def ours_loss(model, batch, scale: float = 1.0):
    return model(**batch, labels=LABELS).loss * scale


# ---- tests ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [mg.float64, mg.float32])
def test_fgm_gradient_matches_torch(checkpoint, dtype):
    ours, hf = pair(checkpoint, dtype)
    batch = batch_for()
    emb = ours.bert.embeddings.word_embeddings.weight
    original = emb._data
    kept = original.copy()
    mb.FGM(ours, eps=0.5).backward(ours_loss(ours, batch), lambda: ours_loss(ours, batch))
    assert emb._data is original and np.array_equal(emb._data, kept)  # restored bit for bit
    torch_fgm(hf, lambda: torch_loss(hf, batch), eps=0.5)
    assert_grads_match(ours, hf, TOL[dtype])

    # The adversarial term is really there: the clean gradient alone is far from the sum.
    clean, _ = pair(checkpoint, dtype)
    ours_loss(clean, batch).backward()
    w = "bert.encoder.layer.0.attention.self.query.weight"
    assert max_abs(dict(clean.named_parameters())[w].grad,
                   dict(ours.named_parameters())[w].grad) > 1e3 * TOL[dtype]


@pytest.mark.parametrize("dtype", [mg.float64, mg.float32])
def test_pgd_gradient_matches_torch(checkpoint, dtype):
    ours, hf = pair(checkpoint, dtype)
    batch = batch_for(1)
    emb = ours.bert.embeddings.word_embeddings.weight
    original, kept = emb._data, emb._data.copy()
    # eps < 2·alpha: from the second step on, the projection is active.
    mb.PGD(ours, eps=0.5, alpha=0.3, steps=3).backward(ours_loss(ours, batch),
                                                        lambda: ours_loss(ours, batch))
    assert emb._data is original and np.array_equal(emb._data, kept)
    torch_pgd(hf, lambda: torch_loss(hf, batch), eps=0.5, alpha=0.3, steps=3)
    assert_grads_match(ours, hf, TOL[dtype])


def test_fgm_perturbation_is_eps_along_the_gradient(checkpoint):
    ours, hf = pair(checkpoint, mg.float64)
    batch = batch_for(2)
    emb = ours.bert.embeddings.word_embeddings.weight
    original = emb._data.copy()
    fgm = mb.FGM(ours, eps=0.7)
    ours_loss(ours, batch).backward()
    fgm.attack()
    r = emb.numpy() - original
    torch_loss(hf, batch).backward()
    g = hf.bert.embeddings.word_embeddings.weight.grad.numpy()
    # float64: r = (E + c g) - E loses only the last bits of E (|E| ~ 0.2): ~1e-17 absolute.
    assert np.abs(r - 0.7 * g / np.linalg.norm(g)).max() < 1e-12
    assert abs(np.linalg.norm(r) - 0.7) < 1e-12
    assert not r[0].any()  # the [PAD] row (padding_idx) gets no gradient, hence no perturbation
    fgm.restore()
    assert np.array_equal(emb._data, original)


def test_pgd_stays_in_the_eps_ball(checkpoint):
    ours, _ = pair(checkpoint, mg.float64)
    emb = ours.bert.embeddings.word_embeddings.weight
    original = emb._data
    pgd = mb.PGD(ours, eps=0.2, alpha=0.5, steps=4)   # every step overshoots the ball
    batch = batch_for(3)
    norms = []
    for t in range(4):
        ours.zero_grad()
        ours_loss(ours, batch).backward()
        pgd.attack(first=t == 0)
        norms.append(np.linalg.norm(emb._data - original))
    assert np.allclose(norms, 0.2, rtol=0, atol=1e-12), norms  # projected onto the sphere
    pgd.restore()
    assert emb._data is original


def test_accumulated_micro_batches_each_see_their_own_gradient(checkpoint):
    """With gradient accumulation, each micro-batch's attack uses that micro-batch's gradient
    (not the running sum), and the grads add up: sum over micro-batches of clean + adversarial."""
    ours, hf = pair(checkpoint, mg.float64)
    fgm = mb.FGM(ours, eps=0.5)
    for seed in (4, 5):
        b = batch_for(seed)
        fgm.backward(ours_loss(ours, b, 0.5), lambda b=b: ours_loss(ours, b, 0.5))
    total = {}
    for seed in (4, 5):
        hf.zero_grad()
        b = batch_for(seed)
        torch_fgm(hf, lambda b=b: torch_loss(hf, b, 0.5), eps=0.5)
        for n, p in hf.named_parameters():
            total[n] = total.get(n, 0) + p.grad.clone()
    for n, p in hf.named_parameters():
        p.grad = total[n]
    assert_grads_match(ours, hf, TOL[mg.float64])


@pytest.mark.parametrize("kind", ["fgm", "pgd"])
def test_gradient_through_the_embedding_output_matches_torch(checkpoint, kind):
    """grad_wrt="output": g from mg.autograd.grad at the lookup's output, mapped to E's rows; the
    same perturbation and gradients as the torch recipe (which reads E.grad), and an earlier
    micro-batch's .grad is neither read by the attack nor lost."""
    ours, hf = pair(checkpoint, mg.float64)
    batch, earlier = batch_for(6), batch_for(7)
    ours_loss(ours, earlier).backward()
    attack = (mb.FGM(ours, eps=0.5, grad_wrt="output") if kind == "fgm" else
              mb.PGD(ours, eps=0.5, alpha=0.3, steps=3, grad_wrt="output"))
    emb = ours.bert.embeddings.word_embeddings.weight
    original, kept = emb._data, emb._data.copy()
    attack.backward(ours_loss(ours, batch), lambda: ours_loss(ours, batch))
    assert emb._data is original and np.array_equal(emb._data, kept)

    torch_loss(hf, earlier).backward()
    before = [p.grad.clone() for p in hf.parameters()]
    hf.zero_grad()
    if kind == "fgm":
        torch_fgm(hf, lambda: torch_loss(hf, batch), eps=0.5)
    else:
        torch_pgd(hf, lambda: torch_loss(hf, batch), eps=0.5, alpha=0.3, steps=3)
    for p, g in zip(hf.parameters(), before):
        p.grad += g
    assert_grads_match(ours, hf, TOL[mg.float64])


def test_gradient_through_the_output_needs_the_latest_forward(checkpoint):
    ours, _ = pair(checkpoint, mg.float64)
    fgm = mb.FGM(ours, grad_wrt="output")
    stale = ours_loss(ours, batch_for(8))
    ours_loss(ours, batch_for(9))   # another forward: the recorded output is now this one's
    with pytest.raises(RuntimeError, match="latest embedding output"):
        fgm.backward(stale, lambda: ours_loss(ours, batch_for(8)))
    with pytest.raises(ValueError, match="grad_wrt"):
        mb.PGD(ours, grad_wrt="input")


def test_frozen_embeddings_are_refused(checkpoint):
    ours, _ = pair(checkpoint, mg.float32)
    mb.apply_lora(ours)
    with pytest.raises(ValueError, match="word_embeddings.*frozen"):
        mb.FGM(ours)
    with pytest.raises(ValueError, match="no parameter"):
        mb.PGD(ours, emb_name="nonexistent")


# ---- inside the fine-tuning loop --------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["fgm", "pgd"])
def test_finetune_loop_matches_torch(tmp_path, kind):
    """Two optimizer steps of `python -m mini_bert.finetune --adversarial ...` (2 micro-batches
    each) against the same steps in torch: HF model, the recipe above per micro-batch, torch's
    AdamW, clip_grad_norm_ and transformers' schedule."""
    import transformers
    from safetensors.numpy import load_file
    from test_finetune import make_bert, make_tsv

    from mini_bert import data as D
    from mini_bert import finetune as FT

    model_dir = make_bert(tmp_path / "bce", 1, 0.0)   # dropout off: both sides deterministic
    cfg = FT.TrainConfig(model=model_dir, train=make_tsv(tmp_path / "t.tsv", 32, 2),
                         dev=make_tsv(tmp_path / "d.tsv", 8, 2, 1), output=str(tmp_path / "out"),
                         batch_size=8, max_steps=2, grad_accum=2, eval_every=2, log_every=1, lr=1e-3,
                         warmup_ratio=0.0, max_length=16, seed=0, progress=False, plot=False,
                         adversarial=kind, adv_eps=0.5, adv_alpha=0.3, adv_steps=2)
    FT.train(cfg)
    ours = load_file(tmp_path / "out" / "last" / "model.safetensors")
    log = [json.loads(line) for line in open(tmp_path / "out" / "metrics.jsonl")]

    d = FT.load_data(cfg)
    tok = transformers.BertTokenizerFast.from_pretrained(model_dir)
    hf = transformers.BertForSequenceClassification.from_pretrained(model_dir)
    groups = [[p for n, p in hf.named_parameters() if (n.endswith("bias") or "LayerNorm" in n) == nd]
              for nd in (False, True)]
    opt = torch.optim.AdamW([{"params": groups[0], "weight_decay": cfg.weight_decay},
                             {"params": groups[1], "weight_decay": 0.0}], lr=cfg.lr)
    sched = transformers.get_linear_schedule_with_warmup(opt, 0, cfg.max_steps)
    stream = D.shuffled_batches(len(d["train"]), cfg.batch_size, cfg.seed)
    norms = []
    for _ in range(cfg.max_steps):
        total = None
        for _ in range(cfg.grad_accum):
            _, idx = next(stream)
            enc = tok([d["train"][i].text for i in idx], padding=True, truncation=True,
                      max_length=cfg.max_length, return_tensors="np")
            batch = {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
            y = torch.tensor(d["y_train"][idx], dtype=torch.float32)

            def loss_fn(_batch=batch, _y=y):
                logits = hf(**{k: torch.tensor(v) for k, v in _batch.items()}).logits
                bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], _y)
                return bce / cfg.grad_accum

            hf.zero_grad()   # each micro-batch's attack sees its own gradient; sums added below
            if kind == "fgm":
                torch_fgm(hf, loss_fn, cfg.adv_eps)
            else:
                torch_pgd(hf, loss_fn, cfg.adv_eps, cfg.adv_alpha, cfg.adv_steps)
            grads = [p.grad.clone() for p in hf.parameters()]
            total = grads if total is None else [a + b for a, b in zip(total, grads)]
        for p, g in zip(hf.parameters(), total):
            p.grad = g
        norms.append(torch.nn.utils.clip_grad_norm_(hf.parameters(), cfg.max_grad_norm).item())
        opt.step()
        sched.step()
    # Adam's first step is ~lr·sign(g), blind to the size of g: the gradient norms (clean +
    # adversarial, before clipping) check the sizes. float32 sums over 1 + K passes: ~1e-6 rel.
    np.testing.assert_allclose([e["grad_norm"] for e in log if e["event"] == "train"], norms,
                               rtol=1e-4)
    before = load_file(f"{model_dir}/model.safetensors")
    for k, v in hf.state_dict().items():
        # Adam moves a weight by ~lr·g/|g| at first, so a float32 rounding δ in g changes the step
        # by lr·δ/|g|: ~1e-9 for almost every entry. The few entries whose gradient is itself near
        # zero (~1e-8, the rounding level of 1 + K summed passes; seen with PGD) take a first step
        # whose size rounding can change by a good part of lr. Allow those (< 1% of a tensor) up
        # to lr/10; a wrong gradient moves most entries of a tensor by ~lr.
        diff = np.abs(ours[k] - v.numpy())
        assert (diff > 1e-6).mean() < 0.01 and diff.max() < cfg.lr / 10, (k, diff.max())
    assert np.abs(ours["bert.embeddings.word_embeddings.weight"]
                  - before["bert.embeddings.word_embeddings.weight"]).max() > 1e-4
