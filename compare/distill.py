"""Knowledge distillation on SST-2: a 6-layer teacher vs 3-layer students, same data and steps.

    python -m compare.distill [--train-samples 2000] [--epochs 1] [--student-layers 3]
                              [--temperature 2] [--alpha 0.5]

Every run is ``mini_bert.finetune.train`` with the same seed, the same first ``--train-samples``
SST-2 training sentences in the same order, batch 32, max length 64, BCE (one logit), one
evaluation on the full SST-2 dev set (872 sentences) at the end. The rows:

- ``teacher``: all-MiniLM-L6-v2 (6 layers) fine-tuned;
- ``distilled``: K layers copied from the fine-tuned teacher's 0, 2, 4 (DistilBERT's choice),
  trained on alpha·KD + (1 − alpha)·BCE (``--distill-from``);
- ``same init, labels only``: the same student, the same steps, alpha = 0 (no teacher signal);
- ``pre-trained layers, labels only``: layers 0, 2, 4 of the *pre-trained* MiniLM, fine-tuned
  plainly: what a small model gets without any teacher.

Forward speed: sentences per second on one batch of 64 dev sentences (max length 64) under
``no_grad``, the teacher and the distilled student timed alternately, median of 9 each, in this
process. The CPU is shared and noisy: the ratio means more than either number.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings

from mini_bert.testing import SST2_HINT, shared_sst2_dir

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "distill.md")


def pretrained_student(out: str, k: int) -> str:
    """A K-layer checkpoint from the pre-trained MiniLM's layers 0, 2, 4, ... (fresh BCE head)."""
    from mini_bert import distill
    from mini_bert import finetune as FT
    from mini_bert.checkpoint import default_model_dir
    from mini_bert.model import BertForSequenceClassification
    from mini_bert.tokenizer import BertTokenizer

    import minigrad as mg

    mg.manual_seed(42)  # the fresh head
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fresh head's warning
        base = BertForSequenceClassification.from_pretrained(default_model_dir(),
                                                             **FT.head_config("bce", ["0", "1"]))
    student, _ = distill.build_student(base, k)
    student.save_pretrained(out)
    BertTokenizer.from_pretrained(default_model_dir()).save_pretrained(out)
    return out


def forward_speed(dirs: dict[str, str], sentences: list, repeats: int = 9) -> dict[str, float]:
    """Sentences per second of each checkpoint's forward pass on one batch, timed alternately."""
    import minigrad as mg
    from mini_bert import data as D
    from mini_bert.model import BertForSequenceClassification
    from mini_bert.tokenizer import BertTokenizer

    models = {k: BertForSequenceClassification.from_pretrained(d) for k, d in dirs.items()}
    enc = D.encode_batch(BertTokenizer.from_pretrained(next(iter(dirs.values()))), sentences, 64)
    times: dict[str, list[float]] = {k: [] for k in models}
    with mg.no_grad():
        for _ in range(repeats):
            for k, m in models.items():
                t0 = time.perf_counter()
                m(**enc)
                times[k].append(time.perf_counter() - t0)
    return {k: len(sentences) / statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m compare.distill", description=__doc__.split("\n")[0])
    p.add_argument("--train-samples", type=int, default=2000)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--student-layers", type=int, default=3)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--dev-samples", type=int, default=None, help="first N dev sentences (default: all)")
    p.add_argument("--data", default=shared_sst2_dir(), help="folder with train.tsv and dev.tsv "
                   f"(default: SST-2, from {SST2_HINT})")
    p.add_argument("--out", default="runs/distill", help="scratch runs (replaced)")
    p.add_argument("--results", default=RESULTS)
    args = p.parse_args(argv)
    if args.data is None:
        p.error(f"SST-2 not found ({SST2_HINT}); pass --data")

    from mini_bert import data as D
    from mini_bert import finetune as FT
    from mini_bert.model import BertForSequenceClassification

    common = dict(train=os.path.join(args.data, "train.tsv"), dev=os.path.join(args.data, "dev.tsv"),
                  max_train_samples=args.train_samples, epochs=args.epochs, batch_size=32,
                  max_length=64, eval_every=10**9, log_every=10, seed=42, progress=False, plot=False,
                  lr=args.lr, overwrite=True, max_dev_samples=args.dev_samples)
    k = args.student_layers
    teacher_dir = os.path.join(args.out, "teacher")
    runs = [
        ("teacher (MiniLM, 6 layers)", dict(output=teacher_dir)),
        (f"distilled, {k} layers (T={args.temperature:g}, α={args.alpha:g})",
         dict(distill_from=os.path.join(teacher_dir, "last"), student_layers=k,
              temperature=args.temperature, alpha=args.alpha)),
        (f"same init, labels only (α=0), {k} layers",
         dict(distill_from=os.path.join(teacher_dir, "last"), student_layers=k, alpha=0.0)),
        (f"pre-trained layers 0,2,4.., labels only, {k} layers",
         dict(model=os.path.join(args.out, "pretrained_student_init"))),
    ]
    rows = []
    for i, (name, settings) in enumerate(runs):
        if "model" in settings:
            pretrained_student(settings["model"], k)
        settings.setdefault("output", os.path.join(args.out, f"run{i}"))
        t0 = time.perf_counter()
        summary = FT.train(FT.TrainConfig(**common, **settings))
        params = sum(q.numel() for q in BertForSequenceClassification.from_pretrained(
            summary["last_dir"]).parameters())
        rows.append(dict(run=name, accuracy=summary["final"]["accuracy"], f1=summary["final"]["f1"],
                         params=params, steps=summary["step"], seconds=time.perf_counter() - t0,
                         last_dir=summary["last_dir"]))
        print(json.dumps(rows[-1]), flush=True)

    dev = D.read_examples(common["dev"], text_column="sentence", label_column="label")[:64]
    speed = forward_speed({"teacher": rows[0]["last_dir"], "student": rows[1]["last_dir"]}, dev)
    ratio = speed["student"] / speed["teacher"]
    lines = ["| run | dev acc | dev F1 | parameters | steps | forward (sentences/s) | run s |",
             "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows):
        fwd = f"{speed['teacher']:.0f}" if i == 0 else f"{speed['student']:.0f} ({ratio:.2f}x)"
        lines.append(f"| {r['run']} | {r['accuracy']:.4f} | {r['f1']:.4f} | {r['params']:,} | "
                     f"{r['steps']} | {fwd} | {r['seconds']:.0f} |")
    table = "\n".join(lines)
    print(table)
    command = (f"python -m compare.distill --train-samples {args.train_samples} --epochs {args.epochs:g} "
               f"--student-layers {k} --temperature {args.temperature:g} --alpha {args.alpha:g}")
    os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
    with open(args.results, "w", encoding="utf-8") as f:
        f.write(f"# Knowledge distillation on SST-2\n\n    {command}\n\n{table}\n\n"
                f"Dev: the full SST-2 dev set (872 sentences). Forward speed: one batch of 64 dev "
                f"sentences, max length 64, numpy backend, median of 9 interleaved timings; the "
                f"machine was shared with other jobs, so the ratio is the figure to read. Rows "
                f"3-4 share every student setting except the one each names; see the module "
                f"docstring of compare/distill.py.\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
