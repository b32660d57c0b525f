"""``python -m mini_bert.explain``: which tokens made a fine-tuned BERT decide as it did.

    python -m mini_bert.explain --model runs/finetune/best --text "a gorgeous, witty film"
    python -m mini_bert.explain --model DIR --text "..." --text-pair "..." --output ig.html
    python -m mini_bert.explain --model DIR --input texts.txt --output heatmaps/   # + index.html

It prints each text's tokens with their scores and the predicted label; ``--output`` writes a
heatmap (``.html``: one self-contained page; ``.png``: matplotlib). With ``--input`` (one text a
line; a tab separates a text from its pair) ``--output`` is a directory that receives one heatmap
per line and ``index.html``. Errors in what the user gave print one ``error:`` line (exit 2).
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

from . import explain as X
from . import heatmap
from .config import BertConfig
from .errors import DataError, MissingFileError, OutputDirError, UsageError, UserError, fail
from .train_config import _Parser

FORMATS = (".html", ".png")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m mini_bert.explain",
                description="Token attributions (integrated gradients, gradient × input or "
                            "attention rollout) for a fine-tuned BertForSequenceClassification.")
    p.add_argument("--model", required=True, help="checkpoint directory (config.json, vocab.txt, "
                                                   "weights with a classification head)")
    p.add_argument("--text", help="the text to explain")
    p.add_argument("--text-pair", help="its second text, for sentence-pair models")
    p.add_argument("--input", help="file with one text per line (text<TAB>pair for pairs)")
    p.add_argument("--method", default="ig", choices=tuple(X.EXPLAINERS),
                   help="ig: integrated gradients; saliency: gradient × input; rollout: attention "
                        "rollout (default: ig)")
    p.add_argument("--steps", type=int, default=50, help="IG quadrature nodes (default: 50)")
    p.add_argument("--integration", default="gausslegendre", choices=X.METHODS,
                   help="IG quadrature rule, Captum's (default: gausslegendre)")
    p.add_argument("--target", help="class (id or label name) whose logit is explained "
                                    "(default: the predicted one)")
    p.add_argument("--max-length", type=int, default=512, help="truncate to this many tokens")
    p.add_argument("--output", help="FILE.html or FILE.png; with --input, a directory")
    p.add_argument("--format", default="html", choices=("html", "png"),
                   help="heatmap format in the --input/--output directory (default: html)")
    return p


def check_args(a: argparse.Namespace) -> None:
    """UsageError naming the flag, before any file is read."""
    if (a.text is None) == (a.input is None):
        raise UsageError("give either --text (one text) or --input (a file of texts), not "
                         + ("both" if a.text is not None else "neither"))
    if a.text_pair is not None and a.input is not None:
        raise UsageError("--text-pair goes with --text; in an --input file put the pair after a tab")
    if a.text is not None and not a.text.strip():
        raise UsageError("--text is empty")
    least = 1 if a.integration == "gausslegendre" else 2
    if a.method == "ig" and a.steps < least:
        raise UsageError(f"--steps must be >= {least} for --integration {a.integration}; got {a.steps}")
    if a.max_length < 3:
        raise UsageError(f"--max-length must be >= 3 ([CLS] text [SEP]); got {a.max_length}")
    if a.text is not None and a.output is not None and os.path.splitext(a.output)[1].lower() not in FORMATS:
        raise UsageError(f"--output {a.output}: the heatmap file must end in .html or .png")
    if a.input is not None and a.output is not None and os.path.isfile(a.output):
        raise OutputDirError(f"--output {a.output}: with --input this must be a directory, and it "
                             "is a file")


def read_texts(path: str) -> list[tuple[str, str | None]]:
    """(text, pair or None) per line of ``path``; a blank line or a line with two tabs is an error
    naming file:line."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise MissingFileError(f"--input {path}: no such file") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    rows = []
    for number, line in enumerate(lines, 1):
        parts = line.split("\t")
        if not line.strip() or len(parts) > 2 or not all(p.strip() for p in parts):
            what = "an empty line" if not line.strip() else \
                "more than one tab" if len(parts) > 2 else "an empty text around the tab"
            raise DataError(f"{path}:{number}: {what} (one text a line, or text<TAB>pair)")
        rows.append((parts[0], parts[1] if len(parts) == 2 else None))
    if not rows:
        raise DataError(f"{path}: no texts in the file")
    if len({pair is None for _, pair in rows}) > 1:
        raise DataError(f"{path}: some lines have a text pair and some do not")
    return rows


def load(model_dir: str, device: str = "cpu"):
    """(model in eval mode, tokenizer); a checkpoint without a trained classification head is a
    UsageError: its attributions would explain random weights."""
    from .checkpoint import CheckpointError
    from .model import BertForSequenceClassification
    from .tokenizer import BertTokenizer

    if not os.path.isdir(model_dir):
        raise MissingFileError(f"--model {model_dir}: no such directory")
    BertConfig.from_pretrained(model_dir)  # a clear error for a missing or broken config.json
    if not os.path.isfile(os.path.join(model_dir, "vocab.txt")):
        raise MissingFileError(f"--model {model_dir}: no vocab.txt (the tokenizer's vocabulary)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = BertForSequenceClassification.from_pretrained(model_dir, device=device)
    if any("fresh initialisation" in str(w.message) for w in caught):
        raise UsageError(f"--model {model_dir}: the checkpoint has no classification head "
                         "(classifier.weight); fine-tune it first (python -m mini_bert.finetune)")
    try:
        tok = BertTokenizer.from_pretrained(model_dir)
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"--model {model_dir}: cannot read the tokenizer files ({e})") from None
    return model.eval(), tok


def resolve_target(target: str | None, model) -> int | None:
    """A class id or a label name from config.id2label."""
    if target is None:
        return None
    names = model.config.id2label or {}
    by_name = {v: k for k, v in names.items()}
    if target in by_name:
        return by_name[target]
    if target.lstrip("-").isdigit() and 0 <= int(target) < model.config.num_labels:
        return int(target)
    raise UsageError(f"--target {target!r}: not a class id in [0, {model.config.num_labels}) nor a "
                     f"label name ({', '.join(map(str, names.values()))})")


def explain(a: argparse.Namespace, model, tok, texts: list[str], pairs: list[str] | None):
    kwargs = dict(max_length=a.max_length)
    if a.method != "rollout":
        kwargs["target"] = resolve_target(a.target, model)
    if a.method == "ig":
        kwargs.update(steps=a.steps, method=a.integration)
    return X.EXPLAINERS[a.method](model, tok, texts, pairs, **kwargs)


def report(e: X.Explanation, text: str) -> str:
    width = max(len(t) for t in e.tokens)
    rows = "\n".join(f"  {t:<{width}}  {s:+.5f}" for t, s in zip(e.tokens, e.scores))
    return f"{text}\n  {heatmap.summary(e)}\n{rows}"


def run(argv: list[str] | None = None) -> list[X.Explanation]:
    a = build_parser().parse_args(argv)
    check_args(a)
    rows = read_texts(a.input) if a.input is not None else [(a.text, a.text_pair)]
    model, tok = load(a.model)
    texts = [t for t, _ in rows]
    pairs = None if rows[0][1] is None else [p for _, p in rows]
    results = explain(a, model, tok, texts, pairs)
    for (text, pair), e in zip(rows, results):
        print(report(e, text if pair is None else f"{text} ||| {pair}"))
    if a.output is None:
        return results
    if a.input is None:
        write = heatmap.write_png if a.output.lower().endswith(".png") else heatmap.write_html
        write(a.output, results[0], a.text)
        print(f"wrote {a.output}")
        return results
    os.makedirs(a.output, exist_ok=True)
    entries = []
    for i, ((text, _), e) in enumerate(zip(rows, results), 1):
        name = f"{i:04d}.{a.format}"
        (heatmap.write_png if a.format == "png" else heatmap.write_html)(
            os.path.join(a.output, name), e, text)
        entries.append((name, text, e))
    print(f"wrote {len(entries)} heatmaps and {heatmap.write_index(a.output, entries)}")
    return results


def main(argv: list[str] | None = None) -> int:
    """0 on success; 2 with one ``error:`` line when the user's input is at fault."""
    try:
        run(argv)
    except SystemExit as e:  # --help, or a flag argparse could not parse (already said)
        return int(e.code or 0)
    except UserError as e:
        return fail(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
