# %% [markdown]
# # Lesson 7 — The tokenizer: from text to WordPiece ids, with offsets
#
# A BERT never sees text: it sees a list of integer ids, one per *token*, where a token is a word,
# a piece of a word, a punctuation mark or a single Chinese character. The source article's §5.2
# code skips this step (it feeds raw strings to the model); this lesson does it properly.
#
# BERT's tokenizer works in two halves:
#
# 1. the **basic tokenizer** normalises the string and cuts it into *words*:
#    clean (delete control characters, turn every kind of space into " ") → put spaces around each
#    CJK ideograph (Chinese is written without spaces, so every character becomes a word) → strip
#    accents (Unicode NFD, then drop the combining marks) → lowercase → split at spaces and around
#    every punctuation mark;
# 2. **WordPiece** cuts each word into pieces of a fixed vocabulary (30 522 entries for MiniLM),
#    greedily, longest match first; a piece that continues a word is written with `##`.
#
# Every piece also remembers its **offsets**: the span `text[start:end]` of the *original* string
# it came from, even though "Héllo" became "hello" and a zero-width space vanished. Offsets are
# what lets a model's per-token output (a tag, an answer span) be mapped back onto the text.
#
# **Goal.** Watch each stage on real text — the article's Chinese sentences and English SST-2
# reviews — and check every stage, every id and every offset against Hugging Face's Rust
# tokenizer (`BertTokenizerFast`), loaded from the same MiniLM directory.
#
# **Prerequisites.** None (Python strings and Unicode basics).

# %%
import _common

import matplotlib.pyplot as plt
import numpy as np
import transformers
from matplotlib import font_manager
from matplotlib.ft2font import FT2Font
from tokenizers import normalizers, pre_tokenizers

import mini_bert
from mini_bert.basic_tokenizer import BasicTokenizer, is_cjk
from mini_bert.data import read_examples
from mini_bert.testing import shared_sst2_dir

model_dir = mini_bert.default_model_dir()
ours = mini_bert.BertTokenizer.from_pretrained(model_dir)
hf = transformers.BertTokenizerFast.from_pretrained(model_dir)
assert hf.is_fast  # the Rust implementation: written independently of ours
assert ours.get_vocab() == hf.get_vocab()
print(f"vocabulary: {len(ours)} tokens; lowercase: {ours.do_lower_case}")

# Sentences quoted from the source article (§1.2, §2.1, and the toy training data of its §5.2).
CHINESE = ["为了提高大语言模型的应用效率和性能，微调（Fine-tuning）成为了一种流行的手段。",
           "- **BERT**：由Google开发的语言模型，通过双向上下文编码，显著提升了自然语言处理的性能。",
           "这是文本1"]
SST2 = shared_sst2_dir()
if SST2 is not None:  # GLUE's SST-2 dev set: lowercased movie-review phrases, pre-split at spaces
    ENGLISH = [e.text for e in read_examples(str(SST2 / "dev.tsv"), "sentence", "label")[:6]]
else:  # the data is not part of the repo: a stand-in with the same features
    print("SST-2 not found (mini_bert.testing.shared_sst2_dir): using stand-in sentences")
    ENGLISH = ["it 's a charming and often affecting journey . ", "unflinchingly bleak and desperate "]
print("\n".join(CHINESE + ENGLISH))

# %% [markdown]
# ## 1. The basic tokenizer, one stage at a time
# A made-up string with something for every stage: an accented capital, a zero-width space
# (U+200B, a *format* character: deleted), a tab and a no-break space (both become " "), Chinese
# characters, full-width punctuation. We run our `BasicTokenizer` with the stages switched on one
# after another, and at each stage HF's normaliser with the same switches must give the same
# string. (`repr` shows the invisible characters.)

# %%
demo = "Héllo\u200bWörld!\tBERT的微调（Fine-tuning）\u00a0Café"
stages = [("raw", None)] + [
    (name, dict(tokenize_chinese_chars=cjk, strip_accents=accents, do_lower_case=lower))
    for name, cjk, accents, lower in (("1 clean", False, False, False),
                                      ("2 + CJK spaces", True, False, False),
                                      ("3 + strip accents", True, True, False),
                                      ("4 + lowercase", True, True, True))]
for name, flags in stages:
    if flags is None:
        print(f"{name:<18} {demo!r}")
        continue
    text, positions = BasicTokenizer(**flags).normalize(demo)
    reference = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=flags["tokenize_chinese_chars"],
        strip_accents=flags["strip_accents"], lowercase=flags["do_lower_case"]).normalize_str(demo)
    print(f"{name:<18} {text!r}")
    assert text == reference, (name, text, reference)
    # Each normalised character remembers the original character it came from.
    assert len(positions) == len(text)

# %% [markdown]
# Notice what happened: "Hello" and "World" are now glued together (the zero-width space was
# *deleted*, it never was a visible space), "é" became "e" + a combining accent that was then
# dropped, and every Chinese character stands alone between spaces.
#
# The last stage splits at spaces (dropped) and around each punctuation character (kept, as a
# word of its own). "Punctuation" is wide: all ASCII symbols such as `-`, `*`, `$`, and every
# Unicode punctuation mark, full-width ones included. `split` also returns, for every character of
# every word, the index of the original character it came from: the raw material for offsets.

# %%
basic = ours.basic  # the tokenizer's own basic tokenizer: all four stages on
words = basic.split(demo)
hf_words = pre_tokenizers.BertPreTokenizer().pre_tokenize_str(hf.backend_tokenizer.normalizer
                                                             .normalize_str(demo))
print([w for w, _ in words])
assert [w for w, _ in words] == [w for w, _ in hf_words]
for word, positions in words[:3]:
    print(f"  {word!r:<14} came from original characters {list(positions)}: "
          f"{demo[positions[0]:positions[-1] + 1]!r}")

# %% [markdown]
# ## 2. WordPiece: greedy longest match first
# For each word: find the **longest prefix** that is in the vocabulary and emit it; continue from
# where it ended, now looking for the longest piece *with the `##` prefix* (a continuation); and so
# on to the end of the word. If at some position not even one character matches, the **whole
# word** becomes `[UNK]`, not just its tail: a word is either fully spelled by pieces or unknown.
#
# Below, the same loop written out so that it records every lookup it makes. It must give the same
# pieces as `mini_bert`'s WordPiece and as HF's.

# %%
vocab = ours.get_vocab()
LONGEST = max(len(t) for t in vocab)  # no piece is longer, so no lookup needs to be


def wordpiece_attempts(word: str) -> tuple[list[str], list[tuple[int, str, bool]]]:
    """(pieces, attempts): the greedy split of ``word``, and every (start, candidate, found) tried."""
    pieces, attempts, start = [], [], 0
    while start < len(word):
        prefix = "##" if start > 0 else ""
        for end in range(min(len(word), start + LONGEST - len(prefix)), start, -1):
            candidate = prefix + word[start:end]
            attempts.append((start, candidate, candidate in vocab))
            if candidate in vocab:
                pieces.append(candidate)
                start = end
                break
        else:  # no piece starts here: the whole word is unknown
            return ["[UNK]"], attempts
    return pieces, attempts


for word in ("unflinchingly", "embeddings", "snow☃man"):
    pieces, attempts = wordpiece_attempts(word)
    print(f"\n{word!r} -> {pieces}   ({len(attempts)} vocabulary lookups)")
    for start in sorted({s for s, _, _ in attempts}):
        tried = [(c, ok) for s, c, ok in attempts if s == start]
        misses = ", ".join(c for c, ok in tried if not ok)
        hit = next((c for c, ok in tried if ok), None)
        print(f"  at {start:>2}: {'FOUND ' + repr(hit) if hit else 'nothing found':<22} "
              f"after rejecting {len(misses.split(', ')) if misses else 0}: {misses[:70]}"
              f"{'…' if len(misses) > 70 else ''}")
    assert pieces == [p[0] for p in ours.wordpiece.tokenize(word)] == hf.tokenize(word), word
assert wordpiece_attempts("snow☃man")[0] == ["[UNK]"]  # "snow" matched, but "☃" never can

# %% [markdown]
# ## 3. The whole pipeline, checked against HF on real text
# `tokenizer(texts, padding=True, return_offsets_mapping=True)` adds `[CLS]` in front and `[SEP]`
# at the end (offsets (0, 0): they come from no text), pads every row to the longest with `[PAD]`
# (id 0, attention mask 0), and returns for every token its `(start, end)` in the original string.
# Every one of these numbers must equal HF's.

# %%
texts = CHINESE + ENGLISH
kwargs = dict(padding=True, return_offsets_mapping=True)
mine, theirs = ours(texts, **kwargs), hf(texts, **kwargs)
for key in ("input_ids", "token_type_ids", "attention_mask", "offset_mapping"):
    a = np.array(mine[key])
    b = np.array([[tuple(o) for o in row] for row in theirs[key]] if key == "offset_mapping"
                 else theirs[key])
    assert a.shape == b.shape and (a == b).all(), key
print(f"{len(texts)} texts, padded to {len(mine['input_ids'][0])} tokens: input_ids, "
      "token_type_ids, attention_mask and offset_mapping all equal HF's")


def show(i: int) -> None:
    """One row of the batch as a table: token, id, offsets, and the original text they cover."""
    print(f"\n{texts[i]!r}")
    print(f"  {'token':<12}{'id':>7}  {'offsets':<10} original")
    for tid, (s, e) in zip(mine["input_ids"][i], mine["offset_mapping"][i]):
        if tid == ours.pad_token_id:
            break
        print(f"  {ours.convert_ids_to_tokens(tid):<12}{tid:>7}  {f'({s}, {e})':<10} {texts[i][s:e]!r}")


show(0)
show(len(CHINESE) + 1)

# %% [markdown]
# What the offsets guarantee, asserted for every token of every text: normalising the original
# span `text[start:end]` gives back the piece (without its `##`), unless the piece is `[UNK]`.
# Above, "Fine" is the original span of the piece "fine", and in "unflinchingly" each piece
# ("##ching") points at its own characters only.

# %%
normalize = hf.backend_tokenizer.normalizer.normalize_str
for i, text in enumerate(texts):
    for tid, (s, e) in zip(mine["input_ids"][i], mine["offset_mapping"][i]):
        token = ours.convert_ids_to_tokens(tid)
        if tid in ours.all_special_ids:
            assert (s, e) == (0, 0) or token == ours.unk_token
            if token != ours.unk_token:
                continue
        assert e > s, (text, token)
        if token != ours.unk_token:
            assert normalize(text[s:e]).strip() == token.removeprefix("##"), (text, token, s, e)

# %% [markdown]
# ## 4. An English vocabulary reading Chinese
# MiniLM was pre-trained on English, with BERT's uncased English vocabulary. It does contain a few
# hundred single CJK characters (they occur in English Wikipedia), but most Chinese characters are
# not among them and become `[UNK]`: the model cannot tell "微调" (fine-tuning) from "这是"
# (this is). The article's §5.2 trains on `'这是文本1'` with `bert-base-cased`, another English
# vocabulary; a Chinese task needs a Chinese vocabulary (e.g. `bert-base-chinese`, 21 128 tokens,
# most of them single characters).

# %%
cjk_in_vocab = sum(1 for t in vocab if len(t) == 1 and is_cjk(t))
for text in CHINESE:
    chars = [c for c in text if is_cjk(c)]
    unknown = sum(1 for c in chars if c not in vocab)
    ids = ours(text)["input_ids"]
    print(f"{unknown:>2}/{len(chars)} Chinese characters unknown:  {text[:24]}…")
    # Every CJK character is its own word, so each unknown one is exactly one [UNK] token.
    assert ids.count(ours.unk_token_id) == unknown == hf(text)["input_ids"].count(hf.unk_token_id)
print(f"single CJK characters in the vocabulary: {cjk_in_vocab} of {len(vocab)} tokens")
assert 0 < cjk_in_vocab < 1000

# %% [markdown]
# ## 5. Offsets, drawn
# Each coloured bar is one token, spanning the characters `text[start:end]` it came from (red:
# `[UNK]`). In English, a word cut into several pieces shows as adjacent bars under one word; in
# Chinese every character is its own bar.

# %%
# The article's Chinese sentences need a CJK font in both editions (_common.cjk_font, e.g. Noto Sans CJK
# from fonts-noto-cjk); matplotlib falls back glyph by glyph along this list, DejaVu Sans first for Latin.
cjk = _common.cjk_font()
FONTS = ["DejaVu Sans", *([cjk] if cjk else [])]
drawable = set()  # code points one of these fonts has glyphs for
for family in FONTS:
    drawable |= set(FT2Font(font_manager.findfont(font_manager.FontProperties(family=family))).get_charmap())


def glyph(ch: str) -> str:
    return ch if ord(ch) in drawable else "□"  # no CJK font installed: a placeholder box


rows = [0, 1, len(CHINESE), len(CHINESE) + 1]
fig, axes = plt.subplots(len(rows), 1, figsize=(13, 1.5 * len(rows)))
for ax, i in zip(axes, rows):
    text = texts[i][:60]
    for k, ch in enumerate(text):
        ax.text(k + 0.5, 1.0, glyph(ch), ha="center", va="center", fontsize=9, family=FONTS)
    for n, (tid, (s, e)) in enumerate(zip(mine["input_ids"][i], mine["offset_mapping"][i])):
        if e == s or e > len(text):
            continue
        token = ours.convert_ids_to_tokens(tid)
        color = "tab:red" if token == ours.unk_token else ("tab:blue", "tab:green")[n % 2]
        ax.add_patch(plt.Rectangle((s + 0.05, 0.15), e - s - 0.1, 0.45, color=color, alpha=0.35))
        label = "".join(glyph(c) for c in token) if token != ours.unk_token else "UNK"
        ax.text((s + e) / 2, 0.37, label, ha="center", va="center", fontsize=6, family=FONTS,
                rotation=90 * (e - s < 3))  # upright labels for narrow bars
    ax.set_xlim(0, max(len(text), 20))
    ax.set_ylim(0, 1.4)
    ax.axis("off")
axes[0].set_title(_common.tr("token offsets: each bar spans text[start:end]", "token偏移：每个条块覆盖text[start:end]")
                  + ("" if ord("微") in drawable else _common.tr("  (□: no CJK font installed)", "  （□：未安装CJK字体）")))
_common.savefig(fig, "07_token_offsets.png")

# %% [markdown]
# ## 6. Back to text
# `decode` joins the pieces: `##` pieces glue onto the previous one, others get a space. It cannot
# undo normalisation: case and accents are gone, the spaces come from the splitting, not from the
# text, and `[UNK]` is a special token, so `skip_special_tokens` drops it along with `[CLS]`. One
# more reason to use offsets, not decoding, to point back into the original text.

# %%
for i in (0, len(CHINESE) + 1):
    ids = [t for t, m in zip(mine["input_ids"][i], mine["attention_mask"][i]) if m]
    decoded = ours.decode(ids, skip_special_tokens=True)
    print(repr(decoded))
    assert decoded == hf.decode(ids, skip_special_tokens=True)

# %% [markdown]
# ## Takeaways
# - Tokenization = normalise (clean, CJK spacing, accents, case) + split at spaces and punctuation
#   + WordPiece (greedy longest match, `##` continuations, whole word `[UNK]` on failure).
# - Every token carries offsets into the *original* string; they survive all the normalisation.
# - The vocabulary decides what a model can read: an English BERT sees most Chinese characters as
#   `[UNK]`. Use the tokenizer saved with the checkpoint, never another one.
# - `mini_bert.BertTokenizer` reproduces HF's fast tokenizer id for id and offset for offset.

# %% [markdown] tags=["questions"]
# ## Check your understanding
#
# 1. What does the `##` prefix of a piece mean, and how does `decode` use it?
#
# 2. Why do tokens carry offsets into the original string, instead of mapping back with `decode`?
#
# 3. A zero-width space (U+200B) between "Hello" and "World" does not make two words. Why?
#
# 4. Why does MiniLM read most of the article's Chinese sentences as `[UNK]`, and what would a
#    Chinese task need?
#
# 5. What ids, offsets and attention-mask values do `[CLS]`, `[SEP]` and `[PAD]` get?

# %% [markdown] tags=["answers"]
# ## Answers
#
# 1. The piece continues the previous piece of the same word (it is not the start of a word).
#    `decode` glues `##` pieces onto the previous piece and puts a space before every other one.
#
# 2. Normalisation loses information: case, accents, deleted control characters, the original
#    spacing, and whatever became `[UNK]`. `decode` cannot undo that; offsets point each token
#    (and so each per-token prediction, a tag or an answer span) at its exact characters in the
#    original text.
#
# 3. It is a format character, which the cleaning stage deletes; only whitespace characters turn
#    into " ". With it gone, the two words touch and are lowercased to one word, "helloworld".
#
# 4. Each CJK character becomes its own word, and MiniLM's English uncased vocabulary holds only a
#    few hundred of them; a word with no matching piece becomes `[UNK]` as a whole. A Chinese task
#    needs a model pre-trained with a Chinese vocabulary (e.g. bert-base-chinese, 21 128 tokens,
#    mostly single characters).
#
# 5. Offsets (0, 0) for all three: they come from no text. `[CLS]` and `[SEP]` have mask 1;
#    `[PAD]` has id 0 and mask 0, so attention ignores it.
