"""The docs point at code that exists: every `file.py::name` in docs/architecture.md is defined there."""

import ast
import re

from conftest import ROOT


def _defined(path) -> set[str]:
    """Top-level functions and classes of a module, and Class.method for their methods."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names |= {f"{node.name}.{item.name}" for item in node.body if isinstance(item, ast.FunctionDef)}
    return names


def test_every_name_the_architecture_page_gives_exists():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    refs = re.findall(r"`([\w/]+\.py)::([\w.]+)`", text)
    assert len(refs) > 30
    missing = [f"{file}::{name}" for file, name in refs if name not in _defined(ROOT / "mnist_softmax" / file)]
    assert missing == []


def test_every_test_the_guarantees_page_names_exists():
    """docs/guarantees.md holds each promise to a test by name: a renamed or deleted test shows here."""
    text = (ROOT / "docs" / "guarantees.md").read_text(encoding="utf-8")
    tests = set().union(*(_defined(path) for path in (ROOT / "tests").glob("test_*.py")))
    files = {path.name for path in (ROOT / "tests").glob("test_*.py")}
    named = re.findall(r"`(?:(test_\w+\.py)(?:::)?)?(test_\w+)?`", text)
    assert len(named) > 40
    missing = [f or t for f, t in named if (f and f not in files) or (t and t not in tests)]
    assert missing == []
