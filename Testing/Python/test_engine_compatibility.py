"""The engine also runs inside 3D Slicer 5.8, whose Python is 3.9, and must stay Slicer-free."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[2] / "LiverVolumetry" / "LiverVolumetryLib"
FILES = sorted(ENGINE.glob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_engine_parses_as_python_3_9(path):
    ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 9))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_engine_postpones_annotations(path):
    """``X | None`` annotations only work on Python 3.9 with postponed evaluation."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    futures = {alias.name for node in tree.body if isinstance(node, ast.ImportFrom) and node.module == "__future__"
               for alias in node.names}
    has_code = any(not isinstance(node, (ast.Expr, ast.Import, ast.ImportFrom)) for node in tree.body)
    assert not has_code or "annotations" in futures


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_engine_never_imports_slicer_qt_or_vtk(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        for name in names:
            assert name.split(".")[0] not in {"slicer", "qt", "vtk", "ctk", "PythonQt"}, f"{path.name} imports {name}"
