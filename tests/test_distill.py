"""Knowledge distillation (issue 14 §1): ``kd_loss`` against torch's ``kl_div`` and autograd,
the student built from the teacher's layers against HF's model with the same layers kept, and
``finetune --distill-from``: a student transformers loads with the same logits, and bad input
refused with one error line that touches nothing."""
from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch
import transformers
from test_cli_errors import assert_refused
from test_finetune import make_bert, make_tsv

import minigrad as mg
from mini_bert import distill
from mini_bert import finetune as FT

TEMPERATURES = (1.0, 2.0, 4.0)


def _torch_kd(s: torch.Tensor, t: torch.Tensor, T: float) -> torch.Tensor:
    """The issue's oracle: kl_div(log q, log p, log_target=True, batchmean)·T², with one-logit
    heads as the two-class logits (0, z)."""
    if s.shape[1] == 1:
        s, t = (torch.cat([torch.zeros_like(z), z], dim=1) for z in (s, t))
    return torch.nn.functional.kl_div(torch.log_softmax(s / T, dim=1), torch.log_softmax(t / T, dim=1),
                                      reduction="batchmean", log_target=True) * T ** 2


def _logits(classes: int, seed: int, scale: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.normal(0, scale, (6, classes)).astype(np.float32),
            rng.normal(0, scale, (6, classes)).astype(np.float32))


@pytest.mark.parametrize("classes", [1, 2, 5])
@pytest.mark.parametrize("T", TEMPERATURES)
def test_kd_loss_and_gradient_equal_torch(classes, T):
    s, t = _logits(classes, seed=classes)
    ours = mg.tensor(s, requires_grad=True)
    loss = distill.kd_loss(ours, mg.tensor(t), T)
    loss.backward()
    ref_s = torch.tensor(s, requires_grad=True)
    ref = _torch_kd(ref_s, torch.tensor(t), T)
    ref.backward()
    # float32: a sum of ~12 terms of size ~1, each with a few ulp of log-softmax rounding.
    np.testing.assert_allclose(loss.item(), ref.item(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.grad.numpy(), ref_s.grad.numpy(), rtol=1e-4, atol=1e-6)
    # The docstring's closed form, prediction minus target: (T/N)(softmax(s/T) − softmax(t/T)),
    # for one logit (T/N)(σ(s/T) − σ(t/T)); computed in torch.
    st_, tt = torch.tensor(s, dtype=torch.float64) / T, torch.tensor(t, dtype=torch.float64) / T
    q, p = ((torch.sigmoid(st_), torch.sigmoid(tt)) if classes == 1
            else (torch.softmax(st_, 1), torch.softmax(tt, 1)))
    np.testing.assert_allclose(ours.grad.numpy(), (T / len(s) * (q - p)).numpy(), rtol=1e-4, atol=1e-6)


def test_one_logit_kd_is_the_bernoulli_kl():
    """The (0, z) form is the KL between Bernoulli(σ(t/T)) and Bernoulli(σ(s/T)), written out."""
    s, t = _logits(1, seed=7)
    for T in TEMPERATURES:
        p = torch.sigmoid(torch.tensor(t, dtype=torch.float64) / T)
        q = torch.sigmoid(torch.tensor(s, dtype=torch.float64) / T)
        kl = (p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()).sum() / len(s) * T ** 2
        ours = distill.kd_loss(mg.tensor(s.astype(np.float64)), mg.tensor(t.astype(np.float64)), T)
        np.testing.assert_allclose(ours.item(), kl.item(), rtol=1e-10)


@pytest.mark.parametrize("classes", [1, 3])
@pytest.mark.parametrize("reduction", ["batchmean", "sum"])
def test_kd_loss_gradcheck_float64(classes, reduction):
    s, t = (a.astype(np.float64) for a in _logits(classes, seed=3))
    teacher = mg.tensor(t)
    for T in TEMPERATURES:
        mg.gradcheck(lambda z: distill.kd_loss(z, teacher, T, reduction), [mg.tensor(s, requires_grad=True)])


def test_kd_loss_is_finite_where_the_teacher_is_certain():
    """Teacher logits 200 apart: p = 0 in float for one class; e^(log p)·log p keeps it 0, not NaN."""
    s = mg.tensor(np.array([[0.0, 1.0]], np.float32), requires_grad=True)
    loss = distill.kd_loss(s, mg.tensor(np.array([[200.0, -200.0]], np.float32)), 1.0)
    loss.backward()
    ref = _torch_kd(torch.tensor([[0.0, 1.0]]), torch.tensor([[200.0, -200.0]]), 1.0)
    assert np.isfinite(loss.item()) and np.isfinite(ours_grad := s.grad.numpy()).all(), ours_grad
    np.testing.assert_allclose(loss.item(), ref.item(), rtol=1e-5)


def test_kd_loss_refuses_bad_arguments():
    z = mg.zeros((2, 3))
    for T in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            distill.kd_loss(z, z, T)
    with pytest.raises(ValueError, match="reduction"):
        distill.kd_loss(z, z, 1.0, "mean")
    with pytest.raises(ValueError, match="same shape"):
        distill.kd_loss(z, mg.zeros((2, 4)), 1.0)


def test_student_layer_ids():
    assert [distill.student_layer_ids(6, k) for k in (1, 2, 3)] == [[0], [0, 2], [0, 2, 4]]
    assert distill.student_layer_ids(6, 6) == list(range(6))
    assert distill.student_layer_ids(6, 4) == [0, 1, 2, 4]


# ---- the student, against HF ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    return {"root": root, "teacher1": make_bert(root / "teacher1", 1, 0.0),
            "teacher2": make_bert(root / "teacher2", 2, 0.0), "base": make_bert(root / "base", None, 0.0),
            "train": make_tsv(root / "train.tsv", 16, 2), "dev": make_tsv(root / "dev.tsv", 8, 2, 1)}


def _ids(seed: int = 0) -> np.ndarray:
    ids = np.random.default_rng(seed).integers(5, 20, (3, 7))
    ids[:, 0] = 2
    return ids


def test_student_equals_hf_teacher_with_the_same_layers_kept(env):
    """The oracle: HF's teacher with its encoder cut to layers [0] (of 2), nothing else changed."""
    teacher = distill.load_teacher(env["teacher2"])
    student, ids = distill.build_student(teacher, 1)
    assert ids == [0] and student.config.num_hidden_layers == 1
    hf = transformers.BertForSequenceClassification.from_pretrained(env["teacher2"]).eval()
    hf.bert.encoder.layer = torch.nn.ModuleList([hf.bert.encoder.layer[i] for i in ids])
    x = _ids()
    with mg.no_grad(), torch.no_grad():
        ours = student.eval()(x).logits.numpy()
        ref = hf(torch.tensor(x)).logits.numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)  # float32 through one layer


# ---- the command line -------------------------------------------------------------------------------

def _argv(env, output, teacher: str, *extra: str, loss: str = "bce") -> list[str]:
    return ["--distill-from", teacher, "--train", env["train"], "--dev", env["dev"], "--loss", loss,
            "--max-steps", "2", "--batch-size", "4", "--max-length", "16", "--eval-every", "2",
            "--output", str(output), "--no-progress", "--no-plot", *extra]


@pytest.mark.parametrize("loss,teacher", [("bce", "teacher1"), ("ce", "teacher2")])
def test_cli_student_loads_in_transformers_with_the_same_logits(env, tmp_path, capsys, loss, teacher):
    out = tmp_path / "run"
    assert FT.main(_argv(env, out, env[teacher], "--student-layers", "1", "--temperature", "2",
                         "--alpha", "0.7", "--lr", "1e-2", loss=loss)) == 0
    err = capsys.readouterr().err
    assert "student layers 0 of the teacher's 2" in err
    best = out / "last"
    assert json.loads((best / "config.json").read_text())["num_hidden_layers"] == 1
    hf = transformers.BertForSequenceClassification.from_pretrained(best).eval()
    ours = FT.BertForSequenceClassification.from_pretrained(best)
    x = _ids(1)
    with mg.no_grad(), torch.no_grad():
        np.testing.assert_allclose(ours(x).logits.numpy(), hf(torch.tensor(x)).logits.numpy(),
                                   rtol=1e-4, atol=1e-5)
    # It trained: the student's weights moved away from the teacher's layer 0.
    teacher_w = transformers.BertForSequenceClassification.from_pretrained(env[teacher]).bert.encoder.layer[0]
    assert not torch.equal(hf.bert.encoder.layer[0].attention.self.query.weight,
                           teacher_w.attention.self.query.weight)


def test_cli_loss_is_the_mixture(env, tmp_path, monkeypatch):
    """The loop's loss is alpha·KD + (1 − alpha)·BCE, the teacher's and student's logits recomputed
    here with HF (the student as built: the first step's loss, before any update)."""
    seen = []
    original = FT.training_loss
    monkeypatch.setattr(FT, "training_loss", lambda r, b, y: seen.append((b, y)) or original(r, b, y))
    cfg = FT.parse_args(_argv(env, tmp_path / "run", env["teacher1"], "--student-layers", "1",
                              "--alpha", "0.3", "--temperature", "4", "--lr", "1e-2"))
    r = FT.setup(cfg)
    batch, yb = [r.d["train"][i] for i in range(4)], r.d["y_train"][:4]
    loss = FT.training_loss(r, batch, yb).item()
    enc = {k: torch.tensor(v) for k, v in FT.D.encode_batch(r.tok, batch, 16).items()}
    hf_t = transformers.BertForSequenceClassification.from_pretrained(env["teacher1"]).eval()
    hf_s = transformers.BertForSequenceClassification.from_pretrained(env["teacher1"]).eval()
    hf_s.bert.encoder.layer = torch.nn.ModuleList([hf_s.bert.encoder.layer[0]])
    with torch.no_grad():
        t, s = hf_t(**enc).logits, hf_s(**enc).logits
        task = torch.nn.functional.binary_cross_entropy_with_logits(s, torch.tensor(yb, dtype=s.dtype)[:, None])
        ref = 0.3 * _torch_kd(s, t, 4.0) + 0.7 * task
    np.testing.assert_allclose(loss, ref.item(), rtol=1e-4)


def _bad(env) -> dict[str, list[str]]:
    missing, teacher = str(env["root"] / "nowhere"), env["teacher1"]
    return {
        "teacher missing": _argv(env, None, missing),
        "teacher is a base model": _argv(env, None, env["base"]),
        "K = 0": _argv(env, None, teacher, "--student-layers", "0"),
        "K > teacher layers": _argv(env, None, teacher, "--student-layers", "3"),
        "num_labels mismatch": _argv(env, None, env["teacher2"]),
        "alpha < 0": _argv(env, None, teacher, "--alpha=-0.1"),
        "alpha > 1": _argv(env, None, teacher, "--alpha", "1.5"),
        "alpha nan": _argv(env, None, teacher, "--alpha", "nan"),
        "T = 0": _argv(env, None, teacher, "--temperature", "0"),
        "T < 0": _argv(env, None, teacher, "--temperature=-2"),
        "temperature without --distill-from": ["--train", env["train"], "--temperature", "2"],
        "student-layers without --distill-from": ["--train", env["train"], "--student-layers", "3"],
        "--model with --distill-from": _argv(env, None, teacher, "--model", env["base"]),
        "lora with --distill-from": _argv(env, None, teacher, "--lora-r", "2"),
    }


@pytest.mark.parametrize("case", ["teacher missing", "teacher is a base model", "K = 0", "K > teacher layers",
                                  "num_labels mismatch", "alpha < 0", "alpha > 1", "alpha nan", "T = 0", "T < 0",
                                  "temperature without --distill-from", "student-layers without --distill-from",
                                  "--model with --distill-from", "lora with --distill-from"])
def test_cli_refuses_bad_distillation_input(env, tmp_path, capsys, case):
    out = tmp_path / "out"
    argv = [str(a) for a in _bad(env)[case]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        line = assert_refused(argv + ["--output", str(out)], out, capsys)
    assert not os.path.exists(out), line
    print(case, "->", line)
