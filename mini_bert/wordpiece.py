"""WordPiece: cut one word into vocabulary pieces, greedy longest match first.

"unaffable" with the BERT vocabulary becomes ``una ##ffa ##ble``: take the
longest prefix of the word that is in the vocabulary, then the longest
``##``-prefixed continuation of the rest, and so on.  If at some point no
piece matches, the *whole word* becomes ``[UNK]`` (not just the unmatched
tail), which is what BERT was trained with.
"""

from .basic_tokenizer import WHITESPACE_CHARS


def load_vocab(path):
    r"""Read ``vocab.txt``: one token per line, the line number is its id.

    Lines end at "\n" only, and trailing whitespace (a "\r" from a Windows
    file, stray spaces) is not part of the token; this is how the reference
    reads the file.  A token that occurs twice keeps its last line number.
    """
    vocab = {}
    with open(path, encoding="utf-8", newline="\n") as f:
        for index, line in enumerate(f):
            vocab[line.rstrip(WHITESPACE_CHARS)] = index
    return vocab


class WordPiece:
    """Greedy longest-match-first WordPiece over a ``{token: id}`` vocabulary."""

    def __init__(self, vocab, unk_token="[UNK]", prefix="##", max_input_chars_per_word=100):
        self.vocab = vocab
        self.unk_token = unk_token
        self.prefix = prefix
        self.max_input_chars_per_word = max_input_chars_per_word
        # No piece can be longer than the longest vocabulary entry, so the
        # search for the longest match need not start further away than that.
        self._longest = max((len(t) for t in vocab), default=0)
        self._cache = {}

    def tokenize(self, word):
        """Split ``word`` into ``[(token, id, start, end), ...]``.

        ``start:end`` is the span of ``word`` that the piece covers (without
        its ``##``), so callers can map every piece back to the original text.
        """
        pieces = self._cache.get(word)
        if pieces is None:
            pieces = self._tokenize(word)
            if len(self._cache) > 200_000:  # a bound, so that memory stays flat
                self._cache.clear()
            self._cache[word] = pieces
        return pieces

    def _tokenize(self, word):
        unk = [(self.unk_token, self.vocab.get(self.unk_token), 0, len(word))]
        if len(word) > self.max_input_chars_per_word:
            return unk  # very long "words" are usually junk (URLs, hashes...)
        pieces = []
        start = 0
        while start < len(word):
            prefix = self.prefix if start > 0 else ""
            end = min(len(word), start + self._longest - len(prefix))
            while end > start:
                token = prefix + word[start:end]
                token_id = self.vocab.get(token)
                if token_id is not None:
                    pieces.append((token, token_id, start, end))
                    break
                end -= 1
            else:
                return unk  # nothing matched at `start`: the word is unknown
            start = end
        return pieces
