"""The Slicer extension's files: CMake lists (every module file listed, nothing stale), the
extension metadata, icons and the extensions-index entry; read as text, no Slicer needed."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "LiverVolumetry"
GLUE_DIR = MODULE_DIR / "LiverVolumetrySlicerLib"
ENGINE_DIR = MODULE_DIR / "LiverVolumetryLib"
MODULE_CMAKE = MODULE_DIR / "CMakeLists.txt"
TOP_CMAKE = REPO / "CMakeLists.txt"


# --------------------------------------------------------------------------- CMake


def _cmake_list(name: str) -> list[str]:
    text = MODULE_CMAKE.read_text(encoding="utf-8")
    match = re.search(rf"set\({name}\s+(.*?)\)", text, re.S)
    assert match, name
    items = [line.split("#")[0].strip() for line in match.group(1).splitlines()]
    return [item.replace("${MODULE_NAME}", "LiverVolumetry") for item in items if item]


def _files_under(folder: Path) -> set[str]:
    return {p.relative_to(MODULE_DIR).as_posix() for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def test_cmake_lists_have_no_duplicates():
    for name in ("MODULE_PYTHON_SCRIPTS", "MODULE_PYTHON_RESOURCES"):
        items = _cmake_list(name)
        assert len(items) == len(set(items)), name


def test_every_file_listed_in_cmake_exists():
    for item in _cmake_list("MODULE_PYTHON_SCRIPTS") + _cmake_list("MODULE_PYTHON_RESOURCES"):
        assert (MODULE_DIR / item).is_file(), f"listed in {MODULE_CMAKE.name} but missing: {item}"


def test_every_python_file_is_listed_in_cmake():
    present = {p for p in _files_under(ENGINE_DIR) | _files_under(GLUE_DIR) if p.endswith(".py")}
    listed = set(_cmake_list("MODULE_PYTHON_SCRIPTS")) - {"LiverVolumetry.py"}
    assert present == listed, f"not listed: {sorted(present - listed)}; listed but absent: {sorted(listed - present)}"


def test_every_resource_and_model_file_is_listed_in_cmake():
    present = {p for p in _files_under(ENGINE_DIR) if not p.endswith(".py")} | _files_under(MODULE_DIR / "Resources")
    listed = set(_cmake_list("MODULE_PYTHON_RESOURCES"))
    assert present == listed, f"not listed: {sorted(present - listed)}; listed but absent: {sorted(listed - present)}"


def test_module_cmake_builds_scripted_module_with_its_test():
    text = MODULE_CMAKE.read_text(encoding="utf-8")
    assert "slicerMacroBuildScriptedModule(" in text
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    assert "file(glob" not in text.replace(" ", "").lower()


def test_extension_cmake_has_metadata_and_template_structure():
    text = TOP_CMAKE.read_text(encoding="utf-8")
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS"):
        assert re.search(rf'set\(EXTENSION_{key} "[^"]+"\)', text), key
    assert re.search(r'set\(EXTENSION_DEPENDS "[^"]*\bPyTorch\b[^"]*"\)', text)
    order = ["find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})", "add_subdirectory(LiverVolumetry)",
             "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"]
    positions = [text.index(line) for line in order]
    assert positions == sorted(positions)


# --------------------------------------------------------------------------- icons and catalog


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("path", [REPO / "LiverVolumetry.png", MODULE_DIR / "Resources" / "Icons" / "LiverVolumetry.png"],
                         ids=["extension", "module"])
def test_icon_is_128_png(path):
    assert _png_size(path) == (128, 128)


def test_extensions_index_entry():
    entry = json.loads((REPO / "LiverVolumetry.json").read_text(encoding="utf-8"))
    assert entry["category"] == "Segmentation"
    assert "PyTorch" in entry["build_dependencies"]
    assert entry["scm_url"].startswith("https://") and entry["$schema"].endswith(".json#")
