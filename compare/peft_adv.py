"""Budget comparisons on SST-2: LoRA, prompt tuning, head-only vs full fine-tuning, FGM / PGD vs
plain, same data and steps.

    python -m compare.peft_adv [--runs full,lora,prompt,head,fgm] [--train-samples 2000] [--epochs 1]

Every run is ``mini_bert.finetune.train`` on all-MiniLM-L6-v2 with the same seed, the same first
``--train-samples`` SST-2 training sentences in the same order, batch 32, max length 64, one
evaluation on the full SST-2 dev set (872 sentences) at the end. It prints (and writes to
``--out``/results.md) one row per run: dev accuracy and F1, trainable parameters, seconds per
optimizer step (training only: evaluation and checkpoint writing excluded) and for the whole
run; ``results.json`` holds the same rows and the command. The CPU is shared and noisy: compare
step times within one invocation.

Runs: ``full`` (every weight, --lr), ``lora`` (r=8 on query/value + head, --lora-lr: LoRA is
usually run at a ~10x larger rate, its update starts at 0 and is small), ``prompt`` (20 virtual
tokens + head, --prompt-lr: soft prompts are trained at rates near 1e-2, as in Lester et al.),
``head`` (the classifier alone, the BERT frozen, --head-lr), ``fgm`` and ``pgd`` (full
fine-tuning plus the adversarial term, eps=1, PGD alpha=0.3, K=3).
"""
from __future__ import annotations

import argparse
import json
import os
import time

from mini_bert.testing import SST2_HINT, shared_sst2_dir

RUNS = {
    "full": {},
    "lora": {"lora_r": 8, "lora_alpha": 16.0, "lora_targets": "query,value"},
    "prompt": {"prompt_tuning": 20},
    "head": {"head_only": True},
    "fgm": {"adversarial": "fgm", "adv_eps": 1.0},
    "pgd": {"adversarial": "pgd", "adv_eps": 1.0, "adv_alpha": 0.3, "adv_steps": 3},
}


def trainable_params(settings: dict) -> tuple[int, int]:
    """(trainable, total) parameters of the run's model (the head as the loop builds it)."""
    import warnings

    from mini_bert import finetune as FT
    from mini_bert import peft
    from mini_bert.checkpoint import default_model_dir
    from mini_bert.model import BertForSequenceClassification

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fresh head's warning
        model = BertForSequenceClassification.from_pretrained(
            default_model_dir(), **FT.head_config("bce", ["0", "1"]))
    if settings.get("lora_r"):
        peft.apply_lora(model, settings["lora_targets"], settings["lora_r"], settings["lora_alpha"])
    if settings.get("prompt_tuning"):
        model = peft.apply_prompt_tuning(model, settings["prompt_tuning"])
    if settings.get("head_only"):
        model.bert.requires_grad_(False)
    return peft.count_trainable(model), sum(p.numel() for p in model.parameters())


def time_outside_training(FT) -> dict:
    """Wrap the loop's evaluation and checkpoint writing to add up their seconds, so that s/step
    counts training steps only (one 872-sentence evaluation costs several steps' worth)."""
    spent = {"seconds": 0.0}

    def timed(fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent["seconds"] += time.perf_counter() - t0
        return wrapper

    FT.evaluate, FT.atomic_dir = timed(FT.evaluate), timed(FT.atomic_dir)
    return spent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m compare.peft_adv", description=__doc__.split("\n")[0])
    p.add_argument("--runs", default="full,lora,fgm", help=f"comma list of {sorted(RUNS)}")
    p.add_argument("--train-samples", type=int, default=2000)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=5e-5, help="full fine-tuning (and fgm/pgd) rate")
    p.add_argument("--lora-lr", type=float, default=5e-4)
    p.add_argument("--prompt-lr", type=float, default=1e-2)
    p.add_argument("--head-lr", type=float, default=1e-3)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--data", default=shared_sst2_dir(), help="folder with train.tsv and dev.tsv "
                   f"(default: SST-2, from {SST2_HINT})")
    p.add_argument("--out", default="runs/peft_adv")
    args = p.parse_args(argv)
    if args.data is None:
        p.error(f"SST-2 not found ({SST2_HINT}); pass --data")

    from mini_bert import finetune as FT

    names = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = [r for r in names if r not in RUNS]
    if unknown:
        p.error(f"unknown run(s) {unknown}; choose from {sorted(RUNS)}")
    spent, rows = time_outside_training(FT), []
    rates = {"lora": args.lora_lr, "prompt": args.prompt_lr, "head": args.head_lr}
    for name in names:
        settings = RUNS[name]
        cfg = FT.TrainConfig(
            train=os.path.join(args.data, "train.tsv"), dev=os.path.join(args.data, "dev.tsv"),
            max_train_samples=args.train_samples, epochs=args.epochs, batch_size=32,
            max_length=args.max_length, eval_every=10**9, log_every=10, seed=42, progress=False,
            plot=False, lr=rates.get(name, args.lr), output=os.path.join(args.out, name),
            overwrite=True,  # --out holds this report's own scratch runs
            **settings)
        t0, outside = time.perf_counter(), spent["seconds"]
        summary = FT.train(cfg)
        train_seconds = summary["seconds"] - (spent["seconds"] - outside)
        trainable, total = trainable_params(settings)
        rows.append(dict(run=name, lr=cfg.lr, accuracy=summary["final"]["accuracy"],
                         f1=summary["final"]["f1"], trainable=trainable, total=total,
                         steps=summary["step"], s_per_step=train_seconds / summary["step"],
                         seconds=time.perf_counter() - t0))
        print(json.dumps(rows[-1]), flush=True)

    header = ("| run | lr | dev acc | dev F1 | trainable params | steps | s/step | total s |\n"
              "|---|---|---|---|---|---|---|---|")
    lines = [header] + [
        f"| {r['run']} | {r['lr']:g} | {r['accuracy']:.4f} | {r['f1']:.4f} | "
        f"{r['trainable']:,} ({100 * r['trainable'] / r['total']:.2f}%) | {r['steps']} | "
        f"{r['s_per_step']:.2f} | {r['seconds']:.0f} |" for r in rows]
    table = "\n".join(lines)
    print(table)
    os.makedirs(args.out, exist_ok=True)
    command = (f"python -m compare.peft_adv --runs {args.runs} --train-samples {args.train_samples} "
               f"--epochs {args.epochs} --max-length {args.max_length}")
    with open(os.path.join(args.out, "results.md"), "w", encoding="utf-8") as f:
        f.write(f"{command}\n\n{table}\n")
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as f:  # lesson 19 reads it
        json.dump({"command": command, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
