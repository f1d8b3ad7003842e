"""Imports point one way: store <- importers, boot <- layering."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"store", "importers", "boot", "layering"}
ALLOWED = {"store": set(), "importers": {"store"}, "boot": {"store"},
           "layering": {"store", "importers", "boot"}}


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_import_direction(package: str) -> None:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for used in _imported_packages(path) - ALLOWED[package] - {package}:
            bad.append(f"{path.relative_to(ROOT)} imports {used}")
    assert not bad, bad


def test_library_never_prints_or_exits() -> None:
    bad = []
    for package in ("store", "importers", "boot"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                        and node.func.id == "print":
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} print()")
                if isinstance(node, ast.Attribute) and node.attr == "exit" and \
                        isinstance(node.value, ast.Name) and node.value.id == "sys":
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} sys.exit")
    assert not bad, bad
