"""Layer-by-layer outputs of mini_bert vs HF transformers on a padded SST-2 dev batch.

    python -m compare.outputs [--model DIR] [--batch-size 32] [--plot compare/results/outputs.png]

For every hidden state (embeddings, then each layer), every layer's attention weights and the
pooled output it prints the largest differences, and draws them in a plot:
  * ours vs HF in float32 over real (unpadded) tokens: what a user sees; must be <= --tol;
  * HF float32 vs HF float64 over real tokens: the float32 floor, what HF itself is off by;
  * ours vs HF both in float64: must be ~1e-13; anything larger is a real implementation bug.
Exits with status 1 when parity fails.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import numpy as np

from mini_bert.testing import SST2_HINT, shared_sst2_dir

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PLOT = ROOT / "compare" / "results" / "outputs.png"
FLOAT64_TOL = 1e-10


def read_sentences(path: Path, n: int) -> list[str]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows)
        if "sentence" not in header:
            raise SystemExit(f"{path}:1: expected a 'sentence' column, got {header}")
        col = header.index("sentence")
        return [row[col] for _, row in zip(range(n), rows)]


def run_all(model_dir: str, batch: dict) -> dict[str, list[np.ndarray]]:
    """Every output, as float64 numpy arrays, of {ours, hf} x {float32, float64}."""
    import torch
    import transformers

    import mini_bert as mb
    import minigrad as mg

    hf = transformers.BertModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    ours = mb.BertModel.from_pretrained(model_dir)
    runs = {}
    for bits in ("32", "64"):
        if bits == "64":
            hf.double()
            ours.to(dtype=mg.float64)
        with torch.no_grad():
            r = hf(**{k: torch.tensor(v) for k, v in batch.items()}, output_hidden_states=True,
                   output_attentions=True)
        with mg.no_grad():
            o = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                     output_hidden_states=True, output_attentions=True)
        runs["hf" + bits] = [t.double().numpy() for t in
                             (*r.hidden_states, *r.attentions, r.pooler_output)]
        runs["ours" + bits] = [t.numpy().astype(np.float64) for t in
                               (*o.hidden_states, *o.attentions, o.pooler_output)]
    return runs


def output_names(num_layers: int) -> list[str]:
    return (["embeddings"] + [f"layer {i} hidden" for i in range(1, num_layers + 1)]
            + [f"layer {i} attention" for i in range(1, num_layers + 1)] + ["pooler"])


def real_rows(name: str, diff: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The entries belonging to real query tokens (padding positions are outputs nobody reads)."""
    if name == "pooler":
        return diff
    if "attention" in name:  # [B, heads, T, T]: query tokens are axis 2
        return diff.transpose(0, 2, 1, 3)[mask]
    return diff[mask]


def compare(runs: dict, mask: np.ndarray) -> list[dict]:
    names = output_names((len(runs["hf32"]) - 2) // 2)
    rows = []
    for i, name in enumerate(names):
        ours, hf, ours64, hf64 = (runs[k][i] for k in ("ours32", "hf32", "ours64", "hf64"))
        real = real_rows(name, np.abs(ours - hf), mask)
        rows.append({"output": name, "max_abs": real.max(),
                     "max_rel": real.max() / max(np.abs(real_rows(name, hf, mask)).max(), 1e-30),
                     "all_positions": np.abs(ours - hf).max(),
                     "hf_floor": real_rows(name, np.abs(hf - hf64), mask).max(),
                     "float64": np.abs(ours64 - hf64).max()})
    return rows


def print_table(rows: list[dict], tol: float) -> bool:
    header = (f"{'output':<20}{'max abs (real)':>16}{'max rel':>12}{'max abs (all)':>16}"
              f"{'HF32 vs HF64':>15}{'fp64 vs HF64':>15}  ok")
    print(header + "\n" + "-" * len(header))
    all_ok = True
    for r in rows:
        ok = r["max_abs"] <= tol and r["float64"] <= FLOAT64_TOL
        all_ok &= ok
        print(f"{r['output']:<20}{r['max_abs']:>16.3e}{r['max_rel']:>12.3e}"
              f"{r['all_positions']:>16.3e}{r['hf_floor']:>15.3e}{r['float64']:>15.3e}  "
              f"{'yes' if ok else 'NO'}")
    return all_ok


def plot(rows: list[dict], tol: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(11, 4.5))
    for key, label, marker in (("max_abs", "ours vs HF, float32, real tokens", "o"),
                               ("hf_floor", "HF float32 vs HF float64, real tokens (floor)", "s"),
                               ("float64", "ours vs HF, both float64", "^")):
        ax.semilogy(x, [max(r[key], 1e-17) for r in rows], marker=marker, label=label)
    ax.axhline(tol, color="red", linestyle="--", label=f"float32 tolerance {tol:g}")
    ax.set_xticks(x, [r["output"] for r in rows], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("max |difference|")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint directory (default: all-MiniLM-L6-v2)")
    sst2 = shared_sst2_dir()
    parser.add_argument("--data", type=Path, default=sst2 and sst2 / "dev.tsv",
                        help="an SST-2 style .tsv (default: SST-2's dev set)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tol", type=float, default=1e-5, help="float32 max abs tolerance")
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT)
    args = parser.parse_args(argv)

    import mini_bert as mb

    model_dir = args.model or mb.default_model_dir()
    if not os.path.isfile(os.path.join(model_dir, "vocab.txt")):
        raise SystemExit(f"{model_dir}: no vocab.txt to tokenize the batch with")
    if args.data is None or not args.data.is_file():
        raise SystemExit(f"{args.data or 'SST-2'}: not found ({SST2_HINT}; pass --data)")
    sentences = read_sentences(args.data, args.batch_size)
    enc = mb.BertTokenizer.from_pretrained(model_dir)(sentences, padding=True, return_tensors="np")
    batch = {k: np.asarray(enc[k], np.int64) for k in ("input_ids", "attention_mask",
                                                         "token_type_ids")}
    mask = batch["attention_mask"].astype(bool)
    print(f"{model_dir}\n{len(sentences)} sentences from {args.data}, padded to "
          f"{mask.shape[1]} tokens ({mask.sum()} real, {mask.size - mask.sum()} padding)\n")

    rows = compare(run_all(model_dir, batch), mask)
    ok = print_table(rows, args.tol)
    plot(rows, args.tol, args.plot, f"mini_bert vs transformers: {model_dir}\n"
                                    f"{len(sentences)} SST-2 dev sentences")
    print(f"\nplot: {args.plot}\nparity: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
