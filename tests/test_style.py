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


def test_no_function_is_above_grade_c_and_no_module_over_500_lines():
    """Readable in one sitting: every function or method of the package at cyclomatic complexity 20
    or less (radon's grade C at most), every module under 500 lines."""
    try:
        import radon.complexity as radon
    except ImportError:
        pytest.fail("radon is not installed: pip install -e '.[test]'")
    too_complex, too_long = [], []
    for path in sorted((ROOT / "mnist_softmax").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") >= 500:
            too_long.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
        for block in radon.cc_visit(text):
            if block.complexity > 20:
                too_complex.append(f"{path.relative_to(ROOT)}:{block.lineno} {block.name}: {block.complexity}")
    assert too_complex == [] and too_long == []


def test_pip_install_ships_every_subpackage_and_every_page_file():
    """`pip install .` (not editable) installs the packages pyproject.toml lists and the package data
    it names: every folder of the package with Python in it, and every file of the page."""
    import tomllib

    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setup["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "mnist_softmax").rglob("__init__.py")}
    assert found - listed == set()
    patterns = setup["package-data"]["mnist_softmax"]
    web = [p for p in (ROOT / "mnist_softmax" / "web").iterdir() if p.suffix in (".html", ".css", ".js", ".json")]
    assert all(any(p.match(pattern) for pattern in patterns) for p in web), patterns
