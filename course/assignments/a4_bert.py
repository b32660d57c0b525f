"""Assignment 4: BERT's pieces: tokenization, embeddings, the model, sentence embeddings, real weights.

Oracles: HF ``tokenizers``/``transformers`` (BertTokenizerFast, BertModel) on random small
vocabularies and configs written to a temporary directory, and the real all-MiniLM-L6-v2 for
loading. A random model of ours runs first (the student's code), then HF's twin with the same
weights; both in float64, so the tolerance can be tight (see ``_oracle.TOL64``).
"""
from __future__ import annotations

import json
import struct
import tempfile

import numpy as np

from course.assignments._oracle import (as_numpy, expect_close, expect_grads, fail, hf_twin,
                                        minilm_dir, no_warnings, ours_model, quiet, random_batch,
                                        random_vocab, random_words, torch_batch, write_vocab)
from course.framework import Assignment, Task

LETTERS = "abcdefgh"  # the vocabularies use all but the last letter: words with an "h" are unknown


# ---- tokenization --------------------------------------------------------------------------------
def check_wordpiece(rng: np.random.Generator) -> None:
    from tokenizers import Tokenizer, models

    from mini_bert.wordpiece import WordPiece, load_vocab

    vocab = {t: i for i, t in enumerate(random_vocab(rng, LETTERS))}
    limit = int(rng.integers(6, 12))
    cases = [(vocab, w, limit) for w in random_words(rng, LETTERS, 60, longest=limit + 3)]
    real = load_vocab(minilm_dir() + "/vocab.txt")   # the real BERT vocabulary, real-looking words
    syllables = ["un", "aff", "able", "token", "iz", "ation", "play", "ing", "ed", "re", "qu", "x"]
    cases += [(real, "".join(rng.choice(syllables, size=int(rng.integers(1, 5)))), 100)
              for _ in range(20)]
    for vocab_, word, limit_ in cases:
        ref = Tokenizer(models.WordPiece(vocab=vocab_, unk_token="[UNK]",
                                         max_input_chars_per_word=limit_)).encode(word)
        want = [(t, i, s, e) for t, i, (s, e) in zip(ref.tokens, ref.ids, ref.offsets)]
        got = WordPiece(vocab_, max_input_chars_per_word=limit_).tokenize(word)
        got = [tuple(p) for p in got]
        if got != want:
            hint = ("continuation pieces are looked up with their '##' prefix; if nothing matches "
                    "at some position the whole word is [UNK]; words longer than "
                    f"max_input_chars_per_word={limit_} are [UNK]")
            fail(f"WordPiece.tokenize({word!r}) returned {got}, expected {want} ({hint})")


def check_normalize(rng: np.random.Generator) -> None:
    from tokenizers import normalizers, pre_tokenizers

    from mini_bert.basic_tokenizer import BasicTokenizer

    # Every kind of character the steps treat differently: letters (upper and lower case, Greek),
    # accented letters (precomposed and with a combining accent), CJK ideographs, control and
    # format characters (deleted), exotic spaces, ASCII and Unicode punctuation.
    pool = list("abcXYZ") + ["É", "ñ", "Ü", "e\u0301", "Σ", "ß", "中", "国", "\u3400", "\x00",
                             "\x07", "\u200b", "\ufffd", "\t", "\n", "\u3000", "\xa0", " ", "!",
                             "«", "。", ",", "-"]
    for _ in range(40):
        text = "".join(rng.choice(pool, size=int(rng.integers(1, 14)))) + "é"  # never pure ASCII
        lower, chinese = bool(rng.integers(2)), bool(rng.integers(2))
        strip = [None, True, False][int(rng.integers(3))]
        norm = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=chinese,
                                          strip_accents=strip, lowercase=lower)
        want = [w for w, _ in pre_tokenizers.BertPreTokenizer().pre_tokenize_str(
            norm.normalize_str(text))]
        got = [w for w, _ in BasicTokenizer(lower, strip, chinese).split(text)]
        if got != want:
            fail(f"BasicTokenizer(do_lower_case={lower}, strip_accents={strip}, "
                 f"tokenize_chinese_chars={chinese}).split({text!r}) gave words {got}, expected "
                 f"{want} (controls are deleted, whitespace becomes ' ', CJK ideographs get spaces "
                 "around them, accents are stripped after NFD, then each character is lowercased)")


def _tokenizer_cases(rng: np.random.Generator, tmp: str):
    """Our BertTokenizer over a random vocabulary written to ``tmp``, and random texts."""
    from mini_bert.tokenizer import BertTokenizer

    write_vocab(tmp, random_vocab(rng, LETTERS))
    words = random_words(rng, LETTERS.upper() + LETTERS + ".,", 40, longest=6)
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 9)))) for _ in range(30)]
    return BertTokenizer.from_pretrained(tmp), texts


def _hf_tokenizer(tmp: str):
    import transformers

    with quiet():
        return transformers.BertTokenizerFast.from_pretrained(tmp)


def _as_lists(enc: dict, keys: tuple[str, ...]) -> dict:
    return {k: [tuple(x) if isinstance(x, (list, tuple)) else x for x in enc[k]] for k in keys}


def check_assemble(rng: np.random.Generator) -> None:
    keys = ("input_ids", "token_type_ids", "offset_mapping")
    with tempfile.TemporaryDirectory() as tmp:
        ours, texts = _tokenizer_cases(rng, tmp)
        cases = [(texts[i], texts[i + 1] if rng.random() < 0.6 else None, bool(rng.random() < 0.8))
                 for i in range(0, len(texts) - 1, 2)]
        got = [_as_lists(ours(a, b, add_special_tokens=s, return_offsets_mapping=True), keys)
               for a, b, s in cases]
        hf = _hf_tokenizer(tmp)
        for (a, b, special), g in zip(cases, got):
            want = _as_lists(hf(a, b, add_special_tokens=special, return_offsets_mapping=True), keys)
            for key in keys:
                if g[key] != want[key]:
                    fail(f"tokenizer({a!r}, {b!r}, add_special_tokens={special}): {key} is "
                         f"{g[key]}, expected {want[key]} ([CLS] A [SEP] B [SEP]; [SEP] takes the "
                         "type of the text it ends; special tokens have offsets (0, 0))")


def check_truncate(rng: np.random.Generator) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ours, texts = _tokenizer_cases(rng, tmp)
        cases, got = [], []
        for i in range(0, len(texts) - 1, 2):
            pair = texts[i + 1] if rng.random() < 0.75 else None
            strategy = "longest_first" if pair is None else \
                ["longest_first", "longest_first", "only_first", "only_second"][int(rng.integers(4))]
            n = len(ours(texts[i], pair, truncation=False)["input_ids"])
            max_length = int(rng.integers(3 if pair is None else 4, n + 3))
            cases.append((texts[i], pair, dict(truncation=strategy, max_length=max_length)))
            try:
                got.append(list(ours(texts[i], pair, **cases[-1][2])["input_ids"]))
            except ValueError:
                got.append(ValueError)
        hf = _hf_tokenizer(tmp)
        for (a, b, kw), g in zip(cases, got):
            call = f"tokenizer({a!r}, {b!r}, truncation={kw['truncation']!r}, max_length={kw['max_length']})"
            try:
                want = list(hf(a, b, **kw)["input_ids"])
            except Exception:  # HF refuses: the sequence to cut is shorter than the excess
                want = ValueError
            if g != want:
                fail(f"{call} gave {'ValueError' if g is ValueError else f'input_ids {g}'}, expected "
                     f"{'ValueError (the sequence to truncate is too short)' if want is ValueError else want}"
                     " (longest_first: if the shorter text fits in half the budget it is kept "
                     "whole, otherwise each gets half, the odd token going to the longer one)")


# ---- the model -----------------------------------------------------------------------------------
def check_embeddings(rng: np.random.Generator) -> None:
    import minigrad as mg

    ours = ours_model("BertModel", rng)
    batch = random_batch(rng, ours.config.vocab_size, ours.config.type_vocab_size)
    ids, types = batch["input_ids"], batch["token_type_ids"]
    out = ours.embeddings(ids, types)
    weights = rng.standard_normal(out.shape)
    (out * mg.tensor(weights)).sum().backward()
    # Dropout: in training mode each output is zeroed with probability p or scaled by 1/(1-p).
    p = 0.5
    ours.embeddings.dropout.p = p
    ours.embeddings.train()
    mg.manual_seed(int(rng.integers(2**31)))
    dropped = as_numpy(ours.embeddings(ids, types))
    clean = as_numpy(out)
    kept = dropped != 0

    import torch

    hf = hf_twin(ours)
    ref = hf.embeddings(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(types))
    expect_close("BertEmbeddings output", out, ref, hint="e = LayerNorm(word[id] + type[type] + "
                 "position[t]) with positions 0..T-1")
    (ref * torch.from_numpy(weights)).sum().backward()
    expect_grads(ours, hf, only=("embeddings.",), hint="the gradient flows through every table")
    if kept.all() or not kept.any():
        fail("BertEmbeddings in training mode with dropout p=0.5 zeroed "
             f"{100 * (1 - kept.mean()):.0f}% of the outputs (apply self.dropout last)")
    expect_close("BertEmbeddings kept outputs in training mode", dropped[kept],
                 clean[kept] / (1 - p), hint="dropout goes after the LayerNorm")


def check_model_forward(rng: np.random.Generator) -> None:
    """Our BertModel vs HF's, every output and every gradient, on a random config and batch."""
    import minigrad as mg

    what = "BertModel.forward"
    hint = ("embeddings, then the additive mask, then the encoder layers, then the pooler on the "
            "last layer's [CLS] vector")
    ours = ours_model("BertModel", rng)
    batch = random_batch(rng, ours.config.vocab_size, ours.config.type_vocab_size)
    if rng.random() < 0.5:  # the default: no token types given means all 0
        del batch["token_type_ids"]
    out = ours(**batch, output_hidden_states=True, output_attentions=True)
    if out.pooler_output is None:
        fail(f"{what}: pooler_output is None (tanh(dense(h[:, 0])), the [CLS] vector)")
    w1, w2 = rng.standard_normal(out.last_hidden_state.shape), rng.standard_normal(out.pooler_output.shape)
    ((out.last_hidden_state * mg.tensor(w1)).sum() + (out.pooler_output * mg.tensor(w2)).sum()).backward()

    import torch

    hf = hf_twin(ours)
    ref = hf(**torch_batch(batch), output_hidden_states=True, output_attentions=True)
    expect_close(f"{what}: last_hidden_state", out.last_hidden_state, ref.last_hidden_state, hint=hint)
    expect_close(f"{what}: pooler_output", out.pooler_output, ref.pooler_output, hint=hint)
    for name in ("hidden_states", "attentions"):
        got, want = getattr(out, name), getattr(ref, name)
        if got is None or len(got) != len(want):
            fail(f"{what}: {name} should be a tuple of {len(want)} tensors, got "
                 f"{None if got is None else len(got)}")
        for i, (g, w) in enumerate(zip(got, want)):
            expect_close(f"{what}: {name}[{i}]", g, w, hint=hint)
    ((ref.last_hidden_state * torch.from_numpy(w1)).sum()
     + (ref.pooler_output * torch.from_numpy(w2)).sum()).backward()
    expect_grads(ours, hf, hint=hint)


def check_pooling(rng: np.random.Generator) -> None:
    import minigrad as mg
    from mini_bert.model import l2_normalize, mean_pooling

    ours = ours_model("BertModel", rng)
    batch = random_batch(rng, ours.config.vocab_size, ours.config.type_vocab_size)
    pooled = mean_pooling(ours(**batch).last_hidden_state, batch["attention_mask"])
    emb = l2_normalize(pooled)
    weights = rng.standard_normal(emb.shape)
    (emb * mg.tensor(weights)).sum().backward()
    zero = l2_normalize(mg.tensor(np.zeros((1, 3))))

    import torch

    hf = hf_twin(ours)
    ref = hf(**torch_batch(batch)).last_hidden_state
    # sentence-transformers' recipe for all-MiniLM-L6-v2, in torch.
    m = torch.from_numpy(batch["attention_mask"])[:, :, None].to(ref.dtype)
    pooled_ref = (ref * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)
    expect_close("mean_pooling", pooled, pooled_ref,
                 hint="the average of the vectors of the real (mask 1) tokens only")
    emb_ref = torch.nn.functional.normalize(pooled_ref, p=2, dim=1)
    expect_close("l2_normalize(mean_pooling(...))", emb, emb_ref, hint="x / max(||x||, eps)")
    (emb_ref * torch.from_numpy(weights)).sum().backward()
    expect_grads(ours, hf, hint="build both with minigrad ops, so the gradient flows")
    if not np.all(np.isfinite(zero.numpy())):
        fail("l2_normalize of a zero vector gives NaN: divide by max(||x||, eps)")


# ---- real weights ---------------------------------------------------------------------------------
def _write_safetensors(path: str, tensors: dict[str, tuple[str, tuple, bytes]]) -> None:
    """The format by hand (numpy has no bfloat16): 8-byte little-endian header size, the JSON
    header {name: {dtype, shape, data_offsets}}, then the bytes."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)   # safetensors pads the header to a multiple of 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"".join(d for _, _, d in tensors.values()))


def check_bf16(rng: np.random.Generator) -> None:
    from mini_bert.checkpoint import read_weights

    tensors = {}
    for i in range(int(rng.integers(2, 5))):
        shape = tuple(int(s) for s in rng.integers(1, 6, size=int(rng.integers(1, 4))))
        x = (rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 3)).astype(np.float32)
        tensors[f"layer.{i}.weight"] = ("BF16", shape, (x.view(np.uint32) >> 16).astype("<u2").tobytes())
    tensors["plain"] = ("F32", (3,), rng.standard_normal(3).astype("<f4").tobytes())
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/model.safetensors"
        _write_safetensors(path, tensors)
        got = read_weights(path)

        from safetensors.torch import load_file

        want = {k: v.float().numpy() for k, v in load_file(path).items()}
    for name, ref in want.items():
        if name not in got:
            fail(f"read_weights: tensor {name!r} is missing from the result")
        g = np.asarray(got[name])
        if g.dtype != np.float32 or g.shape != ref.shape:
            fail(f"read_weights: {name!r} came back as {g.dtype} {g.shape}, expected float32 {ref.shape}")
        if not np.array_equal(g, ref):
            fail(f"read_weights: the values of the bfloat16 tensor {name!r} are wrong (a bf16 "
                 "number is the top 16 bits of a float32: widen to uint32 and shift left by 16; "
                 "data offsets count from the end of the 8 + n header bytes)")


def check_key_names(rng: np.random.Generator) -> None:
    import os

    from safetensors.numpy import save_file

    import minigrad as mg
    from mini_bert import BertForSequenceClassification, BertModel
    from mini_bert.checkpoint import CheckpointError, read_weights

    source = ours_model("BertForSequenceClassification", rng, num_labels=int(rng.integers(2, 4)))
    batch = random_batch(rng, source.config.vocab_size, source.config.type_vocab_size)
    with tempfile.TemporaryDirectory() as tmp:
        source.to(dtype=mg.float32).save_pretrained(f"{tmp}/original")
        weights = read_weights(f"{tmp}/original")

        def save(state: dict, name: str) -> str:
            os.makedirs(f"{tmp}/{name}")
            source.config.save_pretrained(f"{tmp}/{name}")
            save_file(state, f"{tmp}/{name}/model.safetensors", metadata={"format": "pt"})
            return f"{tmp}/{name}"

        # An old TF-converted checkpoint: LayerNorm gamma/beta, and the position_ids buffer.
        old = {(k.removesuffix("weight") + "gamma" if "LayerNorm" in k and k.endswith("weight") else
                k.removesuffix("bias") + "beta" if "LayerNorm" in k and k.endswith("bias") else k): v
               for k, v in weights.items()}
        old["bert.embeddings.position_ids"] = np.arange(source.config.max_position_embeddings)[None]
        # A base checkpoint, as BertModel saves it: no "bert." prefix, no head.
        base = {k.removeprefix("bert."): v for k, v in weights.items() if k.startswith("bert.")}
        cases = [("a head checkpoint with LayerNorm gamma/beta names", "old", old,
                  BertForSequenceClassification),
                 ("the same checkpoint into BertModel (its head is skipped)", "old", old, BertModel),
                 ("a BertModel checkpoint into BertForSequenceClassification (a new head)", "base",
                  base, BertForSequenceClassification)]
        outputs = []
        for what, name, state, cls in cases:
            path = f"{tmp}/{name}" if os.path.isdir(f"{tmp}/{name}") else save(state, name)
            try:
                with no_warnings():
                    ours = cls.from_pretrained(path).to(dtype=mg.float64)
            except CheckpointError as e:
                fail(f"loading {what} raised CheckpointError: {str(e).splitlines()[0]} ... "
                     "(rename gamma/beta to weight/bias; keys outside 'bert.' in a head model, and "
                     "the pooler's, are head keys, which may be missing or extra)")
            with mg.no_grad():
                out = ours(**batch)
            outputs.append((what, out.last_hidden_state if cls is BertModel else out.logits))
        broken = {k: v for k, v in base.items() if not k.endswith("attention.self.query.weight")}
        try:
            with no_warnings():
                BertModel.from_pretrained(save(broken, "broken"))
        except CheckpointError:
            pass
        else:
            fail("a checkpoint without the encoder's query weights loaded without an error: only "
                 "head (and pooler) weights may be missing")

        import torch
        import transformers

        with quiet():
            hf = transformers.BertForSequenceClassification.from_pretrained(
                f"{tmp}/original", attn_implementation="eager").double().eval()
    with torch.no_grad():
        ref = hf(**torch_batch(batch))
        ref_hidden = hf.bert(**torch_batch(batch)).last_hidden_state
    for (what, got), want in zip(outputs[:2], (ref.logits, ref_hidden)):
        expect_close(f"{what}: {'logits' if want is ref.logits else 'last_hidden_state'}", got, want)


def check_load_minilm(rng: np.random.Generator) -> None:
    import minigrad as mg
    from mini_bert import BertForSequenceClassification, BertModel, BertTokenizer

    path = minilm_dir()
    ours = BertModel.from_pretrained(path)
    if ours.training:
        fail("from_pretrained should return the model in eval mode (as HF does), so dropout is off")
    labels = int(rng.integers(3, 6))  # a head model from a base checkpoint: a new head
    with no_warnings():
        model = BertForSequenceClassification.from_pretrained(path, num_labels=labels)
    if model.classifier.out_features != labels:
        fail("from_pretrained(path, num_labels=k) must apply the override to the config "
             "before building the model")
    words = ["the", "movie", "was", "not", "bad", "at", "all", "tokenizers", "love", "rain", "!"]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(2, 8)))) for _ in range(3)]
    batch = dict(BertTokenizer.from_pretrained(path)(texts, padding=True, return_tensors="np"))
    with mg.no_grad():
        got = ours(**batch)

    import torch
    import transformers

    with quiet():
        hf = transformers.BertModel.from_pretrained(path, attn_implementation="eager").eval()
    with torch.no_grad():
        want = hf(**torch_batch(batch))
    # float32 through 6 layers of 384 features: the two libraries' roundings differ by ~1e-6.
    expect_close("all-MiniLM-L6-v2 last_hidden_state", got.last_hidden_state,
                 want.last_hidden_state, tol=1e-4,
                 hint="build the config from config.json, the model, then load the matched "
                      "state dict and return it in eval mode")
    expect_close("all-MiniLM-L6-v2 pooler_output", got.pooler_output, want.pooler_output, tol=1e-4)


ASSIGNMENT = Assignment(id="a4", title="BERT: tokenizer, embeddings, the model, real weights", tasks=[
    Task("a4.wordpiece", "WordPiece: greedy longest match first", 4,
         ["mini_bert/wordpiece.py:WordPiece._tokenize"],
         "from each position take the longest vocabulary piece (with '##' after the first); "
         "if none matches, the whole word is [UNK]", check_wordpiece),
    Task("a4.normalize", "Basic tokenizer: clean, CJK, accents, lowercase per character", 3,
         ["mini_bert/basic_tokenizer.py:BasicTokenizer._clean_and_space_cjk",
          "mini_bert/basic_tokenizer.py:BasicTokenizer._finish"],
         "use is_control, is_whitespace, is_cjk, _is_stripped_mark and _lower", check_normalize),
    Task("a4.assemble", "[CLS] A [SEP] B [SEP]: ids, token types, offsets", 2,
         ["mini_bert/tokenizer.py:BertTokenizer._assemble"],
         "pieces are (token, id, start, end); special tokens get offsets (0, 0)", check_assemble),
    Task("a4.truncate", "Truncation: longest_first, only_first, only_second", 4,
         ["mini_bert/tokenizer.py:BertTokenizer._truncate"],
         "budget = max_length - special tokens; longest_first keeps a short text whole if it "
         "fits in half the budget", check_truncate),
    Task("a4.embeddings", "Embeddings: word + position + token type, LayerNorm, dropout", 3,
         ["mini_bert/model.py:BertEmbeddings.forward"],
         "sum the three lookups (positions 0..T-1), then LayerNorm, then dropout", check_embeddings),
    Task("a4.model_forward", "BertModel.forward and the pooler", 3,
         ["mini_bert/model.py:BertModel.forward", "mini_bert/model.py:BertPooler.forward"],
         "ids -> embeddings -> encoder (with the additive mask) -> pooler(tanh(dense(h[:, 0])))",
         check_model_forward),
    Task("a4.pooling", "Sentence embeddings: masked mean pooling, L2 normalisation", 2,
         ["mini_bert/model.py:mean_pooling", "mini_bert/model.py:l2_normalize"],
         "sum the real tokens' vectors / their count; then x / max(||x||, eps)", check_pooling),
    Task("a4.bf16", "Reading bfloat16 tensors from a safetensors file", 3,
         ["mini_bert/checkpoint.py:_bf16_tensors"],
         "8-byte little-endian header length, JSON header, then the bytes; bf16 << 16 is float32",
         check_bf16),
    Task("a4.key_names", "Checkpoint key names: gamma/beta, head or encoder", 2,
         ["mini_bert/checkpoint.py:_canonical_name", "mini_bert/checkpoint.py:_is_head_key"],
         "'...LayerNorm.gamma' -> '...LayerNorm.weight', beta -> bias; head keys: the pooler's, and "
         "in a head model everything outside 'bert.'", check_key_names),
    Task("a4.load_pretrained", "Loading the real all-MiniLM-L6-v2", 3,
         ["mini_bert/checkpoint.py:load_pretrained"],
         "config from the directory (with overrides), the model, match_state_dict, load, to(device), eval()",
         check_load_minilm),
])
