"""Text data augmentation: seeded, deterministic functions text -> text, and their use on a
training set (the source article's §8.4 "数据增强").

Words are the text's whitespace-separated pieces (SST-2 is already tokenised that way), so every
operation moves, drops or adds whole words, never WordPiece fragments. With n words and a rate
p, each operation makes k = max(1, round(p·n)) edits:

* EDA (Wei & Zou, 2019), three of its four operations:
  - ``random_swap``: k times, exchange two words at random positions;
  - ``random_deletion``: drop k words (at least one word is always kept);
  - ``random_insertion``: insert k words drawn from the tokenizer's vocabulary (whole words of
    letters only: no ``##`` pieces, no ``[CLS]``-style specials) at random positions.
* ``neighbor_substitution``: replace k words by one of their nearest neighbours in a BERT's own
  word-embedding matrix E, by cosine similarity cos(u, v) = u·v / (‖u‖‖v‖). Only a word that is a
  single whole-word token of the vocabulary is replaced, and only by such a token, so the text
  still tokenises without [UNK] and a substitute never splits into pieces.

Each function draws from ``np.random.default_rng(seed)`` alone: the same (text, rate, seed) always
gives the same output. Labels are not the functions' business: ``augment_examples`` copies each
example's label to its augmented copies unchanged (the assumption of label-preserving edits,
which a swap of "not" or a neighbour like good -> bad can break).
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from .data import Example

WHOLE_WORD = re.compile(r"[a-z]+")  # a vocab entry that tokenises as itself: letters only
METHODS = ("eda", "neighbors")


def whole_word_vocab(vocab: Sequence[str]) -> list[str]:
    """The vocabulary's whole-word tokens: lowercase letters only (no ``##x``, ``[SEP]``,
    ``[unused0]``, digits or punctuation), in vocabulary order."""
    return [t for t in vocab if WHOLE_WORD.fullmatch(t)]


def num_edits(n_words: int, rate: float) -> int:
    """k = max(1, round(rate·n)) edits for n words (0 for an empty text)."""
    if not 0 <= rate <= 1:
        raise ValueError(f"augmentation rate must be in [0, 1], got {rate}")
    return 0 if n_words == 0 else max(1, round(rate * n_words))


def random_swap(text: str, rate: float, seed: int) -> str:
    """k swaps of two distinct random positions (so at most 2k words change place)."""
    words, rng = text.split(), np.random.default_rng(seed)
    if len(words) < 2:
        return text
    for _ in range(num_edits(len(words), rate)):
        i, j = rng.choice(len(words), 2, replace=False)
        words[i], words[j] = words[j], words[i]
    return " ".join(words)


def random_deletion(text: str, rate: float, seed: int) -> str:
    """Drop k words chosen at random (at most n - 1: a text never becomes empty)."""
    words, rng = text.split(), np.random.default_rng(seed)
    k = min(num_edits(len(words), rate), len(words) - 1)
    if k <= 0:
        return text
    gone = set(rng.choice(len(words), k, replace=False).tolist())
    return " ".join(w for i, w in enumerate(words) if i not in gone)


def random_insertion(text: str, rate: float, seed: int, vocab: Sequence[str]) -> str:
    """Insert k words drawn uniformly from ``vocab`` (give it ``whole_word_vocab(...)``), each at
    a uniformly random gap (before, between or after the words)."""
    if not vocab:
        raise ValueError("random_insertion needs a non-empty vocabulary of whole words")
    words, rng = text.split(), np.random.default_rng(seed)
    for _ in range(num_edits(len(words), rate)):
        words.insert(int(rng.integers(len(words) + 1)), vocab[int(rng.integers(len(vocab)))])
    return " ".join(words)


def eda(text: str, rate: float, seed: int, vocab: Sequence[str]) -> str:
    """One EDA operation, chosen at random (swap, deletion or insertion), at ``rate``."""
    rng = np.random.default_rng(seed)
    op, sub_seed = int(rng.integers(3)), int(rng.integers(2**32))
    if op == 0:
        return random_swap(text, rate, sub_seed)
    if op == 1:
        return random_deletion(text, rate, sub_seed)
    return random_insertion(text, rate, sub_seed, vocab)


class Neighbors:
    """The k nearest whole-word tokens of a whole-word token, by cosine similarity of the rows of
    a word-embedding matrix E [V, H] (row i is the vector of ``vocab[i]``)."""

    def __init__(self, embeddings: np.ndarray, vocab: Sequence[str], k: int = 5):
        if embeddings.ndim != 2 or embeddings.shape[0] != len(vocab):
            raise ValueError(f"embeddings of shape {embeddings.shape} do not match a vocabulary "
                             f"of {len(vocab)} tokens (expected [{len(vocab)}, hidden])")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.words = whole_word_vocab(vocab)
        self.index = {w: i for i, w in enumerate(self.words)}
        ids = [i for i, t in enumerate(vocab) if WHOLE_WORD.fullmatch(t)]
        rows = embeddings[ids].astype(np.float64)
        self.unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        self.k, self._cache = k, {}

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def of(self, word: str) -> list[str]:
        """The k most cosine-similar whole words to ``word`` (itself excluded), closest first."""
        if word not in self._cache:
            i = self.index[word]
            sims = self.unit @ self.unit[i]
            sims[i] = -np.inf
            top = np.argpartition(-sims, self.k)[:self.k]
            self._cache[word] = [self.words[j] for j in top[np.argsort(-sims[top], kind="stable")]]
        return self._cache[word]


def neighbor_substitution(text: str, rate: float, seed: int, neighbors: Neighbors) -> str:
    """Replace k of the words that are whole-word tokens (k from all n words, at most the number
    of such words) by one of their ``neighbors.k`` nearest neighbours, chosen uniformly."""
    words, rng = text.split(), np.random.default_rng(seed)
    eligible = [i for i, w in enumerate(words) if w in neighbors]
    k = min(num_edits(len(words), rate), len(eligible))
    for i in rng.choice(eligible, k, replace=False) if k else []:
        options = neighbors.of(words[i])
        words[i] = options[int(rng.integers(len(options)))]
    return " ".join(words)


def augmenter(method: str, vocab: Sequence[str], embeddings: np.ndarray | None = None,
              k: int = 5) -> Callable[[str, float, int], str]:
    """(text, rate, seed) -> text for ``method`` "eda" or "neighbors" (which needs the embedding
    matrix whose rows match ``vocab``)."""
    if method == "eda":
        words = whole_word_vocab(vocab)
        return lambda text, rate, seed: eda(text, rate, seed, words)
    if method == "neighbors":
        if embeddings is None:
            raise ValueError("neighbour substitution needs the word-embedding matrix")
        table = Neighbors(embeddings, vocab, k)
        return lambda text, rate, seed: neighbor_substitution(text, rate, seed, table)
    raise ValueError(f"augmentation method must be one of {METHODS}, got {method!r}")


def augment_examples(examples: Sequence[Example], augment: Callable[[str, float, int], str], rate: float,
                     copies: int, seed: int) -> list[Example]:
    """The examples followed by ``copies`` augmented copies of each, labels unchanged. Copy c of
    example i uses seed (seed, c, i) -- via one integer from a generator seeded with them -- so
    the set depends on nothing but its arguments. A second text (sentence pairs) is kept as is."""
    out = list(examples)
    for c in range(copies):
        for i, e in enumerate(examples):
            s = int(np.random.default_rng([seed, c, i]).integers(2**32))
            out.append(replace(e, text=augment(e.text, rate, s), where=f"{e.where} (augmented copy {c + 1})"))
    return out


def augment_training_set(examples: Sequence[Example], labels: np.ndarray, method: str, rate: float,
                         copies: int, seed: int, vocab: Sequence[str],
                         embeddings: np.ndarray | None = None) -> tuple[list[Example], np.ndarray]:
    """(examples + augmented copies, their label ids): what ``--augment`` trains on. Neighbours
    come from ``embeddings``, the fine-tuned model's own word-embedding matrix (MiniLM's by
    default); everything is drawn from ``seed``, so a resumed run rebuilds the same set."""
    if len(labels) != len(examples):
        raise ValueError(f"{len(examples)} examples but {len(labels)} labels")
    out = augment_examples(examples, augmenter(method, vocab, embeddings), rate, copies, seed)
    return out, np.concatenate([labels] * (copies + 1))
