"""The Slicer module's dependency installer (LiverVolumetrySlicerLib/dependencies.py), run
without Slicer: which packages it installs, and that a declined install installs nothing
and opens no dialog that would hang a test run.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "LiverVolumetry"))
from LiverVolumetrySlicerLib import dependencies  # noqa: E402  (pure Python parts)


def test_dependency_list_covers_the_engine_requirements():
    """Everything pyproject needs is installed by the module (numpy/SimpleITK ship with Slicer, torch via PyTorch)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = {re.split(r"[<>=!~ ;\[]", req, maxsplit=1)[0].lower() for req in project["dependencies"]}
    provided = {re.split(r"[<>=!~ ]", req, maxsplit=1)[0].lower()
                for _, req in (*dependencies.REQUIREMENTS, dependencies.RADIOMICS)}
    assert wanted - {"numpy", "simpleitk", "torch"} <= provided


def test_missing_reports_an_absent_package(monkeypatch):
    monkeypatch.setattr(dependencies, "REQUIREMENTS", (("surely_not_a_module_xyz", "xyz>=1"), ("json", "json")))
    assert dependencies.missing(radiomics=False) == [("surely_not_a_module_xyz", "xyz>=1")]


def test_without_torch_nothing_that_needs_torch_is_installed(monkeypatch):
    """pip would pull a generic torch wheel for monai instead of PyTorchUtils' matching build."""
    monkeypatch.setattr(dependencies, "REQUIREMENTS", (("monai", "monai>=1.3"), ("surely_not_xyz", "xyz>=1")))
    monkeypatch.setattr(dependencies.importlib.util, "find_spec", lambda name: None)
    assert [name for name, _ in dependencies.missing(radiomics=False, torch=False)] == ["surely_not_xyz"]
    assert [name for name, _ in dependencies.missing(radiomics=False)] == ["monai", "surely_not_xyz"]


def _stand_in_install(monkeypatch, testing: bool, torch_installed: bool, user_agrees: bool) -> list:
    """slicer and PyTorchUtils stand-ins for ensure(); returns the log of dialogs and installs."""
    import types

    calls: list = []
    slicer = types.ModuleType("slicer")
    slicer.app = types.SimpleNamespace(commandOptions=lambda: types.SimpleNamespace(testingEnabled=testing))
    slicer.util = types.SimpleNamespace(
        confirmOkCancelDisplay=lambda *args, **kwargs: calls.append("asked") or user_agrees,
        WaitCursor=lambda: __import__("contextlib").nullcontext())

    class Logic:
        def torchInstalled(self):
            return torch_installed

        def installTorch(self, askConfirmation, torchVersionRequirement):  # None: the user cancelled
            calls.append("torch asked")
            return "torch" if user_agrees else None

    monkeypatch.setitem(sys.modules, "slicer", slicer)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=Logic))
    monkeypatch.setattr(dependencies, "REQUIREMENTS", (("surely_not_xyz", "xyz>=1"),))
    monkeypatch.setattr(dependencies, "torch_missing", lambda: not torch_installed)
    monkeypatch.setattr(dependencies, "_install_packages", lambda needed: calls.append(f"installed {needed}"))
    return calls


def test_declining_the_pytorch_install_is_a_no_not_an_error(monkeypatch):
    calls = _stand_in_install(monkeypatch, testing=False, torch_installed=False, user_agrees=False)
    assert dependencies.ensure(radiomics=False) is False
    assert calls == ["torch asked"]  # nothing else is asked or installed


def test_declining_the_package_install_installs_nothing(monkeypatch):
    calls = _stand_in_install(monkeypatch, testing=False, torch_installed=True, user_agrees=False)
    assert dependencies.ensure(radiomics=False) is False
    assert calls == ["asked"]


def test_a_test_run_installs_without_a_dialog_that_would_hang_it(monkeypatch):
    """Missing packages are still missing afterwards here (nothing really installs): that is
    the error, but no modal dialog was opened on the way."""
    calls = _stand_in_install(monkeypatch, testing=True, torch_installed=True, user_agrees=False)
    with pytest.raises(dependencies.DependencyError, match="still missing after installation: xyz>=1"):
        dependencies.ensure(radiomics=False)
    assert calls == ["installed [('surely_not_xyz', 'xyz>=1')]"]


def test_the_packages_are_installed_without_a_second_prompt_where_pip_install_would_ask(monkeypatch):
    """ensure() asks once; Slicer's newer pip_install (slicer.packaging) would ask again unless
    told interactive=False, which older ones do not take."""
    import types

    calls = []

    def older(args):
        calls.append((args, {}))

    def newer(args=None, *, requirements=None, interactive=True):
        calls.append((args, {"interactive": interactive}))

    for pip_install in (older, newer):
        slicer = types.ModuleType("slicer")
        slicer.util = types.SimpleNamespace(pip_install=pip_install)
        monkeypatch.setitem(sys.modules, "slicer", slicer)
        dependencies._pip("xyz>=1", "xyz", "")
    assert calls == [("xyz>=1", {}), ("xyz>=1", {"interactive": False})]
