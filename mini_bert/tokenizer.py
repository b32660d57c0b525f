"""A BERT WordPiece tokenizer that reproduces Hugging Face's ``BertTokenizerFast``.

Pipeline for one string (see ``basic_tokenizer`` and ``wordpiece`` for details)::

    "Héllo [MASK]!"  --special tokens-->  "Héllo ", [MASK], "!"
                     --normalise/split-->  "hello" (0..5), [MASK] (6..12), "!" (12..13)
                     --WordPiece-------->  ids, with character offsets into the original

then, for model input, ``[CLS] A [SEP] (B [SEP])`` is assembled, truncated and
padded with the same arithmetic as the reference, so that ``input_ids``,
``token_type_ids``, ``attention_mask`` and ``offset_mapping`` come out
identical.  Only the standard library and numpy are used.
"""

import json
import os
import re

import numpy as np

from .basic_tokenizer import BasicTokenizer
from .wordpiece import WordPiece, load_vocab

# "No limit" as the reference spells it, and the threshold above which a
# model_max_length counts as "no limit" when truncating or padding.
VERY_LARGE_INTEGER = int(1e30)
LARGE_INTEGER = int(1e20)

_SPECIAL_TOKEN_NAMES = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_DEFAULT_SPECIAL_TOKENS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                           "cls_token": "[CLS]", "mask_token": "[MASK]"}
_PADDING = {False: None, "do_not_pad": None, True: "longest", "longest": "longest",
            "max_length": "max_length"}
_TRUNCATION = {None: None, False: None, "do_not_truncate": None, True: "longest_first",
               "longest_first": "longest_first", "only_first": "only_first",
               "only_second": "only_second"}


class BatchEncoding(dict):
    """The tokenizer's output: a dict that also allows ``enc.input_ids``."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class BertTokenizer:
    """BERT tokenizer: vocabulary, normalisation options and special tokens.

    ``vocab`` is a ``{token: id}`` dict or the path of a ``vocab.txt``.  The
    options mean what they mean for Hugging Face's BERT tokenizers;
    ``strip_accents=None`` follows ``do_lower_case``.  ``never_split`` lists
    extra strings that, like the special tokens, are matched verbatim in the
    raw text and never normalised or split at punctuation; one that is not in
    the vocabulary still goes through WordPiece.  (The reference's fast
    tokenizer ignores ``never_split``, so parity with it assumes it is empty.)
    """

    def __init__(self, vocab, do_lower_case=True, strip_accents=None, tokenize_chinese_chars=True,
                 never_split=None, model_max_length=VERY_LARGE_INTEGER,
                 clean_up_tokenization_spaces=False, **special_tokens):
        unknown = set(special_tokens) - set(_SPECIAL_TOKEN_NAMES)
        if unknown:
            raise TypeError(f"unexpected arguments: {sorted(unknown)}")
        self.vocab = dict(load_vocab(vocab) if isinstance(vocab, (str, os.PathLike)) else vocab)
        self._base_vocab_size = len(self.vocab)
        for name in _SPECIAL_TOKEN_NAMES:
            token = special_tokens.get(name, _DEFAULT_SPECIAL_TOKENS[name])
            setattr(self, name, token)
            # Like the reference, a special token missing from the vocabulary
            # is appended to it, so that it always has an id: the next one.
            if token not in self.vocab:
                self.vocab[token] = len(self.vocab)
        self.ids_to_tokens = {i: t for t, i in self.vocab.items()}
        self.do_lower_case = do_lower_case
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.never_split = list(never_split or [])
        self.model_max_length = model_max_length
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.basic = BasicTokenizer(do_lower_case, strip_accents, tokenize_chinese_chars)
        self.wordpiece = WordPiece(self.vocab, unk_token=self.unk_token)
        # Special tokens are found in the *raw* text before any normalisation,
        # so "[MASK]" survives lowercasing and "a[MASK]b" is a, [MASK], b.
        # Longest first, so that the regex prefers the longest match.
        verbatim = sorted({t for t in self.all_special_tokens + self.never_split if t},
                          key=len, reverse=True)
        self._verbatim = re.compile("|".join(map(re.escape, verbatim))) if verbatim else None

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, directory, **overrides):
        """Load ``vocab.txt`` and ``tokenizer_config.json`` (and ``special_tokens_map.json``)."""
        config = {}
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    config.update(json.load(f))
        options = ("do_lower_case", "strip_accents", "tokenize_chinese_chars", "never_split",
                   "model_max_length", "clean_up_tokenization_spaces")
        kwargs = {key: config[key] for key in options if key in config}
        for name in _SPECIAL_TOKEN_NAMES:
            token = config.get(name)
            if isinstance(token, dict):  # serialised as {"content": "[UNK]", ...}
                token = token.get("content")
            if token is not None:
                kwargs[name] = token
        kwargs.update(overrides)
        return cls(os.path.join(directory, "vocab.txt"), **kwargs)

    def save_pretrained(self, directory):
        """Write ``vocab.txt``, ``tokenizer_config.json`` and ``special_tokens_map.json``.

        ``transformers.BertTokenizerFast.from_pretrained(directory)`` reads them
        back into a tokenizer that behaves like this one.
        """
        os.makedirs(directory, exist_ok=True)
        # Line i holds the token with id i.  A vocabulary read from a file with
        # a repeated token has a hole at the first occurrence (the last one
        # wins); we fill each hole with a token that comes again later, so
        # that reading the file back gives the very same ids.
        by_id = sorted(self.vocab.items(), key=lambda item: item[1])
        lines, k = [], 0
        for i in range(by_id[-1][1] + 1 if by_id else 0):
            while by_id[k][1] < i:
                k += 1
            lines.append(by_id[k][0])
        with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8", newline="\n") as f:
            f.writelines(token + "\n" for token in lines)
        specials = {name: getattr(self, name) for name in _SPECIAL_TOKEN_NAMES}
        config = {"tokenizer_class": "BertTokenizer", "do_lower_case": self.do_lower_case,
                  "strip_accents": self.strip_accents,
                  "tokenize_chinese_chars": self.tokenize_chinese_chars,
                  "never_split": self.never_split or None,
                  "model_max_length": self.model_max_length,
                  "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces, **specials}
        for name, content in (("tokenizer_config.json", config),
                              ("special_tokens_map.json", specials)):
            with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
                json.dump(content, f, indent=2, ensure_ascii=False)
                f.write("\n")
        return directory

    # --------------------------------------------------------- vocabulary info
    def __len__(self):
        return len(self.vocab)

    @property
    def vocab_size(self):
        """Size of the vocabulary file, without special tokens appended to it."""
        return self._base_vocab_size

    def get_vocab(self):
        return dict(self.vocab)

    @property
    def all_special_tokens(self):
        return [getattr(self, name) for name in _SPECIAL_TOKEN_NAMES]

    @property
    def all_special_ids(self):
        return [self.vocab[t] for t in self.all_special_tokens]

    unk_token_id = property(lambda self: self.vocab[self.unk_token])
    sep_token_id = property(lambda self: self.vocab[self.sep_token])
    pad_token_id = property(lambda self: self.vocab[self.pad_token])
    cls_token_id = property(lambda self: self.vocab[self.cls_token])
    mask_token_id = property(lambda self: self.vocab[self.mask_token])

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            return self.vocab.get(tokens, self.unk_token_id)
        return [self.vocab.get(t, self.unk_token_id) for t in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens=False):
        """Token strings for ids; an id outside the vocabulary gives ``None``."""
        if isinstance(ids, (int, np.integer)):
            return self.ids_to_tokens.get(int(ids))
        skip = set(self.all_special_ids) if skip_special_tokens else ()
        return [self.ids_to_tokens.get(int(i)) for i in ids if int(i) not in skip]

    # ---------------------------------------------------------------- encoding
    def _encode_text(self, text):
        """All pieces of one string: ``[(token, id, start, end), ...]``, no [CLS]/[SEP]."""
        if not isinstance(text, str):
            raise ValueError(f"text input must be a string, got {type(text).__name__}")
        pieces, done = [], 0
        if self._verbatim is not None:
            for match in self._verbatim.finditer(text):
                self._encode_plain(text[done:match.start()], done, pieces)
                token, start = match.group(), match.start()
                if token in self.vocab:
                    pieces.append((token, self.vocab[token], start, match.end()))
                else:  # a never_split word that is not in the vocabulary
                    pieces += [(piece, piece_id, start + begin, start + end)
                               for piece, piece_id, begin, end in self.wordpiece.tokenize(token)]
                done = match.end()
        self._encode_plain(text[done:], done, pieces)
        return pieces

    def _encode_plain(self, text, start, pieces):
        """Append the pieces of ``text`` (a slice beginning at ``start``) to ``pieces``."""
        for word, positions in self.basic.split(text, start):
            for token, token_id, begin, end in self.wordpiece.tokenize(word):
                # A piece spans from the original character of its first
                # character to (just after) that of its last one.
                pieces.append((token, token_id, positions[begin], positions[end - 1] + 1))

    def tokenize(self, text, pair=None):
        """Token strings of ``text`` (and ``pair``), without special tokens."""
        tokens = [p[0] for p in self._encode_text(text)]
        return tokens + ([p[0] for p in self._encode_text(pair)] if pair is not None else [])

    def encode(self, text, text_pair=None, add_special_tokens=True, **kwargs):
        """Just the ``input_ids`` of one string (or pair)."""
        return self(text, text_pair, add_special_tokens=add_special_tokens, **kwargs)["input_ids"]

    def _strategies(self, padding, truncation, max_length):
        """Resolve padding/truncation options exactly as the reference does."""
        # Giving only max_length means "truncate to it" (a historical default).
        if max_length is not None and padding is False and truncation is None:
            truncation = "longest_first"
        if padding not in _PADDING or truncation not in _TRUNCATION:
            raise ValueError(f"unknown padding={padding!r} or truncation={truncation!r}")
        padding, truncation = _PADDING[padding], _TRUNCATION[truncation]
        if max_length is None:
            # Fall back to the model's limit, unless it is "no limit".
            unlimited = self.model_max_length > LARGE_INTEGER
            if padding == "max_length":
                padding = None if unlimited else padding
                max_length = None if unlimited else self.model_max_length
            if truncation is not None:
                truncation = None if unlimited else truncation
                max_length = None if unlimited else self.model_max_length
        return padding, truncation, max_length

    @staticmethod
    def _truncate(first, second, strategy, max_length, num_special):
        """Shorten the piece lists ``first``/``second`` to fit ``max_length``."""
        # The reference subtracts the special tokens in unsigned arithmetic: a
        # max_length below their number wraps round to "huge", i.e. no limit.
        if max_length < num_special:
            return first, second
        limit = max_length - num_special
        if limit == 0:  # nothing but the special tokens fits (never an error)
            return first[:0], None if second is None else second[:0]
        total = len(first) + (len(second) if second is not None else 0)
        if total <= limit:
            return first, second
        if strategy == "longest_first":
            if second is None:
                return first[:limit], None
            # If the shorter sequence fits in half of the budget it is kept
            # whole and the longer one gets the rest; otherwise the budget is
            # split in two, the odd token going to the longer sequence (to
            # the second one when both are equally long).
            short = min(len(first), len(second))
            if 2 * short <= limit:
                keep_short, keep_long = short, limit - short
            else:
                keep_short, keep_long = limit // 2, limit - limit // 2
            if len(first) > len(second):
                return first[:keep_long], second[:keep_short]
            return first[:keep_short], second[:keep_long]
        target = first if strategy == "only_first" else second
        if target is None:
            raise ValueError("Truncation error: Second sequence not provided")
        to_remove = total - limit
        if len(target) <= to_remove:
            raise ValueError("Truncation error: Sequence to truncate too short to respect "
                             "the provided max_length")
        if strategy == "only_first":
            return first[:len(first) - to_remove], second
        return first, second[:len(second) - to_remove]

    def _assemble(self, first, second, add_special_tokens):
        """``[CLS] A [SEP] B [SEP]`` as (ids, token types, offsets).

        [SEP] takes the token type of the sequence it ends; special tokens
        cover no text, so their offsets are (0, 0).
        """
        ids, types, offsets = [], [], []
        if add_special_tokens:
            ids, types, offsets = [self.cls_token_id], [0], [(0, 0)]
        for type_id, pieces in ((0, first), (1, second)):
            if pieces is None:
                continue
            ids += [p[1] for p in pieces]
            types += [type_id] * len(pieces)
            offsets += [(p[2], p[3]) for p in pieces]
            if add_special_tokens:
                ids.append(self.sep_token_id)
                types.append(type_id)
                offsets.append((0, 0))
        return ids, types, offsets

    def __call__(self, text, text_pair=None, add_special_tokens=True, padding=False,
                 truncation=None, max_length=None, return_offsets_mapping=False,
                 return_tensors=None, return_token_type_ids=True, return_attention_mask=True):
        """Tokenize a string, a pair, or a batch of them, into model inputs.

        A single string gives flat lists, a list of strings gives a list of
        lists, and ``return_tensors="np"`` gives int64 arrays of shape
        ``(batch, length)`` (``(batch, length, 2)`` for offsets).
        """
        batched = isinstance(text, (list, tuple))
        if batched:
            if text_pair is None:
                text_pair = [None] * len(text)
            if isinstance(text_pair, str) or len(text_pair) != len(text):
                raise ValueError("for a batch, text_pair must be a list as long as text")
            pairs = list(zip(text, text_pair))
        else:
            # As in the reference, an empty-string text_pair means "no pair".
            pairs = [(text, text_pair or None)]
        padding, truncation, max_length = self._strategies(padding, truncation, max_length)

        rows = []
        for first_text, second_text in pairs:
            first = self._encode_text(first_text)
            second = None if second_text is None else self._encode_text(second_text)
            if truncation is not None:
                num_special = (2 + (second is not None)) if add_special_tokens else 0
                first, second = self._truncate(first, second, truncation, max_length, num_special)
            rows.append(self._assemble(first, second, add_special_tokens))

        # Padding goes on the right: [PAD] ids, token type 0, mask 0, offsets (0, 0).
        target = 0
        if padding == "longest":
            target = max((len(ids) for ids, _, _ in rows), default=0)
        elif padding == "max_length":
            target = max_length
        out = {"input_ids": [], "token_type_ids": [], "attention_mask": [], "offset_mapping": []}
        for ids, types, offsets in rows:
            pad = max(0, target - len(ids))
            out["input_ids"].append(ids + [self.pad_token_id] * pad)
            out["token_type_ids"].append(types + [0] * pad)
            out["attention_mask"].append([1] * len(ids) + [0] * pad)
            out["offset_mapping"].append(offsets + [(0, 0)] * pad)
        for key, wanted in (("token_type_ids", return_token_type_ids),
                            ("attention_mask", return_attention_mask),
                            ("offset_mapping", return_offsets_mapping)):
            if not wanted:
                del out[key]

        if return_tensors == "np":
            if len({len(ids) for ids in out["input_ids"]}) > 1:
                raise ValueError("sequences have different lengths: use padding (and truncation) "
                                 "to get a rectangular array")
            return BatchEncoding({k: np.array(v, dtype=np.int64) for k, v in out.items()})
        if return_tensors is not None:
            raise ValueError(f"unsupported return_tensors={return_tensors!r} (only 'np')")
        if not batched:
            out = {k: v[0] for k, v in out.items()}
        return BatchEncoding(out)

    # ---------------------------------------------------------------- decoding
    def decode(self, token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=None):
        """Turn ids back into text: pieces joined by spaces, ``##`` pieces glued on.

        As the reference's WordPiece decoder does, a piece that starts with
        ``.`` ``,`` ``!`` or ``?`` is glued to the previous one too
        ("hello , world ." -> "hello, world.").  That clean-up is applied to
        each piece on its own, so " ' s" stays apart.  The optional,
        whole-string ``clean_up_tokenization_spaces`` pass (off by default)
        also joins contractions such as " n't" and " 's".
        """
        if isinstance(token_ids, np.ndarray):
            token_ids = token_ids.tolist()
        if isinstance(token_ids, (int, np.integer)):
            token_ids = [token_ids]
        if token_ids and isinstance(token_ids[0], (list, tuple, np.ndarray)):
            return [self.decode(ids, skip_special_tokens, clean_up_tokenization_spaces)
                    for ids in token_ids]
        specials = set(self.all_special_tokens) if skip_special_tokens else ()
        tokens = [t for t in map(self.ids_to_tokens.get, map(int, token_ids))
                  if t is not None and t not in specials]
        parts = []
        for i, token in enumerate(tokens):
            if i > 0:
                token = token[2:] if token.startswith("##") else " " + token
            parts.append(_cleanup_piece(token))
        text = "".join(parts)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        if clean_up_tokenization_spaces:
            text = _cleanup_text(text)
        return text

    def batch_decode(self, sequences, skip_special_tokens=False, clean_up_tokenization_spaces=None):
        return [self.decode(ids, skip_special_tokens, clean_up_tokenization_spaces)
                for ids in sequences]


# Spaces that English tokenisation introduced and that decoding takes out again.
_PIECE_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                  (" n't", "n't"), (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"),
                  (" 've", "'ve"), (" 're", "'re"))
_TEXT_CLEANUP = tuple(pair for pair in _PIECE_CLEANUP if pair[0] != " do not")


def _cleanup_piece(piece):
    for old, new in _PIECE_CLEANUP:
        piece = piece.replace(old, new)
    return piece


def _cleanup_text(text):
    for old, new in _TEXT_CLEANUP:
        text = text.replace(old, new)
    return text
