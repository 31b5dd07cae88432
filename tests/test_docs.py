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
