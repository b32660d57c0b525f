"""``python -m mini_bert.finetune`` fed bad input: one ``error:`` line, no traceback, nothing touched.

Every case asserts the same four things: the exit status is not 0; the last line on stderr starts
with ``error:``; no "Traceback" anywhere; and the output directory is byte for byte what it was
(every file hashed before and after; a directory that did not exist still does not). Bad flags
are drawn by hypothesis from values the issue (#13) calls invalid, so the oracle is the spec, not
the code's own checks; bad files and directories come from a table. Each case fails during
validation, before any training, so a case costs milliseconds (a few load the tiny model).
"""
from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_finetune import make_bert, make_tsv

from mini_bert import finetune as FT

MAX_POSITIONS = 64  # make_bert's max_position_embeddings


def snapshot(directory) -> dict | None:
    """{relative path: sha256} of every file (and every directory, as None); None if absent."""
    if not os.path.exists(directory):
        return None
    if os.path.isfile(directory):
        return {".": hashlib.sha256(open(directory, "rb").read()).hexdigest()}
    out = {}
    for root, dirs, files in os.walk(directory):
        for d in dirs:
            out[os.path.relpath(os.path.join(root, d), directory)] = None
        for f in files:
            path = os.path.join(root, f)
            out[os.path.relpath(path, directory)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny base BERT, 2-class data, and a finished run (the directory no failure may touch)."""
    root = tmp_path_factory.mktemp("cli")
    e = {"root": root, "model": make_bert(root / "model", None, 0.0),
         "train": make_tsv(root / "train.tsv", 16, 2), "dev": make_tsv(root / "dev.tsv", 8, 2, 1),
         "train3": make_tsv(root / "train3.tsv", 16, 3), "run": str(root / "run")}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fresh initialisation.*")
        FT.train(FT.TrainConfig(model=e["model"], train=e["train"], dev=e["dev"], output=e["run"],
                                max_steps=2, batch_size=4, max_length=16, eval_every=2, progress=False))
    return e


def base(env, output) -> list[str]:
    """The issue's base command (2 steps of 4, max length 32, BCE)."""
    return ["--model", env["model"], "--train", env["train"], "--dev", env["dev"], "--loss", "bce",
            "--max-steps", "2", "--batch-size", "4", "--max-length", "32", "--output", str(output),
            "--no-progress"]


def assert_refused(argv: list[str], output, capsys) -> str:
    """Run main(argv) in-process and check the four properties; returns the error line."""
    before = snapshot(output)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fresh initialisation.*")
        rc = FT.main(argv)
    err = capsys.readouterr().err
    assert rc != 0
    assert "Traceback" not in err
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("error: "), err
    assert snapshot(output) == before
    return last


# ---- flags: drawn from the definition of invalid ----------------------------------------
NAN, INF = float("nan"), float("inf")
floats = st.floats(allow_nan=False, allow_infinity=False, width=32)
ints = st.integers(-10**6, 10**6)
not_a_number = st.sampled_from(["", "x", "1e", "--", "0x10", "one", "1,5"])
not_an_int = st.sampled_from(["1.5", "2e3", "nan", "x", ""])
# flag -> values the issue says must be refused (lr > 0; warmup in [0, 1]; weight decay >= 0;
# max-grad-norm > 0; eval and batch sizes >= 1; max length <= max_position_embeddings).
BAD = {
    "--lr": st.one_of(floats.filter(lambda v: v <= 0), st.just(NAN), st.just(INF), st.just(-INF),
                      not_a_number),
    "--warmup-ratio": st.one_of(floats.filter(lambda v: v < 0 or v > 1), st.just(NAN), not_a_number),
    "--weight-decay": st.one_of(floats.filter(lambda v: v < 0), st.just(NAN), not_a_number),
    "--max-grad-norm": st.one_of(floats.filter(lambda v: v <= 0), st.just(NAN), not_a_number),
    "--batch-size": st.one_of(ints.filter(lambda v: v < 1), not_an_int),
    "--eval-batch-size": st.one_of(ints.filter(lambda v: v < 1), not_an_int),
    "--grad-accum": st.one_of(ints.filter(lambda v: v < 1), not_an_int),
    "--eval-every": st.one_of(ints.filter(lambda v: v < 1), not_an_int),
    "--max-length": st.one_of(st.integers(MAX_POSITIONS + 1, 10**6), st.integers(-5, 2), not_an_int),
    "--epochs": st.one_of(floats.filter(lambda v: v <= 0), st.just(NAN), not_a_number),
    "--seed": st.one_of(st.integers(max_value=-1), not_an_int),
    "--dev-fraction": st.one_of(floats.filter(lambda v: v <= 0 or v >= 1), not_a_number),
    "--loss": st.sampled_from(["mse", "BCE", "", "ce,bce"]),
    "--device": st.sampled_from(["bogus", "gpu", "cuda:x", "tpu", "", "torch:cuda:9"]),
}


def _str(v) -> str:
    return repr(v) if isinstance(v, float) and math.isfinite(v) else str(v)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_bad_flags_are_refused_before_anything(env, capsys, data):
    flag = data.draw(st.sampled_from(sorted(BAD)), label="flag")
    value = _str(data.draw(BAD[flag], label="value"))
    # `--flag=value`, so that a value starting with '-' is not taken for another flag.
    assert_refused(base(env, env["run"]) + [f"{flag}={value}"], env["run"], capsys)


# ---- files, directories and combinations: a table --------------------------------------------------

def _bad_inputs(env) -> dict[str, tuple[list[str], str]]:
    """case -> (extra argv, where the output goes: 'new' (absent), 'empty' or 'run')."""
    root = env["root"]
    (root / "empty.tsv").write_bytes(b"")
    (root / "latin1.tsv").write_bytes("sentence\tlabel\ncaf\xe9\t1\n".encode("latin-1"))
    (root / "badlabel.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t7\n")
    (root / "nocol.tsv").write_text("text\tlabel\ngood\t1\n")
    (root / "broken.jsonl").write_text('{"sentence": "good", "label": 1}\n{"sentence": \n')
    (root / "a_file").write_text("not a directory\n")
    truncated = root / "truncated_model"
    if not truncated.exists():
        make_bert(truncated, None, 0.0)
        weights = truncated / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    return {
        "model is a file": (["--model", os.path.join(env["model"], "model.safetensors")], "new"),
        "model missing": (["--model", str(root / "nowhere")], "new"),
        "model truncated": (["--model", str(truncated)], "new"),
        "train missing": (["--train", str(root / "missing.tsv")], "new"),
        "train empty": (["--train", str(root / "empty.tsv")], "new"),
        "train not utf-8": (["--train", str(root / "latin1.tsv")], "new"),
        "dev unknown label": (["--dev", str(root / "badlabel.tsv")], "new"),
        "no text column": (["--train", str(root / "nocol.tsv")], "new"),
        "malformed jsonl": (["--train", str(root / "broken.jsonl")], "new"),
        "bce with 3 classes": (["--train", env["train3"], "--dev", env["train3"]], "new"),
        "duplicate labels": (["--labels", "0,0"], "new"),
        "lora target matches nothing": (["--lora-r", "2", "--lora-targets", "nosuch"], "empty"),
        "output is a file": (["--output", str(root / "a_file")], "file"),
        "output holds a finished run": ([], "run"),
        "resume and overwrite": (["--resume", env["run"], "--overwrite"], "run"),
        "resume with other settings": (["--resume", env["run"], "--batch-size", "2"], "run"),
        "resume from nothing": (["--resume", str(root / "nowhere")], "new"),
        "unknown flag": (["--learning-rate", "1e-3"], "run"),
        "max-train-samples 0": (["--max-train-samples", "0"], "new"),
    }


CASES = ["model is a file", "model missing", "model truncated", "train missing", "train empty",
         "train not utf-8", "dev unknown label", "no text column", "malformed jsonl",
         "bce with 3 classes", "duplicate labels", "lora target matches nothing", "output is a file",
         "output holds a finished run", "resume and overwrite", "resume with other settings",
         "resume from nothing", "unknown flag", "max-train-samples 0"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_error_line_and_touches_nothing(env, tmp_path, capsys, case):
    extra, where = _bad_inputs(env)[case]
    output = {"new": tmp_path / "out", "empty": tmp_path, "run": env["run"],
              "file": env["root"] / "a_file"}[where]
    argv = base(env, output) + extra
    print(case, "->", assert_refused(argv, output, capsys))


def test_cuda_without_a_gpu_is_an_error_line(env, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    line = assert_refused(base(env, env["run"]) + ["--device", "cuda"], env["run"], capsys)
    assert "no CUDA GPU" in line


def test_help_exits_0(capsys):
    assert FT.main(["--help"]) == 0 and "--max-length" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["lr -1", "model is a file", "output is a file"])
def test_real_process(env, tmp_path, case):
    """The same properties through a real interpreter: exit status 2 and stderr as a user sees it."""
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory\n")
    output = a_file if case == "output is a file" else tmp_path / "out"
    extra = {"lr -1": ["--lr", "-1"],
             "model is a file": ["--model", os.path.join(env["model"], "model.safetensors")],
             "output is a file": []}[case]
    before = snapshot(output)
    p = subprocess.run([sys.executable, "-m", "mini_bert.finetune", *base(env, output), *extra],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert p.stderr.rstrip("\n").splitlines()[-1].startswith("error: "), p.stderr
    assert snapshot(output) == before
