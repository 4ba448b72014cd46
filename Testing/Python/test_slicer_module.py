"""Checks of the 3D Slicer extension that run without Slicer (pytest in CI).

Static checks of the module source, its .ui file, CMake lists, icons and catalog entry;
the Slicer API names the module uses against a list verified in Slicer's source
(slicer_api_names.py); and the pure-Python engine-CLI glue against the real engine CLI.
The whole workflow inside Slicer is tested by LiverVolumetryTest in LiverVolumetry.py.
"""

from __future__ import annotations

import ast
import py_compile
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import slicer_api_names as api

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "LiverVolumetry"
MODULE_FILE = MODULE_DIR / "LiverVolumetry.py"
GLUE_DIR = MODULE_DIR / "LiverVolumetrySlicerLib"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "LiverVolumetry.ui"

sys.path.insert(0, str(MODULE_DIR))  # LiverVolumetrySlicerLib, imported by the job-folder tests

SOURCES = [MODULE_FILE, *sorted(GLUE_DIR.glob("*.py"))]


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


# --------------------------------------------------------------------------- compile


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_source_compiles(path, tmp_path):
    py_compile.compile(str(path), cfile=str(tmp_path / "out.pyc"), doraise=True)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_source_is_python39_syntax(path):
    """Slicer 5.8 bundles Python 3.9: no newer syntax in the Slicer-side files."""
    ast.parse(path.read_text(encoding="utf-8"), feature_version=(3, 9))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_union_annotations_are_not_evaluated_at_runtime(path):
    """``X | Y`` annotations need ``from __future__ import annotations`` on Python 3.9."""
    tree = _tree(path)
    future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in tree.body)
    annotations = [n.annotation for n in ast.walk(tree) if isinstance(n, (ast.arg, ast.AnnAssign)) and n.annotation]
    annotations += [n.returns for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.returns]
    uses_union = any(isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.BitOr)
                     for a in annotations for sub in ast.walk(a))
    assert future or not uses_union


# --------------------------------------------------------------------------- .ui file


def _ui_root() -> ET.Element:
    return ET.parse(UI_FILE).getroot()


def _ui_widgets() -> dict[str, str]:
    """Widget name -> class for every widget in the .ui file."""
    return {w.get("name"): w.get("class") for w in _ui_root().iter("widget")}


def _ui_parameter_names() -> dict[str, str]:
    """SlicerParameterName -> widget name."""
    names = {}
    for widget in _ui_root().iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                names[prop.findtext("string")] = widget.get("name")
    return names


def _parameter_fields() -> dict[str, str]:
    """Field name -> annotation source of the @parameterNodeWrapper class of the module."""
    for node in ast.walk(_tree(MODULE_FILE)):
        if isinstance(node, ast.ClassDef) and any(ast.unparse(d) == "parameterNodeWrapper" for d in node.decorator_list):
            return {s.target.id: ast.unparse(s.annotation) for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError("no @parameterNodeWrapper class in LiverVolumetry.py")


def test_ui_is_valid_xml_with_qmrmlwidget_root():
    root = _ui_root()
    assert root.tag == "ui"
    assert root.find("widget").get("class") == "qMRMLWidget"


def test_every_slicer_parameter_name_is_a_parameter_field_and_back():
    assert set(_ui_parameter_names()) == set(_parameter_fields())


def test_parameter_widgets_have_a_gui_connector_for_their_type():
    """The parameterNodeWrapper connectors (guiConnectors.py) pair these widget classes and types."""
    widgets, parameters = _ui_widgets(), _ui_parameter_names()
    for field, annotation in _parameter_fields().items():
        widget_class = widgets[parameters[field]]
        if "vtkMRML" in annotation:
            assert widget_class == "qMRMLNodeComboBox", field
        elif annotation == "bool" or annotation.startswith("Annotated[bool"):
            assert widget_class == "QCheckBox", field
        elif "pathlib.Path" in annotation:
            assert widget_class == "ctkPathLineEdit", field
        elif annotation.startswith("Annotated[str") and "Choice(" in annotation:
            assert widget_class == "QComboBox", field
        else:
            raise AssertionError(f"no known GUI connector for {field}: {annotation}")


def test_every_ui_attribute_the_module_uses_exists():
    used = {n.attr for n in ast.walk(_tree(MODULE_FILE))
            if isinstance(n, ast.Attribute) and ast.unparse(n.value) == "self.ui"}
    assert used, "the module uses no self.ui widgets?"
    assert used <= set(_ui_widgets()), used - set(_ui_widgets())


def test_node_selectors_get_the_scene():
    connected = {c.findtext("receiver") for c in _ui_root().iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    selectors = {name for name, cls in _ui_widgets().items() if cls == "qMRMLNodeComboBox"}
    assert selectors and selectors <= connected


def test_gui_connection_keeps_a_tag_that_disconnects():
    """Slicer's connectGui() returns None (parameterNodeWrapper/wrapper.py, issue #7547), so its
    result cannot be given to disconnectGui(): exit()/cleanup() would leave the widgets bound and
    every enter() would bind them once more. connectParametersToGui() returns the real tag."""
    calls = {ast.unparse(n.func) for n in ast.walk(_tree(MODULE_FILE)) if isinstance(n, ast.Call)}
    assert "self._parameterNode.connectGui" not in calls
    assert "self._parameterNode.connectParametersToGui" in calls
    assigned = {ast.unparse(n.value.func) for n in ast.walk(_tree(MODULE_FILE))
                if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call)
                and ast.unparse(n.targets[0]) == "self._parameterNodeGuiTag"}
    assert assigned == {"self._parameterNode.connectParametersToGui"}


def test_ui_properties_are_verified_for_their_widget_class():
    """Every <property> set in the .ui exists on that class (slicer_api_names.UI_PROPERTIES);
    the dynamic SlicerParameterName (stdset=0) is the parameterNodeWrapper binding."""
    for widget in _ui_root().iter("widget"):
        for prop in widget.findall("property"):
            name = prop.get("name")
            if name == "SlicerParameterName":
                assert prop.get("stdset") == "0", widget.get("name")
                continue
            assert name in api.UI_PROPERTIES.get(widget.get("class"), {}), (widget.get("name"), name)


def test_custom_widgets_are_declared():
    declared = {c.findtext("class") for c in _ui_root().iter("customwidget")}
    used = {cls for cls in _ui_widgets().values() if not cls.startswith("Q")}
    assert used <= declared


# --------------------------------------------------------------------------- Slicer API names


def _imported_module_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {a.asname or a.name for a in node.names if a.name[:1].islower()}
    return names


def _collect_api_use() -> dict[str, set]:
    """Slicer names the module's files use, by category of slicer_api_names."""
    used = {"util": set(), "app": set(), "modules": set(), "scene": set(), "mrml": set(), "imports": set(),
            "qtvtk": set(), "signals": set()}
    receivers: dict[str, set] = {key: set() for key in api.SLICER_OBJECT_METHODS}
    for path in SOURCES:
        tree = _tree(path)
        modules = _imported_module_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "slicer.util":
                used["util"] |= {a.name for a in node.names}
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "slicer":
                used["imports"] |= {f"{node.module}.{a.name}" for a in node.names}
            if not isinstance(node, ast.Attribute):
                continue
            if ast.unparse(node).split(".")[0] in ("qt", "vtk", "ctk"):
                used["qtvtk"].add(ast.unparse(node))
            owner = ast.unparse(node.value)
            if owner == "slicer.util":
                used["util"].add(node.attr)
            elif owner == "slicer.app":
                used["app"].add(node.attr)
            elif owner == "slicer.modules":
                used["modules"].add(node.attr)
            elif owner == "slicer.mrmlScene" and node.attr.endswith("Event"):
                used["scene"].add(node.attr)
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)):
            method, owner = call.func.attr, call.func.value
            owner_text = ast.unparse(owner)
            if method[:1].isupper() and not (isinstance(owner, ast.Name) and owner.id in modules):
                if owner_text not in ("slicer.util", "slicer.app", "slicer.modules"):
                    used["mrml"].add(method)
            if owner_text in receivers and method[:1].islower():
                receivers[owner_text].add(method)
            if method == "connect" and call.args and isinstance(call.args[0], ast.Constant):
                used["signals"].add(call.args[0].value)
    # keep the longest dotted names only (vtk.vtkCommand.ModifiedEvent, not vtk.vtkCommand)
    used["qtvtk"] = {n for n in used["qtvtk"] if not any(o.startswith(n + ".") for o in used["qtvtk"])}
    used["objects"] = receivers
    return used


USED = _collect_api_use()


@pytest.mark.parametrize("category, verified", [
    ("util", api.SLICER_UTIL), ("app", api.SLICER_APP), ("modules", api.SLICER_MODULES),
    ("scene", api.SCENE_ATTRIBUTES), ("mrml", api.MRML_METHODS), ("imports", api.SLICER_IMPORTS),
    ("qtvtk", api.QT_VTK), ("signals", api.SIGNALS),
])
def test_module_uses_only_verified_slicer_names(category, verified):
    assert USED[category], f"nothing collected for {category}: the collector is broken"
    unverified = USED[category] - set(verified)
    assert not unverified, f"not verified in Slicer's source: {sorted(unverified)}"
    stale = set(verified) - USED[category]
    assert not stale, f"verified but unused (remove from slicer_api_names.py): {sorted(stale)}"


@pytest.mark.parametrize("receiver", sorted(api.SLICER_OBJECT_METHODS))
def test_methods_on_slicer_objects_are_verified(receiver):
    used, verified = USED["objects"][receiver], set(api.SLICER_OBJECT_METHODS[receiver])
    assert used, f"no call on {receiver} collected: rename in the list or the code"
    assert used == verified, f"unverified {sorted(used - verified)}, unused {sorted(verified - used)}"


def test_every_verified_name_names_its_source_file():
    tables = [api.SLICER_UTIL, api.SLICER_APP, api.SLICER_MODULES, api.SCENE_ATTRIBUTES, api.MRML_METHODS,
              api.SLICER_IMPORTS, api.QT_VTK, api.SIGNALS,
              *api.SLICER_OBJECT_METHODS.values(), *api.UI_PROPERTIES.values()]
    for table in tables:
        for name, source in table.items():
            assert re.search(r"\.(py|h|cxx|md)\b", source), f"{name}: {source}"


def test_collector_flags_an_invented_call(tmp_path, monkeypatch):
    """The API check can fail: a made-up slicer.util call and MRML method are caught."""
    fake = tmp_path / "Fake.py"
    fake.write_text("import slicer\nslicer.util.inventedHelper()\nnode = None\nnode.MadeUpMethod()\n")
    monkeypatch.setattr(sys.modules[__name__], "SOURCES", [fake])
    used = _collect_api_use()
    assert "inventedHelper" in used["util"] - set(api.SLICER_UTIL)
    assert "MadeUpMethod" in used["mrml"] - set(api.MRML_METHODS)


# --------------------------------------------------------------------------- module metadata


def _module_init_assignments() -> dict[str, str]:
    values = {}
    for node in ast.walk(_tree(MODULE_FILE)):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = ast.unparse(node.targets[0])
            if target.startswith("self.parent."):
                values[target[len("self.parent."):]] = node.value
    return values


def test_module_title_categories_and_citations():
    values = _module_init_assignments()
    assert ast.literal_eval(values["title"]) == "Liver Volumetry"
    assert ast.literal_eval(values["categories"]) == ["Segmentation"]
    source = MODULE_FILE.read_text(encoding="utf-8")
    for needle in ("Gross", "Eur Radiol", "Kavur", "Med Image Anal", "CC BY-SA 4.0"):
        assert needle in source, needle


def test_module_has_widget_logic_and_test_classes():
    classes = {n.name for n in _tree(MODULE_FILE).body if isinstance(n, ast.ClassDef)}
    assert {"LiverVolumetry", "LiverVolumetryWidget", "LiverVolumetryLogic", "LiverVolumetryTest"} <= classes


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_files_stay_small(path):
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 420


# --------------------------------------------------------------------------- job folders


@pytest.fixture
def jobs_module(monkeypatch, tmp_path):
    """LiverVolumetrySlicerLib.jobs imported against stand-in slicer/qt/vtk modules."""
    import importlib
    import types

    slicer = types.ModuleType("slicer")
    slicer.util = types.SimpleNamespace(tempDirectory=lambda key: str(tmp_path / key))
    (tmp_path / "LiverVolumetry").mkdir()
    monkeypatch.setitem(sys.modules, "slicer", slicer)
    monkeypatch.setitem(sys.modules, "qt", types.ModuleType("qt"))
    monkeypatch.setitem(sys.modules, "vtk", types.ModuleType("vtk"))
    names = [f"LiverVolumetrySlicerLib.{n}" for n in ("process", "jobs", "segmentation_io", "table")]
    for name in names:
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield importlib.import_module("LiverVolumetrySlicerLib.jobs"), tmp_path / "LiverVolumetry"
    for name in names:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("job", ["segment", "measure"])
def test_a_failure_while_preparing_a_job_removes_its_folder(jobs_module, monkeypatch, job):
    """Reading the segment before the start (checksum, edited?) can fail: no folder is left behind."""
    jobs, work_dir = jobs_module
    io = jobs.segmentation_io

    def unreadable(*args):
        raise RuntimeError("segment unreadable")

    monkeypatch.setattr(io, "save_volume", lambda volume, path: Path(path).write_text("x"))
    monkeypatch.setattr(io, "export_liver_mask", lambda segmentation, volume, path: Path(path).write_text("x"))
    monkeypatch.setattr(io, "segment_checksum", unreadable)
    monkeypatch.setattr(io, "was_edited", unreadable)
    monkeypatch.setattr(io, "check_one_liver_segment", lambda segmentation: None)
    volume = type("Volume", (), {"GetName": lambda self: "scan"})()
    with pytest.raises(RuntimeError, match="segment unreadable"):
        if job == "segment":
            jobs.start_segmentation(volume, object(), "cpu")
        else:
            jobs.start_measurement(volume, object())
    assert not work_dir.exists()
