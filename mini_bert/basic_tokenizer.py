"""Text normalisation and pre-tokenisation for BERT, with character offsets.

This is the "basic tokenizer" half of BERT tokenisation: it turns a raw string
into a list of *words* (pre-tokens) that WordPiece then cuts into pieces.  The
steps, in the order the reference implementation applies them, are:

1. clean:   drop control/format/private-use characters, NUL and U+FFFD;
            turn every whitespace character into a plain space;
2. CJK:     surround each CJK ideograph with spaces, so it becomes a word;
3. accents: NFD-decompose and drop non-spacing marks (category Mn);
4. case:    lowercase, one character at a time;
5. split:   cut at whitespace (dropped) and around punctuation (kept as
            one-character words).

Each step works on one character at a time (but for one NFD subtlety, see
`_normalized_with_reordering`), so each normalised character can remember
which *original* character it came from.  That memory is what lets us report
offsets into the original string even though "Café" became "cafe" and a
zero-width space vanished.  A word is returned together with the original
index of each of its characters.

Unicode versions.  The reference (HF ``tokenizers``, written in Rust) takes its
character categories from an old table (about Unicode 8.0), while Python's
``unicodedata`` is newer (14.0 on Python 3.11).  Characters whose category is
newer than that old table are therefore *ordinary letters* for the reference:
a recent punctuation sign is not split off, a recent combining mark is not
stripped.  The small range tables below list those characters (they were
found by running both implementations over every code point) so that we agree
with the reference everywhere, not just on common text.  With a Python whose
``unicodedata`` is newer than 14.0 characters added after 14.0 may disagree.
"""

import re
import unicodedata


def _code_points(spec):
    """Parse a compact "7FD 898-89F ..." list of hex code points and ranges."""
    points = set()
    for item in spec.split():
        low, _, high = item.partition("-")
        points.update(range(int(low, 16), int(high or low, 16) + 1))
    return frozenset(chr(cp) for cp in points)


# Format characters (Cf) that the reference's old table does not know; they are
# kept as letters instead of being removed as "control" characters.
_LETTERLIKE_FORMAT = _code_points("890-891 8E2 110CD 13430-13438")

# Non-spacing marks (Mn) that the reference's old table does not know; accent
# stripping keeps them.  U+1734 is the opposite case: it used to be Mn (it is
# Mc today), so the reference still strips it.
_LETTERLIKE_MARKS = _code_points(
    "7FD 898-89F 8CA-8E1 9FE AFA-AFF B55 C04 C3C D00 D3B-D3C D81 EBA 180F 1885-1886"
    " 1ABF-1ACE 1DF6-1DFB A82C A8C5 A8FF A9BD 10D24-10D27 10EAB-10EAC 10F46-10F50"
    " 10F82-10F85 11070 11073-11074 110C2 111C9 111CF 1123E 1133B 11438-1143F"
    " 11442-11444 11446 1145E 1182F-11837 11839-1183A 1193B-1193C 1193E 11943"
    " 119D4-119D7 119DA-119DB 119E0 11A01-11A0A 11A33-11A38 11A3B-11A3E 11A47"
    " 11A51-11A56 11A59-11A5B 11A8A-11A96 11A98-11A99 11C30-11C36 11C38-11C3D 11C3F"
    " 11C92-11CA7 11CAA-11CB0 11CB2-11CB3 11CB5-11CB6 11D31-11D36 11D3A 11D3C-11D3D"
    " 11D3F-11D45 11D47 11D90-11D91 11D95 11D97 11EF3-11EF4 16F4F 16FE4 1CF00-1CF2D"
    " 1CF30-1CF46 1E000-1E006 1E008-1E018 1E01B-1E021 1E023-1E024 1E026-1E02A"
    " 1E130-1E136 1E2AE 1E2EC-1E2EF 1E944-1E94A"
)
_EXTRA_MARKS = _code_points("1734")

# Punctuation (P*) that the reference's old table does not know (not split off),
# and two characters that were punctuation in the old table but are not now.
_LETTERLIKE_PUNCT = _code_points(
    "61D 9FD A76 C77 C84 1B7D-1B7E 2E43-2E4F 2E52-2E5D 10EAD 10F55-10F59 10F86-10F89"
    " 1144B-1144F 1145A-1145B 1145D 11660-1166C 116B9 1183B 11944-11946 119E2"
    " 11A3F-11A46 11A9A-11A9C 11A9E-11AA2 11C41-11C45 11C70-11C71 11EF7-11EF8 11FFF"
    " 12FF1-12FF2 16E97-16E9A 16FE2 1E95E-1E95F"
)
_EXTRA_PUNCT = _code_points("166D 111C9")

# The reference's NFD tables are old as well: one decomposition added in
# Unicode 13 is missing, and these marks have combining class 0 there (they are
# newer than its tables), so canonical ordering never moves them.
_NOT_DECOMPOSED = _code_points("11938")
_NO_COMBINING_CLASS = _code_points(
    "7FD 898-89F 8CA-8D3 9FE C3C D3B-D3C EBA 1715 1ABF-1ACE 1DF6-1DFA A82C 10D24-10D27"
    " 10EAB-10EAC 10F46-10F50 10F82-10F85 11070 1133B 1145E 11839-1183A 1193D-1193E"
    " 11943 119E0 11A34 11A47 11A99 11D42 11D44-11D45 11D97 16FF0-16FF1 1E130-1E136"
    " 1E2AE 1E2EC-1E2EF"
)

# Lowercase mappings of letters added in Unicode 16: unassigned for Python 3.11
# but known to the Rust standard library the reference is built with.
_NEWER_LOWERCASE = {"\u1c89": "\u1c8a", "\ua7cb": "\u0264", "\ua7cc": "\ua7cd",
                    "\ua7ce": "\ua7cf", "\ua7d2": "\ua7d3", "\ua7d4": "\ua7d5",
                    "\ua7da": "\ua7db", "\ua7dc": "\u019b"}
_NEWER_LOWERCASE.update({chr(cp): chr(cp + 0x20) for cp in range(0x10D50, 0x10D66)})
_NEWER_LOWERCASE.update({chr(cp): chr(cp + 0x1B) for cp in range(0x16EA0, 0x16EB9)})

# The Unicode White_Space property (what Rust's char::is_whitespace tests).
# Python's str.isspace() differs: it also accepts U+001C..U+001F.
WHITESPACE_CHARS = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_WHITESPACE = frozenset(WHITESPACE_CHARS)

_LETTER, _SPACE, _PUNCT = 0, 1, 2  # how pre-tokenisation treats a character

_ASCII_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def is_whitespace(ch):
    return ch in _WHITESPACE


def is_control(ch):
    """Characters the cleaning step deletes (tab, CR and LF count as spaces)."""
    if ch in "\t\n\r":
        return False
    if ch in "\x00\ufffd":
        return True
    # Cc control, Cf format, Co private use, Cs surrogate.  Unassigned code
    # points (Cn) are *kept*: the reference's table has no Cn entries.
    return unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs") and ch not in _LETTERLIKE_FORMAT


def is_punctuation(ch):
    """ASCII punctuation (which includes symbols like $ + < = > ^ ` | ~) or Unicode P*."""
    if ch in _ASCII_PUNCT or ch in _EXTRA_PUNCT:
        return True
    return unicodedata.category(ch).startswith("P") and ch not in _LETTERLIKE_PUNCT


def is_cjk(ch):
    """CJK ideographs, in the blocks the reference lists.

    Note its lower bound 0x2B920 for the Extension E block, which really
    starts at 0x2B820: the characters in between are not treated as CJK, and
    we follow that.  Hangul, kana etc. are not here: they are written with
    spaces between words, so they need no special treatment.
    """
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0xF900 <= cp <= 0xFAFF
            or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B81F or 0x2B920 <= cp <= 0x2CEAF
            or 0x2F800 <= cp <= 0x2FA1F)


def _is_stripped_mark(ch):
    if ch in _EXTRA_MARKS:
        return True
    return unicodedata.category(ch) == "Mn" and ch not in _LETTERLIKE_MARKS


def _lower(ch):
    # Lowercase one character at a time, like the reference does.  This is not
    # quite str.lower() on the whole string: a final capital sigma becomes σ,
    # never ς, because the context rule for ς needs to see its neighbours.
    return _NEWER_LOWERCASE.get(ch) or ch.lower()


def _kind(c):
    return _SPACE if c in _WHITESPACE else _PUNCT if is_punctuation(c) else _LETTER


def _combining(c):
    return 0 if c in _NO_COMBINING_CLASS else unicodedata.combining(c)


def _nfd(text):
    return "".join(c if c in _NOT_DECOMPOSED else unicodedata.normalize("NFD", c) for c in text)


# Control characters that the ASCII fast path cannot handle (they are deleted).
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Words and punctuation in clean ASCII text: runs of non-space, non-punctuation
# characters, or single punctuation characters.
_ASCII_PUNCT_CLASS = "!-/:-@\\[-`{-~"
_ASCII_WORDS = re.compile(f"[^\\s{_ASCII_PUNCT_CLASS}]+|[{_ASCII_PUNCT_CLASS}]")


class BasicTokenizer:
    """Normalise a string and split it into words, keeping original offsets.

    ``split(text)`` returns a list of ``(word, positions)`` pairs where
    ``positions[i]`` is the index in ``text`` of the character that produced
    ``word[i]``.  One original character can produce several word characters
    (NFD, lowercase expansions) and several characters can produce none
    (removed controls, stripped accents, spaces).
    """

    def __init__(self, do_lower_case=True, strip_accents=None, tokenize_chinese_chars=True):
        self.do_lower_case = do_lower_case
        # strip_accents=None means "do whatever lowercasing does", as in the
        # original BERT, where uncased models are also accent-free.
        self.strip_accents = do_lower_case if strip_accents is None else strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        # Normalising a character is pure, so we remember the answers: real
        # text uses a few hundred distinct characters and this makes it cheap.
        self._cache = {}

    # Steps 1-2 (clean, CJK) and steps 3-4 (accents, case) for one character.
    def _clean_and_space_cjk(self, ch):
        if is_control(ch):
            return ""
        if is_whitespace(ch):
            return " "
        if self.tokenize_chinese_chars and is_cjk(ch):
            return f" {ch} "
        return ch

    def _finish(self, c):
        """Steps 3-4 for a character that NFD has already decomposed."""
        if self.strip_accents and _is_stripped_mark(c):
            return ""
        return "".join(_lower(x) for x in c) if self.do_lower_case else c

    def _analyse(self, ch):
        """Normalise one original character; cache and return ``(pieces, classes)``.

        ``pieces`` is ``((char, kind), ...)``, where ``kind`` says how
        pre-tokenisation treats the output character: _SPACE (a word boundary,
        dropped), _PUNCT (a word of its own) or _LETTER.  ``classes`` are the
        combining classes of the decomposed character, or None when they are
        all 0, the common case (see `_normalized`).
        """
        out = self._clean_and_space_cjk(ch)
        classes = None
        if self.strip_accents:
            out = _nfd(out)
            classes = tuple(_combining(c) for c in out)
            classes = None if out and not any(classes) else classes
        pieces = tuple((x, _kind(x)) for c in out for x in self._finish(c))
        entry = self._cache[ch] = (pieces, classes)
        return entry

    def normalize_char(self, ch):
        """The string that one original character turns into (may be empty)."""
        pieces, _ = self._cache.get(ch) or self._analyse(ch)
        return "".join(c for c, _ in pieces)

    def _normalized(self, text, start):
        """The normalised text as ``(char, kind, original index)`` triples."""
        out = []
        previous = 0  # combining class of the previous decomposed character
        reorders = False
        for i, ch in enumerate(text, start):
            pieces, classes = self._cache.get(ch) or self._analyse(ch)
            for c, kind in pieces:
                out.append((c, kind, i))
            if classes is None:
                previous = 0
                continue
            # NFD sorts each run of combining marks by combining class, across
            # character boundaries ("a" + U+302E + U+0323 puts U+0323 first).
            # Only then is our one-character-at-a-time shortcut wrong.
            for ccc in classes:
                reorders |= 0 < ccc < previous
                previous = ccc
        return self._normalized_with_reordering(text, start) if reorders else out

    def _normalized_with_reordering(self, text, start):
        """Whole-string NFD, with the reference's *positional* alignment.

        The reference decomposes the whole string, sorts combining marks, and
        then hands out original positions by position in the stream: the
        k-th character that replaces (rather than extends) an old character
        gets the k-th old character's position, whatever character it really
        came from.  A mark that moved therefore takes its neighbour's offset.
        We reproduce that; it only matters for marks that survive stripping.
        """
        origin, stream = [], []  # origin[k]: original index of the k-th old character
        for i, ch in enumerate(text, start):
            for c in self._clean_and_space_cjk(ch):
                origin.append(i)
                stream.extend((d, k > 0) for k, d in enumerate(_nfd(c)))  # (char, inserted?)
        i = 0
        while i < len(stream):  # canonical ordering: sort each run of marks by class
            j = i
            while j < len(stream) and _combining(stream[j][0]):
                j += 1
            stream[i:j] = sorted(stream[i:j], key=lambda item: _combining(item[0]))
            i = j + 1
        out, consumed = [], 0
        for c, inserted in stream:
            if inserted:  # an extra character shares the previous old character's position
                index = origin[consumed - 1] if consumed else start
            else:
                index = origin[consumed]
                consumed += 1
            out.extend((x, _kind(x), index) for x in self._finish(c))
        return out

    def normalize(self, text):
        """Normalise ``text``; return ``(normalised, positions)``."""
        triples = self._normalized(text, 0)
        return "".join(c for c, _, _ in triples), [i for _, _, i in triples]

    def split(self, text, start=0):
        """Normalise and pre-tokenise ``text``; positions are shifted by ``start``.

        ``start`` lets a caller split a slice of a longer string (the text
        between two special tokens) and still get offsets into the whole.
        """
        if text.isascii() and not _ASCII_CONTROL.search(text):
            # Fast path: clean ASCII text needs no character surgery, so word
            # characters map one-to-one onto the original (a `range`).
            if self.do_lower_case:
                text = text.lower()
            return [(m.group(), range(start + m.start(), start + m.end()))
                    for m in _ASCII_WORDS.finditer(text)]

        words = []
        chars, positions = [], []  # the word being built
        for c, kind, i in self._normalized(text, start):
            if kind == _LETTER:
                chars.append(c)
                positions.append(i)
                continue
            if chars:  # a space or a punctuation mark ends the current word
                words.append(("".join(chars), positions))
                chars, positions = [], []
            if kind == _PUNCT:
                words.append((c, [i]))
        if chars:
            words.append(("".join(chars), positions))
        return words
