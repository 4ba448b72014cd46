"""Slicer API names the Liver Volumetry module may use, each checked in Slicer's own source.

Every name below was read in the named file of the public Slicer repository (Slicer/Slicer,
5.x sources) or of the PyTorch extension (fepegar/SlicerPyTorch). test_slicer_module.py
collects the names the module actually uses (with ``ast``) and fails on any name that is
not listed here, and on listed names that the module no longer uses (keep this honest).
To add a call: find it in Slicer's source first, then add it here with the file.
"""

UTIL = "Base/Python/slicer/util.py"
SEGMENTATION_NODE_H = "Libs/MRML/Core/vtkMRMLSegmentationNode.h"
SEGMENTATION_H = "Libs/vtkSegmentationCore/vtkSegmentation.h"
SEGMENT_H = "Libs/vtkSegmentationCore/vtkSegment.h"
SEGMENTATIONS_LOGIC_H = "Modules/Loadable/Segmentations/Logic/vtkSlicerSegmentationsModuleLogic.h"
TABLE_NODE_H = "Libs/MRML/Core/vtkMRMLTableNode.h"
SUBJECT_HIERARCHY_H = "Libs/MRML/Core/vtkMRMLSubjectHierarchyNode.h"
SEGMENT_EDITOR_WIDGET_H = "Modules/Loadable/Segmentations/Widgets/qMRMLSegmentEditorWidget.h"
TEMPLATE = "Utilities/Templates/Modules/Scripted/TemplateKey.py"
SCRIPTED_MODULE = "Base/Python/slicer/ScriptedLoadableModule.py"
PARAMETER_WRAPPER = "Base/Python/slicer/parameterNodeWrapper/wrapper.py"
SEGMENT_STATISTICS = "Modules/Scripted/SegmentStatistics/SegmentStatistics.py"
TRANSFORMABLE_NODE_H = "Libs/MRML/Core/vtkMRMLTransformableNode.h"
QMRML_NODE_COMBOBOX_H = "Libs/MRML/Widgets/qMRMLNodeComboBox.h"

# slicer.util.<name> (called, or imported with ``from slicer.util import``)
SLICER_UTIL = {
    "arrayFromSegmentBinaryLabelmap": UTIL,
    "arrayFromVolume": UTIL,
    "childWidgetVariables": UTIL,
    "confirmOkCancelDisplay": UTIL,
    "confirmYesNoDisplay": UTIL,
    "errorDisplay": UTIL,
    "exportNode": UTIL + " (node, filename, properties={}, world=False); useCompression: Base/QTCore/qSlicerNodeWriter.cxx",
    "getModuleWidget": UTIL,
    "getNodesByClass": UTIL,
    "launchConsoleProcess": UTIL + " (args, useStartupEnvironment=True, ..., cwd=None) -> subprocess.Popen",
    "loadLabelVolume": UTIL,
    "loadUI": UTIL,
    "loadVolume": UTIL,
    "mainWindow": UTIL,
    "pip_install": UTIL + " (one string is split with shlex; packaging.pip_install in newest Slicer)",
    "saveNode": UTIL + " (node, filename, properties={}) -> bool",
    "selectModule": UTIL,
    "tempDirectory": UTIL,
    "updateSegmentBinaryLabelmapFromArray": UTIL,
    "VTKObservationMixin": UTIL,
    "WaitCursor": UTIL,
}

# names imported with ``from slicer<...> import``
SLICER_IMPORTS = {
    "slicer.ScriptedLoadableModule.ScriptedLoadableModule": SCRIPTED_MODULE,
    "slicer.ScriptedLoadableModule.ScriptedLoadableModuleLogic": SCRIPTED_MODULE,
    "slicer.ScriptedLoadableModule.ScriptedLoadableModuleTest": SCRIPTED_MODULE,
    "slicer.ScriptedLoadableModule.ScriptedLoadableModuleWidget": SCRIPTED_MODULE,
    "slicer.parameterNodeWrapper.Choice": "Base/Python/slicer/parameterNodeWrapper/validators.py (__all__)",
    "slicer.parameterNodeWrapper.Default": "Docs/developer_guide/parameter_nodes.md; Base/Python/slicer/parameterNodeWrapper/default.py",
    "slicer.parameterNodeWrapper.parameterNodeWrapper": PARAMETER_WRAPPER,
    "slicer.util.VTKObservationMixin": UTIL,
    "slicer.vtkMRMLScalarVolumeNode": "Docs/developer_guide/parameter_nodes.md (core MRML classes from the slicer namespace)",
    "slicer.vtkMRMLSegmentationNode": SEGMENTATION_NODE_H + " (MRMLCore class)",
}

# slicer.app.<name>
SLICER_APP = {
    "applicationLogic": SEGMENT_STATISTICS + " (showTable)",
    "commandOptions": "fepegar/SlicerPyTorch: PyTorchUtils/PyTorchUtils.py (commandOptions().testingEnabled)",
    "connect": TEMPLATE + " (startupCompleted() signal)",
    "layoutManager": UTIL,
    "processEvents": UTIL,
    "temporaryPath": UTIL + " (tempDirectory)",
}

# slicer.modules.<name>
SLICER_MODULES = {
    "segmentations": UTIL + " (slicer.modules.segmentations.logic())",
    "tables": SEGMENT_STATISTICS + " (slicer.modules.tables.logic())",
}

# slicer.mrmlScene.<attribute> that is not a call (events)
SCENE_ATTRIBUTES = {
    "EndCloseEvent": TEMPLATE,
    "NodeAddedEvent": "Libs/MRML/Core/vtkMRMLScene.h",
    "StartCloseEvent": TEMPLATE,
}

# CamelCase methods called on MRML nodes, VTK objects and module logics
MRML_METHODS = {
    "AddColumn": TABLE_NODE_H,
    "AddEmptySegment": SEGMENTATION_H,
    "AddNewNodeByClass": UTIL + " (slicer.mrmlScene)",
    "Clear": TEMPLATE + " (slicer.mrmlScene.Clear())",
    "CreateClosedSurfaceRepresentation": SEGMENTATION_NODE_H,
    "CreateDefaultDisplayNodes": SEGMENTATION_NODE_H,
    "EndModify": UTIL + " (NodeModify)",
    "ExportSegmentsToLabelmapNode": SEGMENTATIONS_LOGIC_H + " (vtkStringArray overload)",
    "GetAttribute": SCRIPTED_MODULE,
    "GetColorNode": UTIL,
    "GetColumnByName": UTIL + " (arrayFromTableColumn, vtkTable)",
    "GetDisplayNode": UTIL,
    "GetID": UTIL,
    "GetItemByDataNode": SUBJECT_HIERARCHY_H,
    "GetItemParent": SUBJECT_HIERARCHY_H,
    "GetLayoutWithTable": "Modules/Loadable/Tables/Logic/vtkSlicerTablesLogic.h",
    "GetName": UTIL + "; " + SEGMENT_H + " (vtkSegment.GetName)",
    "GetNodeReference": UTIL,
    "GetNodeReferenceID": "Libs/MRML/Core/vtkMRMLNode.h",
    "GetNumberOfValues": UTIL + " (dataframeFromTable, vtkAbstractArray)",
    "GetSceneItemID": UTIL + " (getSubjectHierarchyItemChildren)",
    "GetNthSegment": SEGMENTATION_H,
    "GetNumberOfSegments": SEGMENTATION_H,
    "GetSegment": SEGMENTATION_H,
    "GetSegmentIdBySegmentName": SEGMENTATION_H,
    "GetSegmentation": SEGMENTATION_NODE_H,
    "GetSelectionNode": SEGMENT_STATISTICS + "; Modules/Loadable/Tables/qSlicerTablesReader.cxx",
    "GetSingletonTag": "Libs/MRML/Core/vtkMRMLNode.h",
    "GetSpacing": UTIL + " (itkImageFromVolume)",
    "GetSubjectHierarchyNode": UTIL + " (slicer.mrmlScene)",
    "GetTable": TABLE_NODE_H,
    "GetTransformNodeID": TRANSFORMABLE_NODE_H,
    "GetTerminologyEntryTagName": SEGMENT_H,
    "GetValue": UTIL + " (dataframeFromTable, vtkAbstractArray)",
    "IsImporting": "Libs/MRML/Core/vtkMRMLScene.h (true while a scene is being loaded)",
    "IsNodePresent": "Libs/MRML/Core/vtkMRMLScene.h",
    "ImportLabelmapToSegmentationNode": SEGMENTATIONS_LOGIC_H + " (labelmap, segmentation, vtkStringArray)",
    "InsertNextValue": UTIL + " (vtkStringArray of segment IDs)",
    "IsA": "Modules/Scripted/SampleData/SampleData.py",
    "PropagateTableSelection": "Libs/MRML/Logic/vtkMRMLApplicationLogic.cxx",
    "RemoveAllColumns": TABLE_NODE_H,
    "RemoveNode": UTIL,
    "RemoveAttribute": "Libs/MRML/Core/vtkMRMLNode.h",
    "RemoveSegment": SEGMENTATION_H,
    "SetActiveTableID": "Libs/MRML/Core/vtkMRMLSelectionNode.h",
    "SetAndObserveTransformNodeID": TRANSFORMABLE_NODE_H,
    "SetAttribute": SCRIPTED_MODULE,
    "SetColor": SEGMENT_H,
    "SetColumnDescription": TABLE_NODE_H,
    "SetColumnTitle": TABLE_NODE_H + " (SetColumnLongName is deprecated: a VTK warning per call)",
    "SetColumnLongName": TABLE_NODE_H + " (fallback where SetColumnTitle is missing)",
    "SetColumnUnitLabel": TABLE_NODE_H,
    "SetItemParent": SUBJECT_HIERARCHY_H,
    "SetName": SEGMENT_H + "; " + UTIL + " (vtkAbstractArray.SetName)",
    "SetNodeReferenceID": TEMPLATE,
    "SetReferenceImageGeometryParameterFromVolumeNode": SEGMENTATION_NODE_H,
    "SetTag": SEGMENT_H,
    "StartModify": UTIL + " (NodeModify)",
}

# lowercase methods called on Slicer objects, keyed by the receiver expression in the code
SLICER_OBJECT_METHODS = {
    "editor": {  # qMRMLSegmentEditorWidget of the Segment Editor module
        "setCurrentSegmentID": SEGMENT_EDITOR_WIDGET_H,
        "setSegmentationNode": SEGMENT_EDITOR_WIDGET_H,
        "setSourceVolumeNode": SEGMENT_EDITOR_WIDGET_H,
    },
    "layout_manager": {  # qSlicerLayoutManager
        "setLayout": SEGMENT_STATISTICS + " (showTable)",
    },
    "torch_logic": {  # PyTorchUtils.PyTorchUtilsLogic
        "installTorch": "fepegar/SlicerPyTorch: PyTorchUtils/PyTorchUtils.py (askConfirmation, forceComputationBackend, torchVersionRequirement)",
        "torchInstalled": "fepegar/SlicerPyTorch: PyTorchUtils/PyTorchUtils.py (staticmethod)",
    },
    "SampleData.SampleDataLogic": {
        "registerCustomSampleDataSource": "Modules/Scripted/SampleData/SampleData.py (customDownloader is called with the source)",
    },
    "self._timer": {  # qt.QTimer (Qt: qtimer.h); the same polling as SlicerMONAIAuto3DSeg's WebServer
        "connect": "Qt: qobject.h (PythonQt connect(signal, callable))",
        "setInterval": "Qt: qtimer.h",
        "start": "Qt: qtimer.h",
        "stop": "Qt: qtimer.h",
    },
    "self._parameterNode": {  # a parameterNodeWrapper instance
        # connectGui() does not return its tag (wrapper.py _connectGui; Slicer issue #7547, PR #8667),
        # so disconnectGui(None) would not disconnect: the module uses the tag-returning call.
        "connectParametersToGui": PARAMETER_WRAPPER + " (mapping name -> widget; returns the tag)",
        "disconnectGui": PARAMETER_WRAPPER,
    },
}

# qt.* / vtk.* names (the longest dotted name as written in the code)
QT_VTK = {
    "qt.QFileDialog.getSaveFileName": "Qt: qfiledialog.h (parent, caption, dir, filter) -> str in PythonQt",
    "qt.QTimer": "Qt: qtimer.h",
    "vtk.VTK_OBJECT": "VTK: Wrapping/Python/vtkmodules/util/vtkConstants.py",
    "vtk.calldata_type": "VTK: Wrapping/Python/vtkmodules/util/misc.py",
    "vtk.vtkCommand.ModifiedEvent": "VTK: Common/Core/vtkCommand.h; " + PARAMETER_WRAPPER,
    "vtk.vtkDoubleArray": "VTK: Common/Core/vtkDoubleArray.h",
    "vtk.vtkStringArray": "VTK: Common/Core/vtkStringArray.h; " + SEGMENTATIONS_LOGIC_H,
}

# signals given to connect("...")
SIGNALS = {
    "clicked(bool)": "Qt: qabstractbutton.h; " + TEMPLATE + " (applyButton)",
    "startupCompleted()": TEMPLATE + " (slicer.app)",
    "timeout()": "Qt: qtimer.h",
}

# properties set in the .ui file, per widget class (checked against the class's Q_PROPERTY list)
UI_PROPERTIES = {
    "qMRMLWidget": {"geometry": "Qt: qwidget.h"},
    "ctkCollapsibleButton": {"text": "CTK: Libs/Widgets/ctkCollapsibleButton.h",
                             "collapsed": "CTK: Libs/Widgets/ctkCollapsibleButton.h"},
    "qMRMLNodeComboBox": {name: QMRML_NODE_COMBOBOX_H for name in (
        "toolTip", "nodeTypes", "showChildNodeTypes", "addEnabled", "removeEnabled", "noneEnabled",
        "noneDisplay", "renameEnabled")},
    "ctkPathLineEdit": {"toolTip": "Qt: qwidget.h", "filters": "CTK: Libs/Widgets/ctkPathLineEdit.h (Filters, Dirs)"},
    "QLabel": {"text": "Qt: qlabel.h", "wordWrap": "Qt: qlabel.h"},
    "QPushButton": {"text": "Qt: qabstractbutton.h", "toolTip": "Qt: qwidget.h", "enabled": "Qt: qwidget.h"},
    "QComboBox": {"toolTip": "Qt: qwidget.h"},
    "QCheckBox": {"toolTip": "Qt: qwidget.h"},
    "QProgressBar": {"value": "Qt: qprogressbar.h", "format": "Qt: qprogressbar.h"},
    "QPlainTextEdit": {"readOnly": "Qt: qplaintextedit.h", "maximumBlockCount": "Qt: qplaintextedit.h"},
}
