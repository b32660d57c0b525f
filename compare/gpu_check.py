"""One command for a machine with an NVIDIA GPU: ``python -m compare.gpu_check``.

Runs the CUDA op-parity tests, the BERT output and gradient parity checks on CUDA, and the CUDA
benchmarks, each with its own time limit so the whole stays under 5 minutes, then writes a short
markdown report (default compare/results/gpu-report-<date>.md) and prints it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (title, command, time limit in seconds). Modules that do not exist yet are reported as skipped.
STEPS = [
    ("CUDA op parity (pytest, device=cuda)",
     [sys.executable, "-m", "pytest", "-q", "-x", "-k", "cuda", "-p", "no:cacheprovider", "tests"], 100),
    ("BERT outputs vs HF on CUDA", [sys.executable, "-m", "compare.outputs", "--device", "cuda"], 45),
    ("BERT gradients vs HF on CUDA", [sys.executable, "-m", "compare.gradients", "--device", "cuda"], 45),
    ("Engine benchmark on CUDA", [sys.executable, "-m", "compare.bench_engine", "--device", "cuda"], 45),
    ("BERT benchmark on CUDA (BERT-base, B=32, T=128)",
     [sys.executable, "-m", "compare.bench", "--device", "cuda"], 90),
]


def _run(title: str, cmd: list[str], limit: int) -> tuple[str, str, float]:
    module = cmd[2] if cmd[1] == "-m" else None
    if module and module.startswith("compare.") and importlib.util.find_spec(module) is None:
        return "skipped", f"{module} does not exist yet", 0.0
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit,
                              env={**os.environ, "MPLBACKEND": "Agg"})
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return "timeout", out[-3000:], time.perf_counter() - start
    status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    return status, (proc.stdout + proc.stderr)[-3000:], time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", type=Path,
                    default=ROOT / "compare" / "results" / f"gpu-report-{dt.date.today()}.md")
    args = ap.parse_args(argv)
    try:
        import torch
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        gpu = None
    if gpu is None:
        print("gpu_check: no CUDA GPU visible to torch on this machine; nothing to check.")
        return 2
    lines = [f"# GPU check, {dt.datetime.now():%Y-%m-%d %H:%M}", "", f"GPU: {gpu}", ""]
    failed = False
    for title, cmd, limit in STEPS:
        status, out, secs = _run(title, cmd, limit)
        failed |= status not in ("ok", "skipped")
        lines += [f"## {title}: {status} ({secs:.0f} s)", "", "```", out.strip(), "```", ""]
        print(f"{title}: {status} ({secs:.0f} s)", flush=True)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text("\n".join(lines))
    print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
