"""Experiment tracking for ``mini_bert.finetune``: ``--report-to tensorboard|wandb|none``.

``metrics.jsonl`` and ``curves.png`` are always written; a tracker sends the same numbers to
TensorBoard (event files under ``OUTPUT/tb/``) or to Weights & Biases, plus what a log file shows
badly:

* every log interval: ``train/loss``, ``train/lr``, ``train/grad_norm`` (the global norm
  sqrt(Σ_p ‖g_p‖²) before clipping) and ``train/step_time`` (mean seconds per optimizer step over
  the interval), at the same steps and with the same values as the ``train`` events of
  metrics.jsonl (step_time is not in metrics.jsonl: a resumed run must rewrite that file bit for bit);
* every evaluation: ``eval/loss``, ``eval/accuracy``, ``eval/f1``;
* every ``--histogram-every N`` steps: histograms of the parameter values (``params/<layer>``) and of
  their gradients before clipping (``grads/<layer>``), one per layer (embeddings, each encoder
  layer, pooler, classifier): where gradients shrink or blow up layer by layer, it shows;
* the run's hyperparameters (TensorBoard's HParams tab), linked to the eval metrics.

Both backends are optional packages, imported only when asked for; a missing one is a UsageError
naming the pip packages (``require``, before the run touches its output directory). The
TensorBoard files are written by ``torch.utils.tensorboard``, never by hand.
"""
from __future__ import annotations

import os
import re
from collections import defaultdict

import numpy as np

from .errors import UsageError

TB_DIR = "tb"
WANDB_DIR = "wandb"
REPORT_TO = ("none", "tensorboard", "wandb")
TRAIN_TAGS = ("loss", "lr", "grad_norm", "step_time")
EVAL_TAGS = ("loss", "accuracy", "f1")


def layer_of(name: str) -> str:
    """The layer a parameter belongs to: ``bert.encoder.layer.3.attention.self.query.weight`` ->
    ``encoder.layer.3``; ``bert.embeddings.LayerNorm.bias`` -> ``embeddings``; ``classifier.weight``
    -> ``classifier``."""
    name = name.removeprefix("bert.")
    m = re.match(r"encoder\.layer\.\d+", name)
    return m.group(0) if m else name.split(".")[0]


def by_layer(model, grads: bool) -> dict[str, np.ndarray]:
    """{layer: every value (or gradient) of its trainable parameters, flattened}; parameters
    without a gradient are left out of the gradient histograms."""
    groups = defaultdict(list)
    for name, p in model.named_parameters():
        if not p.requires_grad or (grads and p.grad is None):
            continue
        groups[layer_of(name)].append((p.grad if grads else p).numpy().reshape(-1))
    return {k: np.concatenate(v) for k, v in groups.items()}


class Tracker:
    """``--report-to none``: every call does nothing (metrics.jsonl has it all)."""

    def __init__(self, histogram_every: int = 0):
        self.histogram_every = histogram_every

    def wants_histograms(self, step: int) -> bool:
        return self.histogram_every > 0 and step % self.histogram_every == 0

    def histograms(self, step: int, model) -> None:
        for layer, values in by_layer(model, grads=False).items():
            self.histogram(f"params/{layer}", values, step)
        for layer, values in by_layer(model, grads=True).items():
            self.histogram(f"grads/{layer}", values, step)

    def hparams(self, hparams: dict) -> None:
        """The run's settings (None becomes "none": the backends take numbers, strings, bools)."""

    def scalars(self, prefix: str, values: dict, step: int) -> None:
        """``prefix/name`` for every entry of ``values`` at ``step``."""

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        """One histogram of ``values`` at ``step``."""

    def close(self) -> None:
        """Flush and release the writer."""


def _plain(hparams: dict) -> dict:
    return {k: ("none" if v is None else ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v)
            for k, v in hparams.items()}


class TensorBoardTracker(Tracker):
    """Event files in ``OUTPUT/tb`` via ``torch.utils.tensorboard.SummaryWriter``. A resumed run
    purges the events after its checkpoint's step (``purge_step``), which the interrupted run wrote
    and this one repeats, as ``MetricsLog`` does for metrics.jsonl."""

    def __init__(self, output: str, histogram_every: int = 0, resumed_at: int | None = None):
        super().__init__(histogram_every)
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self._hparams = hparams
        purge = None if resumed_at is None else resumed_at + 1
        self.writer = SummaryWriter(os.path.join(output, TB_DIR), purge_step=purge)

    def hparams(self, hparams: dict) -> None:
        # The summaries add_hparams writes, but into this run rather than a new sub-run, so the
        # HParams tab links them to this run's eval/* scalars.
        metrics = {f"eval/{k}": 0.0 for k in EVAL_TAGS}
        for summary in self._hparams(_plain(hparams), metrics):
            self.writer.file_writer.add_summary(summary)

    def scalars(self, prefix: str, values: dict, step: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        self.writer.add_histogram(tag, values, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    """A W&B run in ``OUTPUT/wandb`` (offline with ``WANDB_MODE=offline``; ``wandb sync`` uploads).
    A resumed fine-tuning run starts a new W&B run, from the checkpoint's step on."""

    def __init__(self, output: str, histogram_every: int = 0, resumed_at: int | None = None):
        super().__init__(histogram_every)
        import wandb

        self.wandb = wandb
        # wandb writes its files into dir/wandb, i.e. OUTPUT/wandb.
        self.run = wandb.init(dir=output, project="mini_bert", name=os.path.basename(os.path.abspath(output)))

    def hparams(self, hparams: dict) -> None:
        self.run.config.update(_plain(hparams))

    def scalars(self, prefix: str, values: dict, step: int) -> None:
        self.run.log({f"{prefix}/{k}": v for k, v in values.items()}, step=step)

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        self.run.log({tag: self.wandb.Histogram(values)}, step=step)

    def close(self) -> None:
        self.run.finish()


PACKAGES = {"tensorboard": ("tensorboard", "torch"), "wandb": ("wandb",)}


def require(report_to: str) -> None:
    """UsageError, naming the pip packages, if ``--report-to``'s backend is not installed; checked
    before the output directory is touched, so a run that cannot report changes nothing."""
    import importlib.util

    if report_to not in REPORT_TO:
        raise UsageError(f"--report-to must be one of {', '.join(REPORT_TO)}; got {report_to!r}")
    missing = [m for m in PACKAGES.get(report_to, ()) if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"--report-to {report_to} needs the optional package(s) {', '.join(missing)} "
                         f"(pip install {' '.join(missing)})")


def make_tracker(report_to: str, output: str, histogram_every: int = 0,
                 resumed_at: int | None = None) -> Tracker:
    """The tracker ``--report-to`` names; ``resumed_at``: the step a resumed run continues from."""
    require(report_to)
    kinds = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker}
    return kinds[report_to](output, histogram_every, resumed_at) if report_to in kinds \
        else Tracker(histogram_every)
