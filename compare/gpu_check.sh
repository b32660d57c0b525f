#!/usr/bin/env bash
# The GPU checks in one command (see compare/gpu_check.py).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m compare.gpu_check "$@"
