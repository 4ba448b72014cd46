"""User flows of the Slicer module (LiverVolumetry.py and its glue), run without Slicer.

``slicer``, ``qt`` and ``vtk`` are small stand-ins (as in test_slicer_process.py); the module
file itself is imported against them so that the widget's button logic can be driven: a
second click delivered while a first one is still busy, closing Slicer during a run,
engine output in another encoding, a table exported without a file extension.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

from test_slicer_process import MODULE_DIR, _script_process, glue  # noqa: F401  (glue is a fixture)

GLUE_MODULES = ("process", "jobs", "segmentation_io", "table", "sample")


class _Widget(types.SimpleNamespace):
    """A Qt widget stand-in: properties are plain attributes."""

    def appendPlainText(self, text):
        self.lines = [*getattr(self, "lines", []), text]

    def property(self, name):
        return None


def _stand_in_slicer(monkeypatch):
    """Just enough of slicer/qt/vtk to import LiverVolumetry.py and build its widget by hand."""
    slicer = types.ModuleType("slicer")
    util = types.ModuleType("slicer.util")
    util.VTKObservationMixin = type("VTKObservationMixin", (), {"__init__": lambda self: None})
    util.errorDisplay = lambda message, **kwargs: slicer.errors.append(message)
    util.tempDirectory = lambda key: None
    slicer.util, slicer.errors = util, []
    slicer.vtkMRMLScalarVolumeNode = type("vtkMRMLScalarVolumeNode", (), {})
    slicer.vtkMRMLSegmentationNode = type("vtkMRMLSegmentationNode", (), {})
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = lambda cls: cls
    wrapper.Choice = wrapper.Default = lambda *args: None
    scripted = types.ModuleType("slicer.ScriptedLoadableModule")
    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleTest",
                 "ScriptedLoadableModuleWidget"):
        setattr(scripted, name, type(name, (), {"__init__": lambda self, *args: None}))
    vtk = types.ModuleType("vtk")
    vtk.VTK_OBJECT = "vtkObject"
    vtk.calldata_type = lambda kind: (lambda function: function)
    vtk.vtkCommand = types.SimpleNamespace(ModifiedEvent=33)
    for name, module in {"slicer": slicer, "slicer.util": util, "slicer.parameterNodeWrapper": wrapper,
                         "slicer.ScriptedLoadableModule": scripted, "qt": types.ModuleType("qt"), "vtk": vtk}.items():
        monkeypatch.setitem(sys.modules, name, module)
    return slicer


@pytest.fixture
def module(monkeypatch):
    """LiverVolumetry.py imported against the stand-ins (fresh glue modules)."""
    slicer = _stand_in_slicer(monkeypatch)
    monkeypatch.syspath_prepend(str(MODULE_DIR))
    package = importlib.import_module("LiverVolumetrySlicerLib")
    for name in GLUE_MODULES:  # 'from package import x' would reuse a submodule bound to older stand-ins
        monkeypatch.delitem(sys.modules, f"LiverVolumetrySlicerLib.{name}", raising=False)
        monkeypatch.delattr(package, name, raising=False)
    spec = importlib.util.spec_from_file_location("LiverVolumetry", MODULE_DIR / "LiverVolumetry.py")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    loaded.slicer_stand_in = slicer
    yield loaded
    for name in GLUE_MODULES:
        sys.modules.pop(f"LiverVolumetrySlicerLib.{name}", None)


class FakeLogic:
    """The logic as the widget sees it: records the runs it is asked to start."""

    def __init__(self):
        self.started, self.cancels, self.running = [], [], False
        self.outputSegmentation = None

    @property
    def busy(self):
        return self.running

    def cancel(self, *args, **kwargs):
        self.cancels.append((args, kwargs))
        return self.running

    def modelDescription(self, model_dir):
        return "Model: test"

    def startSegmentation(self, volume, segmentation, *args, **kwargs):
        self.started.append((volume, segmentation))
        self.running = True


class FakeVolume:
    def GetName(self):
        return "scan"

    def GetID(self):
        return "vtkMRMLScalarVolumeNode1"


def _widget(module):
    """A LiverVolumetryWidget with stand-in widgets, logic and parameter node (no setup())."""
    widget = module.LiverVolumetryWidget()
    names = ("segmentButton", "editButton", "updateMeasurementsButton", "exportTableButton", "loadPhantomButton",
             "modelPathLineEdit", "modelInfoLabel", "progressBar", "resultLabel", "logTextEdit")
    widget.ui = types.SimpleNamespace(**{name: _Widget(enabled=True, text="", value=0, format="") for name in names})
    widget.logic = FakeLogic()
    widget.parent = types.SimpleNamespace(isEntered=True)  # the module is shown
    widget._parameterNode = types.SimpleNamespace(inputVolume=FakeVolume(), outputSegmentation=None,
                                                  device="cpu", computeRadiomics=False, useCustomModel=False,
                                                  customModelPath=Path("."))
    return widget


# --------------------------------------------------------------------------- clicks during a pip install


def test_a_click_while_the_dependencies_install_starts_no_second_run(module, monkeypatch):
    """pip_install logs its output through slicer.app.processEvents(), so a second click on
    'Segment liver' (the button still reads so: nothing runs yet) is handled *inside* the first
    click's dependency check: it must not start a second engine run next to the first."""
    widget = _widget(module)
    nested = []

    def ensure(*args, **kwargs):  # what the install does while it processes events
        if not nested:
            nested.append(True)
            widget.onSegmentButton()
        return True

    monkeypatch.setattr(module.dependencies, "ensure", ensure)
    widget.onSegmentButton()
    assert nested and len(widget.logic.started) == 1
    assert widget.ui.segmentButton.text == "Cancel"


def test_other_buttons_are_ignored_while_a_start_is_under_way(module, monkeypatch):
    widget = _widget(module)
    phantoms, calls = [], []
    monkeypatch.setattr(module.sample, "load_phantom", lambda: phantoms.append(True) or FakeVolume())

    def ensure(*args, **kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            widget.onLoadPhantomButton()  # clicked during the install of the segmentation's packages
        return True

    monkeypatch.setattr(module.dependencies, "ensure", ensure)
    widget.onSegmentButton()
    assert phantoms == [] and len(widget.logic.started) == 1


def test_the_inputs_are_read_after_the_install_which_processes_events(module, monkeypatch):
    """The user picked another volume while the packages installed: that one is segmented."""
    widget = _widget(module)
    other = FakeVolume()
    monkeypatch.setattr(module.dependencies, "ensure",
                        lambda *args, **kwargs: setattr(widget._parameterNode, "inputVolume", other) or True)
    widget.onSegmentButton()
    assert [volume for volume, _ in widget.logic.started] == [other]


@pytest.mark.parametrize("button", ["onSegmentButton", "onUpdateMeasurementsButton"])
def test_a_scene_closed_during_the_install_starts_nothing(module, monkeypatch, button):
    widget = _widget(module)
    widget._parameterNode.outputSegmentation = object()
    widget.updateButtons = lambda *args: None  # the real one reads segmentation nodes
    monkeypatch.setattr(module.dependencies, "ensure",
                        lambda *args, **kwargs: setattr(widget, "_parameterNode", None) or True)
    getattr(widget, button)()
    assert widget.logic.started == [] and len(module.slicer_stand_in.errors) == 1
    assert "no longer selected" in module.slicer_stand_in.errors[0] or "Select the MRI" in module.slicer_stand_in.errors[0]


class LoadedVolume(FakeVolume):
    def IsA(self, class_name):
        return class_name == "vtkMRMLScalarVolumeNode"


@pytest.mark.parametrize("importing, shown", [(False, True), (True, True), (False, False)],
                         ids=["loaded", "scene loading", "module not shown"])
def test_a_volume_loaded_becomes_the_input_unless_a_scene_is_being_loaded(module, importing, shown):
    """A loaded scene brings its own parameter node and input; its volumes do not override it.
    Nor do volumes added while another module is shown (Segment Editor's masked volume, a
    resampled copy): they would take the input and the output away from the user's liver."""
    widget = _widget(module)
    widget.parent.isEntered = shown
    before, loaded = widget._parameterNode.inputVolume, LoadedVolume()
    module.slicer_stand_in.mrmlScene = types.SimpleNamespace(IsImporting=lambda: importing)
    widget.onNodeAdded(None, None, loaded)
    assert widget._parameterNode.inputVolume is (loaded if shown and not importing else before)


# --------------------------------------------------------------------------- closing Slicer during a run


def test_closing_the_module_waits_for_the_killed_run_so_its_folder_is_removed(module):
    """cleanup() runs when Slicer quits: no timer fires afterwards, so the end of the killed
    run (which deletes the copy of the patient's volume in the temporary folder) must be
    delivered before cleanup() returns."""
    widget = _widget(module)
    widget.removeObservers = widget.setParameterNode = lambda *args: None
    widget.cleanup()
    (args, kwargs), = widget.logic.cancels
    assert kwargs.get("waitSeconds", 0) > 0


def test_a_cancel_that_waits_reports_the_end_and_removes_the_folder_at_once(glue, monkeypatch):  # noqa: F811
    _script_process(glue, monkeypatch, "import time\ntime.sleep(120)\n")
    work_dir = Path(glue.process.slicer.util.tempDirectory("LiverVolumetry"))
    (work_dir / "scan.nrrd").write_text("patient data")
    done = []
    proc = glue.jobs.run_engine(["segment"], work_dir, lambda: pytest.fail("no import after a cancel"),
                                on_done=lambda *result: done.append(result))
    assert proc.cancel(wait_s=20.0)  # no wait()/poll() afterwards: the event loop is gone
    assert done == [(False, "Cancelled.", True)] and not proc.running
    assert not work_dir.exists()


# --------------------------------------------------------------------------- engine output encoding


def test_an_engine_error_in_another_encoding_still_reaches_the_user(glue, monkeypatch):  # noqa: F811
    """On Windows the engine's stderr may be in the ANSI code page while Slicer reads UTF-8: a
    path with an umlaut must not make the reader drop the error line (and the lines read with it)."""
    code = ("import sys\nsys.stdout.buffer.write(b'livervolumetry: error: C:\\\\Users\\\\J\\xfcrgen\\\\scan.nrrd: "
            "image has 2 dimensions, need 3\\n')\nsys.stdout.buffer.flush()\nsys.exit(1)\n")
    _script_process(glue, monkeypatch, code)
    work_dir = Path(glue.process.slicer.util.tempDirectory("LiverVolumetry"))
    done = []
    proc = glue.jobs.run_engine(["segment"], work_dir, lambda: "", on_done=lambda *result: done.append(result))
    proc.wait(60)
    (success, message, cancelled), = done
    assert not success and not cancelled
    assert message.startswith("The liver could not be processed: C:\\Users\\J") and "need 3" in message


# --------------------------------------------------------------------------- geometry of a new segmentation


def test_a_new_segmentation_takes_the_volumes_geometry_in_its_own_frame(module, monkeypatch):
    """SetReferenceImageGeometryParameterFromVolumeNode converts the volume's geometry into the
    segmentation's current parent frame: the segmentation must be under the volume's transform
    first, otherwise a volume under a transform gets a reference grid moved by it twice."""
    calls = []

    class Segmentation:
        def __getattr__(self, name):
            return lambda *args: calls.append(name)

    scene = types.SimpleNamespace(AddNewNodeByClass=lambda cls, name: Segmentation())
    monkeypatch.setattr(module.slicer_stand_in, "mrmlScene", scene, raising=False)
    volume = types.SimpleNamespace(GetName=lambda: "scan", GetID=lambda: "vtkMRMLScalarVolumeNode1",
                                   GetTransformNodeID=lambda: "vtkMRMLLinearTransformNode4")
    module.segmentation_io.create_segmentation(volume)
    assert calls.index("SetAndObserveTransformNodeID") < calls.index("SetReferenceImageGeometryParameterFromVolumeNode")
    assert "SetNodeReferenceID" in calls and "SetAttribute" not in calls  # the input, as a reference Slicer remaps


# --------------------------------------------------------------------------- table export


@pytest.mark.parametrize("chosen, written", [("/data/liver", "/data/liver.csv"), ("/data/liver.csv", "/data/liver.csv"),
                                             ("/data/liver.TSV", "/data/liver.TSV"), ("/data/v1.2", "/data/v1.2.csv")])
def test_an_exported_table_gets_a_csv_extension_when_the_dialog_gave_none(module, monkeypatch, chosen, written):
    """Qt's own save dialog (Linux) adds no suffix; Slicer's table writer picks the format from it."""
    saved = []
    monkeypatch.setattr(module.slicer_stand_in.util, "exportNode",
                        lambda node, path, properties: saved.append(path) or True, raising=False)
    assert module.table.export_table(object(), chosen) == Path(written)
    assert saved == [str(Path(written))]


# --------------------------------------------------------------------------- a failed import


@pytest.mark.parametrize("had_liver", [False, True])
def test_a_mask_slicer_cannot_import_leaves_no_empty_liver_segment(module, monkeypatch, had_liver):
    """A segmentation whose source representation is a surface refuses a labelmap: the empty
    'Liver' segment added for the import must go again (an existing one stays)."""
    segments = {"Liver": "Liver"} if had_liver else {}

    class Segmentation:
        def AddEmptySegment(self, segment_id, name, color):
            segments[segment_id] = name
            return segment_id

        def RemoveSegment(self, segment_id):
            del segments[segment_id]

    node = types.SimpleNamespace(SetReferenceImageGeometryParameterFromVolumeNode=lambda volume: None,
                                 CreateDefaultDisplayNodes=lambda: None, GetSegmentation=Segmentation,
                                 GetName=lambda: "surface liver")
    labelmap = types.SimpleNamespace(SetAndObserveTransformNodeID=lambda node_id: None)
    stand_in = module.slicer_stand_in
    monkeypatch.setattr(stand_in.util, "loadLabelVolume", lambda path, properties: labelmap, raising=False)
    monkeypatch.setattr(stand_in, "mrmlScene", types.SimpleNamespace(RemoveNode=lambda n: None), raising=False)
    logic = types.SimpleNamespace(ImportLabelmapToSegmentationNode=lambda *args: False)
    monkeypatch.setattr(stand_in, "modules", types.SimpleNamespace(
        segmentations=types.SimpleNamespace(logic=lambda: logic)), raising=False)
    io = module.segmentation_io
    monkeypatch.setattr(io, "liver_segment_id", lambda n: next(iter(segments), None))
    monkeypatch.setattr(io.vtk, "vtkStringArray", lambda: types.SimpleNamespace(InsertNextValue=lambda v: None),
                        raising=False)
    volume = types.SimpleNamespace(GetTransformNodeID=lambda: None)
    with pytest.raises(RuntimeError, match="source representation is not a binary labelmap"):
        io.import_liver_mask("mask.nii.gz", node, volume)
    assert segments == ({"Liver": "Liver"} if had_liver else {})


# --------------------------------------------------------------------------- two 'Liver' segments


class _Segments:
    """A vtkSegmentation stand-in holding segments of these names (IDs: the names)."""

    def __init__(self, *names):
        self.names = names

    def GetNumberOfSegments(self):
        return len(self.names)

    def GetNthSegment(self, n):
        return types.SimpleNamespace(GetName=lambda: self.names[n])

    def GetSegmentIdBySegmentName(self, name):  # case-insensitive, first match (vtkSegmentation.h)
        return next((n for n in self.names if n.lower() == name.lower()), "")


@pytest.mark.parametrize("names", [("Liver", "Tumor"), ("Liver", "liver"), ("Tumor", "LIVER", "Liver")])
def test_a_segmentation_with_two_liver_segments_is_refused_before_any_work(module, monkeypatch, tmp_path, names):
    """Slicer's GetSegmentIdBySegmentName gives the first of several 'Liver' segments, which
    may not be the corrected one: measuring or replacing it is refused, as the engine refuses
    such a .seg.nrrd."""
    node = types.SimpleNamespace(GetSegmentation=lambda: _Segments(*names), GetName=lambda: "corrected")
    io, jobs = module.segmentation_io, module.jobs
    work = []
    monkeypatch.setattr(io, "save_volume", lambda volume, path: work.append("saved"))
    monkeypatch.setattr(jobs, "_work_folder", lambda volume: work.append("folder") or (tmp_path, "case"))
    monkeypatch.setattr(module.slicer_stand_in, "mrmlScene", types.SimpleNamespace(
        AddNewNodeByClass=lambda *args: work.append("labelmap")), raising=False)
    livers = sum(n.lower() == "liver" for n in names)
    if livers == 1:
        io.check_one_liver_segment(node)  # one 'Liver' among other segments: fine
        return
    for start in (lambda: jobs.start_segmentation(object(), node), lambda: io.export_liver_mask(node, object(), "m")):
        with pytest.raises(RuntimeError, match=rf"'corrected' has {livers} segments named 'Liver' .*ambiguous"):
            start()
    assert work == []


@pytest.mark.parametrize("shared", [False, True], ids=["its own colour table", "a shared default one"])
def test_a_failed_mask_export_removes_its_labelmap_but_never_a_shared_colour_table(module, monkeypatch, shared):
    removed = []
    color = types.SimpleNamespace(GetSingletonTag=lambda: "GenericAnatomyColors" if shared else None)
    labelmap = types.SimpleNamespace(GetDisplayNode=lambda: types.SimpleNamespace(GetColorNode=lambda: color))
    stand_in, io = module.slicer_stand_in, module.segmentation_io
    monkeypatch.setattr(stand_in, "mrmlScene", types.SimpleNamespace(AddNewNodeByClass=lambda *args: labelmap,
                                                                      RemoveNode=removed.append), raising=False)
    logic = types.SimpleNamespace(ExportSegmentsToLabelmapNode=lambda *args: False)
    monkeypatch.setattr(stand_in, "modules", types.SimpleNamespace(
        segmentations=types.SimpleNamespace(logic=lambda: logic)), raising=False)
    monkeypatch.setattr(io.vtk, "vtkStringArray", lambda: types.SimpleNamespace(InsertNextValue=lambda v: None),
                        raising=False)
    node = types.SimpleNamespace(GetSegmentation=lambda: _Segments("Liver"), GetName=lambda: "liver")
    with pytest.raises(RuntimeError, match="could not export the liver segment"):
        io.export_liver_mask(node, object(), "mask.nrrd")
    assert removed == ([labelmap] if shared else [color, labelmap])
