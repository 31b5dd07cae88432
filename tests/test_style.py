"""Lint is part of the test suite, so `pytest` alone is the whole check (CI runs exactly that)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    if shutil.which("ruff") is None and subprocess.run([sys.executable, "-m", "ruff", "--version"]).returncode:
        pytest.fail("ruff is not installed: pip install -e '.[test]'")
    # --no-cache: the tests write nothing into the checkout (conftest.py checks it)
    command = [sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)]
    out = subprocess.run(command, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
