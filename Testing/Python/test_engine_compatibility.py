"""The engine also runs inside 3D Slicer 5.8, whose Python is 3.9, and must stay Slicer-free."""

from __future__ import annotations

import ast
import glob
import os
import shutil
import subprocess
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


# Imports the Slicer module and every engine and Slicer-side module under a real Python 3.9 with the third-party
# packages replaced by stubs: catches what parsing cannot, e.g. ``str | None`` evaluated at
# import time (a type alias, a default, a cast) or a 3.10+ standard-library name.
_IMPORT_ALL_UNDER_STUBS = r"""
import functools, importlib, importlib.abc, importlib.machinery, pkgutil, sys, types
from unittest import mock

THIRD_PARTY = {"numpy", "SimpleITK", "scipy", "torch", "monai", "safetensors", "onnxruntime", "radiomics",
               "yaml", "matplotlib", "slicerio", "pydicom", "tqdm", "pingouin",
               "slicer", "qt", "vtk", "ctk", "PythonQt"}

class Stubs(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    # A stub module answers capitalised names with a class (so the module can subclass it)
    # and every other name with a mock.
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in THIRD_PARTY:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = functools.lru_cache(None)(
            lambda name: type(name, (), {"__init__": lambda self, *a, **k: None}) if name[:1].isupper()
            else mock.MagicMock(name=spec.name + "." + name))
        return module
    def exec_module(self, module):
        pass

sys.meta_path.insert(0, Stubs())
sys.path.insert(0, sys.argv[1])
names = ["LiverVolumetry"] + [package + "." + info.name for package in ("LiverVolumetryLib", "LiverVolumetrySlicerLib")
                              for info in pkgutil.iter_modules(importlib.import_module(package).__path__)]
failures = []
for name in names:
    try:
        importlib.import_module(name)
    except Exception as error:
        failures.append(f"{name}: {type(error).__name__}: {error}")
print("\n".join(failures))
sys.exit(1 if failures else 0)
"""


def _python_3_9() -> str | None:
    candidates = [shutil.which("python3.9"), *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9")))]
    for candidate in candidates:
        if candidate and subprocess.run([candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 9)"],
                                        capture_output=True).returncode == 0:
            return candidate
    return None


def test_module_engine_and_slicer_side_import_on_python_3_9():
    python = _python_3_9()
    if python is None:
        pytest.skip("no Python 3.9 interpreter on this machine (3D Slicer 5.8's Python)")
    done = subprocess.run([python, "-I", "-B", "-c", _IMPORT_ALL_UNDER_STUBS, str(ENGINE.parent)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


PY39_ENV = ENGINE.parents[1] / ".venv-py39" / "bin" / "python"


def test_engine_runs_end_to_end_on_python_3_9(tmp_path, monkeypatch):
    """The demo, then segment and measure with the Slicer module's own arguments and event
    parsing, on Python 3.9 with ONNX Runtime as in Slicer 5.8; .ci/install.sh builds this
    environment where Python 3.9 exists."""
    if not PY39_ENV.exists():
        pytest.skip(f"no Python 3.9 engine environment at {PY39_ENV} (built by .ci/install.sh when python3.9 exists)")
    monkeypatch.syspath_prepend(str(ENGINE.parent))
    from LiverVolumetrySlicerLib import engine_cli

    env = {**os.environ, "PYTHONPATH": str(ENGINE.parent), "OMP_NUM_THREADS": "1"}

    def engine(*arguments: str) -> str:
        done = subprocess.run([str(PY39_ENV), "-B", "-m", engine_cli.CLI_MODULE, *arguments], capture_output=True,
                              text=True, timeout=300, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    demo = tmp_path / "demo"
    printed = engine("demo", "-o", str(demo), "--no-radiomics", "--device", "cpu", "--progress", "none")
    assert float(printed.split("Dice ")[1].split()[0]) > 0.9, printed
    image, out = demo / "phantom.nii.gz", tmp_path / "job"
    events = [engine_cli.parse_line(line) for line in
              engine(*engine_cli.segment_arguments(image, out, "cpu", radiomics=False)).splitlines()]
    assert [e.kind for e in events if e is not None][-1] == "case_done"
    segmented = engine_cli.read_case_row(out, "phantom")
    engine(*engine_cli.measure_arguments(image, demo / "phantom_liver.seg.nrrd", out, "phantom", radiomics=False))
    measured = engine_cli.read_case_row(out, "phantom")
    assert measured["volume_ml"] == pytest.approx(segmented["volume_ml"], rel=1e-6)
