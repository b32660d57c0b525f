"""A wheel built from this project installs and runs without the repository.

The wheel is built offline (``pip wheel --no-build-isolation``, with the setuptools of this
environment) and installed with ``--no-deps`` into a fresh virtual environment. That environment
gets its dependencies (numpy, tqdm, safetensors, ...) by a ``.pth`` line naming this environment's
site-packages: a line in a .pth file only appends a directory to sys.path, so the editable
install of the project living there (activated by its own .pth file) is not activated, and the
fresh environment's own site-packages, holding the wheel, comes first. Every command runs from a
directory outside the repository, so the checkout cannot shadow the installed package.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], cwd, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert p.returncode == 0, f"{' '.join(cmd)}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
    return p


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The python of a fresh venv holding only the wheel (plus this environment's dependencies)."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("building the wheel offline needs setuptools in this environment")
    tmp = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools writes build/ and *.egg-info/ into the tree it builds.
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", "build", "runs", "site", "student", "out"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp / "dist"), str(src)], cwd=tmp)
    (wheel,) = (tmp / "dist").glob("minigrad_bert-*.whl")
    venv.EnvBuilder(with_pip=False).create(tmp / "venv")
    python = tmp / "venv" / "bin" / "python"
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp)
    Path(site.stdout.strip(), "deps-from-the-test-environment.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
         "-q", str(wheel)], cwd=tmp)
    return python


def test_wheel_installs_the_library_not_the_checkout(installed, tmp_path):
    out = run([str(installed), "-c", "import importlib.util, mini_bert, minigrad, mini_bert.testing; "
               "print(mini_bert.__file__); print(minigrad.__file__); "
               "print(importlib.util.find_spec('compare'))"], cwd=tmp_path).stdout.split("\n")
    venv_dir = installed.parent.parent
    assert Path(out[0]).is_relative_to(venv_dir) and Path(out[1]).is_relative_to(venv_dir), out
    assert out[2] == "None"  # compare/ is the repository's report folder, not part of the package


@pytest.mark.parametrize("module", ["mini_bert.finetune", "mini_bert.demo"])
def test_installed_clis_answer_help(installed, tmp_path, module):
    out = run([str(installed), "-m", module, "--help"], cwd=tmp_path).stdout
    assert out.startswith(f"usage: python -m {module}")
