"""The same fine-tuning recipe in mini_bert and in HF transformers + torch: dev metrics, wall time.

    python -m compare.finetune [--model DIR] [--train FILE] [--dev FILE] [--epochs 1]
        [--batch-size 32] [--lr 5e-5] [--warmup-ratio 0.06] [--weight-decay 0.01]
        [--max-grad-norm 1.0] [--max-length 64] [--max-train-samples N] [--seed S]

Ours is ``mini_bert.finetune.train``. HF's is the plain torch loop below, which takes the same
steps: BertForSequenceClassification with a one-logit BCE head (``multi_label_classification``)
whose initial values are copied from ours; the same batches in the same order (our seeded
shuffle); torch's AdamW with the same two groups (no decay on biases and LayerNorm weights);
transformers' linear warmup-then-decay schedule; torch's ``clip_grad_norm_``. Dropout stays on
(it is part of the recipe) and each library draws its own masks, so the two runs differ by that
randomness as well as by rounding: expect close dev metrics, not equal ones. Default data: SST-2
(``mini_bert.testing.shared_sst2_dir()``; 67k training sentences; ~2100 steps per epoch at batch size 32).
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import warnings

import numpy as np
from tqdm.auto import tqdm

from mini_bert import data as D
from mini_bert import finetune as FT
from mini_bert.errors import UserError, fail
from mini_bert.metrics import accuracy, f1
from mini_bert.testing import SST2_HINT, shared_sst2_dir



def hf_param_groups(model, weight_decay: float) -> list[dict]:
    """torch AdamW groups by the rule our loop uses: decay all but biases and LayerNorm weights."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def hf_evaluate(model, tok, examples, y: np.ndarray, cfg: FT.TrainConfig, num_classes: int) -> dict:
    """Mean dev loss, accuracy and F1, in eval mode, without gradients."""
    import torch

    model.eval()
    total, preds = 0.0, []
    with torch.no_grad():
        for s in range(0, len(examples), cfg.eval_batch_size):
            yb = y[s:s + cfg.eval_batch_size]
            out = model(**_encode(tok, examples[s:s + cfg.eval_batch_size], cfg.max_length),
                        labels=torch.from_numpy(FT.targets(yb, cfg.loss)))
            total += out.loss.item() * len(yb)
            preds.append(FT.predictions(out.logits.numpy(), cfg.loss))
    model.train()
    pred = np.concatenate(preds)
    return {"loss": total / len(examples), "accuracy": accuracy(pred, y),
            "f1": f1(pred, y, num_classes)}


def _encode(tok, examples, max_length: int) -> dict:
    pairs = [e.text_pair for e in examples] if examples[0].text_pair is not None else None
    enc = tok([e.text for e in examples], text_pair=pairs, padding=True, truncation=True,
              max_length=max_length, return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask")}


def hf_train(model, tok, cfg: FT.TrainConfig, d: dict, evaluate: bool = True) -> dict:
    """Train ``model`` (HF, modified in place) as ``FT.train(cfg)`` trains ours, on the data ``d``
    of ``FT.load_data(cfg)``; evaluate on its dev set at the end. Returns each step's loss and
    gradient norm (before clipping), the final dev metrics and the seconds taken."""
    import torch
    import transformers

    steps = FT.total_steps(cfg, len(d["train"]))
    opt = torch.optim.AdamW(hf_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    sched = transformers.get_linear_schedule_with_warmup(opt, math.ceil(cfg.warmup_ratio * steps),
                                                         steps)
    stream = D.shuffled_batches(len(d["train"]), cfg.batch_size, cfg.seed)
    limit = cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf
    losses, norms, t0 = [], [], time.perf_counter()
    model.train()
    for _ in tqdm(range(steps), desc="HF train", disable=not cfg.progress):
        opt.zero_grad()
        step_loss = 0.0
        for _ in range(cfg.grad_accum):
            _, idx = next(stream)
            y = torch.from_numpy(FT.targets(d["y_train"][idx], cfg.loss))
            loss = model(**_encode(tok, [d["train"][i] for i in idx], cfg.max_length), labels=y).loss
            (loss / cfg.grad_accum).backward()
            step_loss += loss.item() / cfg.grad_accum
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), limit)))
        opt.step()
        sched.step()
        losses.append(step_loss)
    final = hf_evaluate(model, tok, d["dev"], d["y_dev"], cfg, len(d["names"])) if evaluate else None
    return {"losses": losses, "grad_norms": norms, "final": final,
            "seconds": time.perf_counter() - t0, "steps": steps}


def compare(cfg: FT.TrainConfig) -> dict:
    """Both runs of ``cfg``; returns {"ours": ..., "hf": ..., "majority": baseline accuracy}."""
    import transformers

    from mini_bert.checkpoint import default_model_dir

    from mini_bert.testing import load_hf, load_ours

    d = FT.load_data(cfg)
    cfg.model = cfg.model or default_model_dir()
    t0 = time.perf_counter()
    with warnings.catch_warnings():  # the new head's "fresh initialisation" notice: expected here
        warnings.filterwarnings("ignore", message=".*fresh initialisation.*")
        ours = FT.train(cfg)
    ours["wall"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    # The head our run started from: the same seed and loading order as FT.train.
    head = load_ours(cfg.model, cfg.loss, d["names"], seed=cfg.seed)
    hf = load_hf(cfg.model, cfg.loss, d["names"], head_from=head, dropout=True)
    del head
    tok = transformers.BertTokenizerFast.from_pretrained(cfg.model)
    theirs = hf_train(hf, tok, cfg, d)
    theirs["wall"] = time.perf_counter() - t0
    majority = np.bincount(d["y_train"]).argmax()
    return {"ours": ours, "hf": theirs, "majority": float(np.mean(d["y_dev"] == majority)),
            "n_dev": len(d["dev"]), "n_train": len(d["train"])}


def report(r: dict) -> None:
    ours, hf = r["ours"], r["hf"]
    print(f"\n{r['n_train']} training examples, {hf['steps']} steps; {r['n_dev']} dev examples "
          f"(majority-class accuracy {r['majority']:.4f})")
    print(f"{'':<22}{'mini_bert':>14}{'HF + torch':>14}")
    for k in ("accuracy", "f1", "loss"):
        print(f"{'dev ' + k:<22}{ours['final'][k]:>14.4f}{hf['final'][k]:>14.4f}")
    print(f"{'wall time (s)':<22}{ours['wall']:>14.1f}{hf['wall']:>14.1f}")
    print(f"{'loop s/step':<22}{ours['seconds'] / hf['steps']:>14.3f}"
          f"{hf['seconds'] / hf['steps']:>14.3f}")
    diff = ours["final"]["accuracy"] - hf["final"]["accuracy"]
    print(f"accuracy difference (mini_bert − HF): {diff:+.4f} "
          f"({round(diff * r['n_dev']):+d} of {r['n_dev']} dev examples)")
    print("(wall time: loading, training and the final evaluation; ours also writes its "
          "checkpoints. Loop time includes the evaluation.)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m compare.finetune",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="checkpoint directory (default: the packaged all-MiniLM-L6-v2)")
    sst2 = shared_sst2_dir()
    p.add_argument("--train", default=sst2 and str(sst2 / "train.tsv"), help="(default: SST-2's)")
    p.add_argument("--dev", default=sst2 and str(sst2 / "dev.tsv"), help="(default: SST-2's)")
    p.add_argument("--loss", choices=["bce", "ce"], default="bce")
    for flag, kind, default in (("--epochs", float, 1.0), ("--batch-size", int, 32),
                                ("--lr", float, 5e-5), ("--warmup-ratio", float, 0.06),
                                ("--weight-decay", float, 0.01), ("--max-grad-norm", float, 1.0),
                                ("--max-length", int, 64), ("--max-train-samples", int, None),
                                ("--max-dev-samples", int, None), ("--seed", int, 42)):
        p.add_argument(flag, type=kind, default=default, help=f"(default: {default})")
    p.add_argument("--device", default="cpu", help="ours: cpu (numpy), torch:cpu or cuda")
    p.add_argument("--output", help="directory for our run's checkpoints (default: a temporary one)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    a = p.parse_args(argv)
    if a.train is None or a.dev is None:
        print(f"error: SST-2 not found ({SST2_HINT}); pass --train and --dev for other data",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="compare-finetune-") as tmp:
        cfg = FT.TrainConfig(
            model=a.model, train=a.train, dev=a.dev, loss=a.loss, epochs=a.epochs,
            batch_size=a.batch_size, lr=a.lr, warmup_ratio=a.warmup_ratio,
            weight_decay=a.weight_decay, max_grad_norm=a.max_grad_norm, max_length=a.max_length,
            max_train_samples=a.max_train_samples, max_dev_samples=a.max_dev_samples,
            seed=a.seed, device=a.device, output=a.output or tmp, progress=a.progress,
            eval_every=10**9, plot=False)  # evaluate once, at the end, as the HF loop does
        try:
            report(compare(cfg))
        except UserError as e:
            return fail(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
