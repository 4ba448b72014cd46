"""Liver Volumetry: automatic liver segmentation, volumetry and radiomics on abdominal MRI.

Slicer glue only. The work is done by the Slicer-free engine ``LiverVolumetryLib``, run as a
background ``PythonSlicer -m LiverVolumetryLib.cli`` process (see LiverVolumetrySlicerLib).
"""

import logging
import os
import pathlib
from typing import Annotated, Optional

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, Default, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from LiverVolumetrySlicerLib import dependencies, engine_cli, jobs, sample, segmentation_io, table
from LiverVolumetrySlicerLib.process import EngineProcess

CITATIONS = """
<p>Method: Gross M, et al. Automated MRI liver segmentation for anatomical segmentation, liver volumetry,
and the extraction of radiomics. Eur Radiol. 2024. doi:10.1007/s00330-023-10495-5 (Volumetry-Net).</p>
<p>Training data: CHAOS challenge, Kavur AE, et al. CHAOS Challenge - combined (CT-MR) healthy abdominal
organ segmentation. Med Image Anal. 2021;69:101950. doi:10.1016/j.media.2020.101950.
Data license CC BY-SA 4.0.</p>
"""


class LiverVolumetry(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Liver Volumetry"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["LiverVolumetry contributors"]
        self.parent.helpText = """
Segments the liver on abdominal MRI with a 3D U-Net, measures its volume (mL) and, optionally,
pyradiomics features. Select the input volume and click <b>Segment liver</b>; the work runs in the
background and can be cancelled. Correct the result with <b>Edit in Segment Editor</b>, then click
<b>Update measurements</b>. <b>Load sample phantom</b> generates a synthetic MRI to try the module.
Not a medical device: review every segmentation.
"""
        self.parent.acknowledgementText = CITATIONS
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Add the locally generated liver phantom to the Sample Data module."""
    sample.register_sample_data(os.path.join(os.path.dirname(__file__), "Resources", "Icons"))


@parameterNodeWrapper
class LiverVolumetryParameterNode:
    """GUI state: input, output, device, model choice and radiomics switch."""

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    device: Annotated[str, Choice(list(engine_cli.DEVICES)), Default("auto")]
    computeRadiomics: Annotated[bool, Default(True)]
    useCustomModel: bool
    customModelPath: pathlib.Path


class LiverVolumetryWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._modelInfoKey = ()  # model folder whose description is shown (() = none yet)
        self._acting = False  # a button's action is under way (it may process events: pip)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LiverVolumetry.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = LiverVolumetryLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeAddedEvent, self.onNodeAdded)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.editButton.connect("clicked(bool)", self.onEditButton)
        self.ui.updateMeasurementsButton.connect("clicked(bool)", self.onUpdateMeasurementsButton)
        self.ui.exportTableButton.connect("clicked(bool)", self.onExportTableButton)
        self.ui.loadPhantomButton.connect("clicked(bool)", self.onLoadPhantomButton)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.logic.cancel(waitSeconds=10.0)  # Slicer quits: no timer will remove the run's folder later
        self.removeObservers()
        self.setParameterNode(None)

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self.logic.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def onNodeAdded(self, caller, event, node) -> None:
        """Select the volume loaded last as input while the module is shown (not a labelmap, our
        own node, another module's volume, or one of a scene being loaded: it has its own input)."""
        if (self._parameterNode is None or not self.parent.isEntered or self.logic.busy
                or slicer.mrmlScene.IsImporting() or not segmentation_io.is_image_volume(node)):
            return
        self._parameterNode.inputVolume = node

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            volumes = [node for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                       if segmentation_io.is_image_volume(node)]
            if volumes:
                self._parameterNode.inputVolume = volumes[-1]

    def setParameterNode(self, inputParameterNode: Optional[LiverVolumetryParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            if self.hasObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons):
                self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # The .ui widgets named by "SlicerParameterName"; connectGui() returns no tag (Slicer#7547).
            widgets = {n: w for w in vars(self.ui).values() if (n := w.property("SlicerParameterName"))}
            self._parameterNodeGuiTag = self._parameterNode.connectParametersToGui(widgets)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
            self.updateButtons()

    def updateButtons(self, caller=None, event=None) -> None:
        """Enable what can be done now; the segment button doubles as Cancel while busy."""
        node = self._parameterNode
        busy = self.logic.busy
        volume, segmentation = (node.inputVolume, node.outputSegmentation) if node else (None, None)
        if segmentation_io.made_for_another_volume(segmentation, volume):  # the input changed: new output
            node.outputSegmentation = segmentation = None
        hasLiver = bool(volume and segmentation and segmentation_io.liver_segment_id(segmentation))
        self.ui.segmentButton.enabled = busy or bool(volume)
        self.ui.segmentButton.text = "Cancel" if busy else "Segment liver"
        self.ui.editButton.enabled = hasLiver and not busy
        self.ui.updateMeasurementsButton.enabled = hasLiver and not busy
        self.ui.exportTableButton.enabled = bool(segmentation and table.table_for_segmentation(segmentation, create=False))
        self.ui.loadPhantomButton.enabled = not busy
        self.ui.modelPathLineEdit.enabled = bool(node and node.useCustomModel)
        self._updateModelInfo()

    def _updateModelInfo(self) -> None:
        key = self._modelDir() if self._parameterNode else None
        if key == self._modelInfoKey:
            return
        self._modelInfoKey = key
        self.ui.modelInfoLabel.text = self.logic.modelDescription(key)

    def _modelDir(self) -> Optional[str]:
        node = self._parameterNode
        if not node.useCustomModel:
            return None
        path = str(node.customModelPath)
        return "" if path in ("", ".") else path

    def _selectedInputs(self):
        node = self._parameterNode
        if node is None or not node.inputVolume:
            raise RuntimeError("Select the MRI volume to segment first.")
        modelDir = self._modelDir()
        if modelDir == "":
            raise RuntimeError("Choose the folder of your model bundle, or untick 'Own model bundle'.")
        return node.inputVolume, modelDir

    def _runSafely(self, what: str, action) -> None:
        """Run ``action``; show failures in plain words with an error dialog. A click that
        arrives while an action waits (pip_install processes events) is ignored."""
        if self._acting:
            return
        self._acting = True
        try:
            action()
        except (RuntimeError, ValueError, OSError, dependencies.DependencyError) as error:
            self.ui.progressBar.format = "Failed"
            slicer.util.errorDisplay(f"{what} failed: {error}")
        except Exception as error:  # noqa: BLE001 - anything else is a bug: show it, log the trace
            logging.exception("LiverVolumetry: %s failed", what)
            self.ui.progressBar.format = "Failed"
            slicer.util.errorDisplay(f"{what} failed because of an unexpected error: {error}")
        finally:
            self._acting = False
            self.updateButtons()

    def onSegmentButton(self) -> None:
        if self.logic.busy:
            if self.logic.cancel(unlessYoungerThan=1.0):  # a double click on Segment does not cancel
                self._log("Cancelling...")
            return
        self._runSafely("Liver segmentation", self._startSegmentation)

    def _startSegmentation(self) -> None:
        self._selectedInputs()  # a missing selection is told before anything is installed
        if not dependencies.ensure(self._parameterNode.computeRadiomics):
            return
        # Read again: an install processes events, so the scene or the selection may have changed.
        volume, modelDir = self._selectedInputs()
        node = self._parameterNode
        segmentation = node.outputSegmentation
        if segmentation is not None and not segmentation_io.may_replace_liver(segmentation, volume):
            segmentation = None  # a new one, made when the results arrive
        self._started(f"Segmenting the liver of '{volume.GetName()}'...")
        self.logic.startSegmentation(volume, segmentation, node.device, modelDir, node.computeRadiomics,
                                     onProgress=self._onProgress, onLog=self._log, onDone=self._onSegmented)

    def _onSegmented(self, success: bool, message: str, cancelled: bool) -> None:
        if success and self._parameterNode:
            self._parameterNode.outputSegmentation = self.logic.outputSegmentation
        self._onDone(success, message, cancelled)

    def onUpdateMeasurementsButton(self) -> None:
        def start():
            if not dependencies.ensure(self._parameterNode.computeRadiomics, torch=False):  # no network: no PyTorch
                return
            node = self._parameterNode  # read after the install, which processes events
            if node is None or not (node.inputVolume and node.outputSegmentation):
                raise RuntimeError("The volume or its segmentation is no longer selected.")
            self._started("Measuring the current liver segment...")
            self.logic.startMeasurement(node.inputVolume, node.outputSegmentation, node.computeRadiomics,
                                        onProgress=self._onProgress, onLog=self._log, onDone=self._onDone)
        self._runSafely("Updating the measurements", start)

    def onEditButton(self) -> None:
        node = self._parameterNode
        self._runSafely("Opening the Segment Editor",
                        lambda: self.logic.openInSegmentEditor(node.outputSegmentation, node.inputVolume))

    def onExportTableButton(self) -> None:
        def export():
            tableNode = table.table_for_segmentation(self._parameterNode.outputSegmentation, create=False)
            path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), "Export measurement table",
                                                  f"{tableNode.GetName()}.csv", "CSV files (*.csv)")
            if path:
                self._log(f"Table written to {table.export_table(tableNode, path)}")
        self._runSafely("Exporting the table", export)

    def onLoadPhantomButton(self) -> None:
        def load():
            if dependencies.ensure(radiomics=False, torch=False):  # the phantom needs scipy, not PyTorch
                self._parameterNode.inputVolume = sample.load_phantom()
        self._runSafely("Loading the sample phantom", load)

    def _started(self, message: str) -> None:
        self.ui.progressBar.value = 0
        self.ui.progressBar.format = "Starting: 0%"
        self.ui.resultLabel.text = ""
        self._log(message)
        self.updateButtons()

    def _onProgress(self, text: str, percent: int) -> None:
        self.ui.progressBar.value = percent
        self.ui.progressBar.format = text

    def _log(self, message: str) -> None:
        self.ui.logTextEdit.appendPlainText(message)

    def _onDone(self, success: bool, message: str, cancelled: bool) -> None:
        self.updateButtons()
        if success:
            self.ui.progressBar.value = 100
            self.ui.progressBar.format = "Done"
            self.ui.resultLabel.text = message
            self._log(message)
        elif cancelled:
            self.ui.progressBar.format = "Cancelled"
            self._log("Cancelled; nothing was changed.")
        else:
            self.ui.progressBar.format = "Failed"
            self._log(message)
            slicer.util.errorDisplay(message)


class LiverVolumetryLogic(ScriptedLoadableModuleLogic):
    """Runs the engine out of process and brings its results into the scene."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.process: Optional[EngineProcess] = None
        self.outputSegmentation = None  # of the last segmentation run

    def getParameterNode(self):
        return LiverVolumetryParameterNode(super().getParameterNode())

    @property
    def busy(self) -> bool:
        return self.process is not None and self.process.running

    def cancel(self, unlessYoungerThan: float = 0.0, waitSeconds: float = 0.0) -> bool:
        return self.process is not None and self.process.cancel(unlessYoungerThan, waitSeconds)

    def modelDescription(self, modelDir: Optional[str]) -> str:
        """'Model: liver-mri-v2 2.0.0' or why the bundle cannot be used (never raises)."""
        if modelDir == "":
            return "Choose the folder of a model bundle."
        try:
            from LiverVolumetryLib.bundle import load_bundle
            bundle = load_bundle(modelDir, verify=False)  # the label only; every engine run verifies
        except Exception as error:  # noqa: BLE001 - shown to the user as text
            return f"Model not usable: {error}"
        return f"Model: {bundle.name} {bundle.version}"

    createSegmentation = staticmethod(segmentation_io.create_segmentation)

    def startSegmentation(self, volume, segmentation, device="auto", modelDir=None, radiomics=True,
                          onProgress=None, onLog=None, onDone=None) -> EngineProcess:
        """Segment ``volume`` in the background; the 'Liver' segment and table update at the end.
        With ``segmentation`` None a new one is made only then (``outputSegmentation``)."""
        self.outputSegmentation = segmentation

        def newSegmentation():
            self.outputSegmentation = self.createSegmentation(volume)
            return self.outputSegmentation
        self.process = jobs.start_segmentation(volume, segmentation, device, modelDir, radiomics, onProgress, onLog,
                                               onDone, newSegmentation)
        return self.process

    def startMeasurement(self, volume, segmentation, radiomics=True, onProgress=None, onLog=None,
                         onDone=None) -> EngineProcess:
        """Recompute the table from the current (hand-corrected) 'Liver' segment, no network."""
        self.process = jobs.start_measurement(volume, segmentation, radiomics, onProgress, onLog, onDone)
        return self.process

    def runBlocking(self, start, timeoutSeconds=3600.0) -> str:
        """Call ``start(onDone=...)`` and wait for the end (for tests and scripts)."""
        result = {}
        process = start(onDone=lambda success, message, cancelled: result.update(success=success, message=message))
        process.wait(timeoutSeconds)
        if not result.get("success"):
            raise RuntimeError(result.get("message", "the engine did not finish"))
        return result["message"]

    openInSegmentEditor = staticmethod(segmentation_io.open_in_segment_editor)


class LiverVolumetryTest(ScriptedLoadableModuleTest):
    """The whole workflow on the generated phantom: segment, check, edit, re-measure."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_LiverVolumetryWorkflow()

    def test_LiverVolumetryWorkflow(self):
        self.delayDisplay("Checking dependencies")
        self.assertTrue(dependencies.ensure(radiomics=True))
        logic = LiverVolumetryLogic()
        volume, truth = sample.load_phantom(with_truth=True)

        self.delayDisplay("Segmenting the phantom")
        segmentation = logic.createSegmentation(volume)
        logic.runBlocking(lambda onDone: logic.startSegmentation(volume, segmentation, "cpu", onDone=onDone))
        segmentId = segmentation_io.liver_segment_id(segmentation)
        self.assertTrue(segmentId, "no 'Liver' segment")
        predicted = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume) > 0
        reference = slicer.util.arrayFromVolume(truth) > 0
        dice = 2.0 * (predicted & reference).sum() / max(1, predicted.sum() + reference.sum())
        self.assertGreater(dice, 0.8)

        tableNode = table.table_for_segmentation(segmentation, create=False)
        volumeBefore = table.value(tableNode, "volume_ml")
        self.assertGreater(volumeBefore, 0)
        self.assertIsNotNone(table.value(tableNode, "original_shape_MeshVolume"))
        self.assertEqual(table.value(tableNode, "source"), "automatic")
        self.assertFalse(segmentation_io.was_edited(segmentation, volume))

        self.delayDisplay("Erasing half of the liver and re-measuring")
        edited = predicted.astype("uint8")
        edited[:, :, : edited.shape[2] // 2] = 0
        slicer.util.updateSegmentBinaryLabelmapFromArray(edited, segmentation, segmentId, volume)
        self.assertTrue(segmentation_io.was_edited(segmentation, volume))
        logic.runBlocking(lambda onDone: logic.startMeasurement(volume, segmentation, False, onDone=onDone))
        volumeAfter = table.value(tableNode, "volume_ml")
        self.assertLess(volumeAfter, volumeBefore)
        self.assertGreater(volumeAfter, 0)
        self.assertEqual(table.value(tableNode, "source"), "edited")
        self.delayDisplay("Test passed")
