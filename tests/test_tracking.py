"""``--report-to tensorboard``: the event files, read back with TensorBoard's own EventAccumulator,
hold the numbers of metrics.jsonl (same tags, steps and values), per-layer histograms whose
squared sums add up to the logged gradient norm, and the hyperparameters; a resumed run's files
read as one run; a missing package or a histogram without a tracker is a clear error.
"""
from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest
from test_finetune import config, make_bert, make_tsv

from mini_bert import finetune as FT
from mini_bert import tracking

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
plugin_data_pb2 = pytest.importorskip("tensorboard.plugins.hparams.plugin_data_pb2")
pytestmark = pytest.mark.filterwarnings("ignore:.*fresh initialisation")  # the new head, expected


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracking")
    return {"base": make_bert(root / "base", None, 0.1), "train2": make_tsv(root / "train2.tsv", 48, 2),
            "dev2": make_tsv(root / "dev2.tsv", 12, 2, 1)}


def read_tb(output) -> event_accumulator.EventAccumulator:
    acc = event_accumulator.EventAccumulator(os.path.join(output, tracking.TB_DIR),
                                             size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    return acc.Reload()


def events(output, kind: str) -> list[dict]:
    return [e for e in map(json.loads, open(os.path.join(output, "metrics.jsonl"))) if e["event"] == kind]


def scalars(acc, tag: str) -> tuple[list[int], np.ndarray]:
    s = acc.Scalars(tag)
    return [e.step for e in s], np.array([e.value for e in s])


def assert_same_as_metrics(acc, output) -> None:
    """Every tag's steps and values equal metrics.jsonl's (TensorBoard stores float32)."""
    for kind, names in (("train", ("loss", "lr", "grad_norm")), ("eval", tracking.EVAL_TAGS)):
        logged = events(output, kind)
        for name in names:
            steps, values = scalars(acc, f"{kind}/{name}")
            assert steps == [e["step"] for e in logged], name
            np.testing.assert_array_equal(values, np.float32([e[name] for e in logged]))


def test_tensorboard_events_equal_metrics_jsonl(tiny, tmp_path):
    cfg = config(tiny, tmp_path / "run", report_to="tensorboard", histogram_every=2, max_steps=4)
    FT.train(cfg)
    acc = read_tb(cfg.output)
    assert set(acc.Tags()["scalars"]) == {f"train/{t}" for t in tracking.TRAIN_TAGS} | \
        {f"eval/{t}" for t in tracking.EVAL_TAGS}
    assert_same_as_metrics(acc, cfg.output)
    steps, times = scalars(acc, "train/step_time")
    assert steps == [1, 2, 3, 4] and np.all(times > 0)

    layers = ["embeddings", "encoder.layer.0", "encoder.layer.1", "pooler", "classifier"]
    assert set(acc.Tags()["histograms"]) == {f"{k}/{n}" for k in ("params", "grads") for n in layers}
    # Parameter counts per layer, from the checkpoint transformers wrote, and the new one-logit
    # BCE head's 16 weights and bias.
    from safetensors.numpy import load_file

    saved = load_file(os.path.join(tiny["base"], "model.safetensors"))
    counts = {n: sum(v.size for k, v in saved.items() if tracking.layer_of(k) == n) for n in layers[:-1]}
    counts["classifier"] = 16 + 1
    norms = {e["step"]: e["grad_norm"] for e in events(cfg.output, "train")}
    for step in (2, 4):
        grads = {n: next(h.histogram_value for h in acc.Histograms(f"grads/{n}") if h.step == step)
                 for n in layers}
        params = {n: next(h.histogram_value for h in acc.Histograms(f"params/{n}") if h.step == step)
                  for n in layers}
        assert {n: int(h.num) for n, h in params.items()} == counts
        assert {n: int(h.num) for n, h in grads.items()} == counts
        # Histograms before clipping: their squared sums add up to the logged global norm².
        total = sum(h.sum_squares for h in grads.values())
        np.testing.assert_allclose(total, norms[step] ** 2, rtol=1e-4)  # float32 sums of ~2k terms

    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert start.hparams["lr"].number_value == cfg.lr and start.hparams["report_to"].string_value == "tensorboard"
    assert start.hparams["dev_fraction"].number_value == cfg.dev_fraction


def test_resumed_run_reads_as_one(tiny, tmp_path, crashed_run):
    kw = dict(report_to="tensorboard", max_steps=4, eval_every=2)
    straight = config(tiny, tmp_path / "straight", **kw)
    FT.train(straight)
    crashed_run(config(tiny, tmp_path / "broken", **kw), 4)  # after step 3 was logged; the last checkpoint is step 2's
    broken = config(tiny, tmp_path / "broken", resume=str(tmp_path / "broken"), **kw)
    FT.train(broken)
    assert len(os.listdir(os.path.join(broken.output, tracking.TB_DIR))) == 2  # one file per process
    acc = read_tb(broken.output)  # the second file's purge_step hides the first's step 3
    assert_same_as_metrics(acc, broken.output)
    assert events(broken.output, "train") == events(straight.output, "train")


def test_missing_package_and_lonely_histograms_are_clear_errors(tiny, tmp_path, capsys, monkeypatch):
    base = ["--model", tiny["base"], "--train", tiny["train2"], "--dev", tiny["dev2"], "--no-progress",
            "--output", str(tmp_path / "out")]
    assert FT.main(base + ["--histogram-every", "5"]) == 2
    assert "--histogram-every needs --report-to" in capsys.readouterr().err.splitlines()[-1]
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else
                        find_spec(name, *a))
    assert FT.main(base + ["--report-to", "tensorboard"]) == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("error: --report-to tensorboard") and "pip install tensorboard" in last
    assert not os.path.exists(tmp_path / "out")  # nothing was written


def test_wandb_offline_run(tiny, tmp_path, monkeypatch):
    """With wandb installed (an optional extra, not in CI): an offline run is written under
    OUTPUT/wandb, holding every tag. wandb ≥ 0.2x reads its run files only in its Go core, so this
    checks the tag names in the record file's bytes (protobuf keeps strings as plain UTF-8)."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = config(tiny, tmp_path / "run", report_to="wandb", histogram_every=2, max_steps=2)
    FT.train(cfg)
    (record,) = glob.glob(os.path.join(cfg.output, tracking.WANDB_DIR, "offline-run-*", "run-*.wandb"))
    data = open(record, "rb").read()
    tags = [f"train/{t}" for t in tracking.TRAIN_TAGS] + [f"eval/{t}" for t in tracking.EVAL_TAGS] + \
        ["grads/encoder.layer.1", "params/classifier"]
    assert all(t.encode() in data for t in tags)
