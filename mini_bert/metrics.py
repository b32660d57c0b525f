"""Classification metrics, the run's ``metrics.jsonl`` log, and its ``curves.png``.

F1 of a class c, from its true positives, false positives and false negatives:
    precision = TP / (TP + FP),  recall = TP / (TP + FN),
    F1 = 2·precision·recall / (precision + recall) = 2TP / (2TP + FP + FN)
(the last form needs no special case when precision or recall is 0/0; F1 is 0 when 2TP+FP+FN = 0).
With two classes the reported F1 is that of class 1, the positive class; with more it is the
macro average: the unweighted mean over the classes that occur in the gold labels or predictions.
"""
from __future__ import annotations

import json
import os
from typing import Iterable

import numpy as np


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(gold)))


def class_f1(pred: np.ndarray, gold: np.ndarray, c: int) -> float:
    pred, gold = np.asarray(pred), np.asarray(gold)
    tp = int(np.sum((pred == c) & (gold == c)))
    fp = int(np.sum((pred == c) & (gold != c)))
    fn = int(np.sum((pred != c) & (gold == c)))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def f1(pred: np.ndarray, gold: np.ndarray, num_classes: int) -> float:
    """Binary F1 (of class 1) for two classes, macro-F1 otherwise."""
    if num_classes == 2:
        return class_f1(pred, gold, 1)
    present = np.union1d(np.asarray(pred), np.asarray(gold))
    return float(np.mean([class_f1(pred, gold, int(c)) for c in present]))


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl``.

    On resume, events from after the checkpoint's step (written by the interrupted run, and about
    to be repeated) are dropped first, so the file reads as one uninterrupted run. With ``path``
    None (the ranks other than 0 of a data-parallel run) nothing is read or written."""

    def __init__(self, path: str | None, keep_until_step: int | None = None):
        self.path = path
        if path is None:
            return
        if keep_until_step is None:
            open(path, "w").close()
            return
        kept = [e for e in self.read(path) if e.get("step", 0) <= keep_until_step] \
            if os.path.exists(path) else []
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(e) + "\n" for e in kept)

    def write(self, **event) -> None:
        if self.path is None:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")

    @staticmethod
    def read(path: str) -> list[dict]:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]


def plot_curves(events: Iterable[dict], path: str) -> None:
    """Training and dev loss (left), dev accuracy (right) against the optimizer step."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed: write the file only
    import matplotlib.pyplot as plt

    events = list(events)
    train = [e for e in events if e.get("event") == "train"]
    dev = [e for e in events if e.get("event") == "eval"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot([e["step"] for e in train], [e["loss"] for e in train], label="train", lw=1)
    ax_loss.plot([e["step"] for e in dev], [e["loss"] for e in dev], "o-", label="dev")
    ax_loss.set(xlabel="step", ylabel="loss", title="loss")
    ax_loss.legend()
    ax_acc.plot([e["step"] for e in dev], [e["accuracy"] for e in dev], "o-", label="accuracy")
    ax_acc.plot([e["step"] for e in dev], [e["f1"] for e in dev], "s--", label="F1")
    ax_acc.set(xlabel="step", title="dev accuracy and F1")
    ax_acc.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
