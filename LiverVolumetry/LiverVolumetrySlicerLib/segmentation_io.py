"""Move images and liver masks between the MRML scene and files for the engine.

Everything stays on the input volume's grid: the segmentation's reference geometry is the
input volume, masks are exported with that volume as reference, and an imported mask is a
labelmap written by the engine on the input grid, in the volume's local coordinates (under
the volume's parent transform, if it has one). A checksum of the liver segment written
by the module is stored on the segmentation node so that later hand edits are detected.
"""

from __future__ import annotations

from pathlib import Path

import slicer
import vtk
from LiverVolumetryLib.outputs import LIVER_COLOR_RGB, LIVER_TERMINOLOGY
from LiverVolumetryLib.outputs import LIVER_SEGMENT_NAME as SEGMENT_NAME

from .engine_cli import labelmap_checksum

LIVER_COLOR = tuple(channel / 255.0 for channel in LIVER_COLOR_RGB)
CHECKSUM_ATTRIBUTE = "LiverVolumetry.LiverChecksum"
# The volume whose liver the module wrote here: a node reference, which Slicer keeps right when a
# scene is imported and node IDs are renamed (attributes are not); the attribute of older scenes is read.
INPUT_REFERENCE_ROLE = "LiverVolumetryInputVolume"
INPUT_ATTRIBUTE = "LiverVolumetry.InputVolumeID"
MODEL_ATTRIBUTE_PREFIX = "LiverVolumetry."


# Scalar-volume subclasses that are not one grayscale image (vector volumes are tensor volumes).
_NOT_IMAGE_VOLUMES = ("vtkMRMLLabelMapVolumeNode", "vtkMRMLTensorVolumeNode", "vtkMRMLDiffusionWeightedVolumeNode",
                      "vtkMRMLMultiVolumeNode")  # the last from the MultiVolumeExplorer extension (DCE, DWI series)


def is_image_volume(node) -> bool:
    """A grayscale volume the user loaded (not a labelmap, vector or tensor volume, nor one
    of the module's own hidden ``__`` nodes)."""
    return bool(node and node.IsA("vtkMRMLScalarVolumeNode") and not any(node.IsA(c) for c in _NOT_IMAGE_VOLUMES)
                and not (node.GetName() or "").startswith("__"))


def liver_segment_id(segmentation_node) -> str:
    """ID of the segment named 'Liver' (case-insensitive); empty string if there is none."""
    return segmentation_node.GetSegmentation().GetSegmentIdBySegmentName(SEGMENT_NAME)


def check_one_liver_segment(segmentation_node) -> None:
    """Refuse a segmentation with several segments named 'Liver' (in any letter case): Slicer
    would give the first, which may not be the one the user corrected (the engine refuses
    such a .seg.nrrd too)."""
    segmentation = segmentation_node.GetSegmentation()
    names = [segmentation.GetNthSegment(n).GetName() or "" for n in range(segmentation.GetNumberOfSegments())]
    livers = [name for name in names if name.lower() == SEGMENT_NAME.lower()]
    if len(livers) > 1:
        raise RuntimeError(f"The segmentation '{segmentation_node.GetName()}' has {len(livers)} segments named "
                           f"'{SEGMENT_NAME}' ({', '.join(repr(n) for n in livers)}), so which one is the liver is "
                           "ambiguous; rename or remove the others.")


def _style_liver_segment(segmentation_node, segment_id: str) -> None:
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    segment.SetName(SEGMENT_NAME)
    segment.SetColor(LIVER_COLOR)
    segment.SetTag(segment.GetTerminologyEntryTagName(), LIVER_TERMINOLOGY)




def create_segmentation(volume_node):
    """A new segmentation '<volume> liver' on the volume's geometry, under its transform."""
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{volume_node.GetName()} liver")
    segmentation.CreateDefaultDisplayNodes()
    # Under the volume's transform first: the geometry is taken into the segmentation's current frame.
    segmentation.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())  # moves with the volume
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    _remember_input(segmentation, volume_node)
    return segmentation


def made_for_another_volume(segmentation_node, volume_node) -> bool:
    """True if the module wrote this segmentation's liver for a volume other than ``volume_node``
    (it is then not that volume's output: segmenting into it would overwrite the other liver)."""
    if not segmentation_node or not volume_node:
        return False
    made_for = segmentation_node.GetNodeReferenceID(INPUT_REFERENCE_ROLE) or segmentation_node.GetAttribute(
        INPUT_ATTRIBUTE)
    if not made_for:  # written by the module (it left its checksum) for a volume since deleted: not this one's
        return bool(segmentation_node.GetAttribute(CHECKSUM_ATTRIBUTE))
    return made_for != volume_node.GetID()


def _remember_input(segmentation_node, volume_node) -> None:
    segmentation_node.SetNodeReferenceID(INPUT_REFERENCE_ROLE, volume_node.GetID())
    segmentation_node.RemoveAttribute(INPUT_ATTRIBUTE)  # of an older scene


def import_liver_mask(mask_file: str | Path, segmentation_node, reference_volume) -> str:
    """Replace the 'Liver' segment by the engine's mask file; return the segment ID."""
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    segmentation_node.CreateDefaultDisplayNodes()
    labelmap = slicer.util.loadLabelVolume(str(mask_file), {"show": False, "name": "__LiverVolumetryMask__"})
    try:
        existing = liver_segment_id(segmentation_node)
        segment_id = existing or segmentation_node.GetSegmentation().AddEmptySegment(SEGMENT_NAME, SEGMENT_NAME,
                                                                                     LIVER_COLOR)
        # The mask is on the volume's own (local) grid: give it the volume's parent transform,
        # so that the import maps it into the segmentation's frame, whatever that is.
        labelmap.SetAndObserveTransformNodeID(reference_volume.GetTransformNodeID())
        segment_ids = vtk.vtkStringArray()
        segment_ids.InsertNextValue(segment_id)
        logic = slicer.modules.segmentations.logic()
        if not logic.ImportLabelmapToSegmentationNode(labelmap, segmentation_node, segment_ids):
            if not existing:  # a failed import leaves no empty 'Liver' segment behind
                segmentation_node.GetSegmentation().RemoveSegment(segment_id)
            raise RuntimeError(f"Slicer could not import the liver mask into the segmentation "
                               f"'{segmentation_node.GetName()}'. A segmentation whose source representation is "
                               "not a binary labelmap (e.g. made from a surface model) cannot take it: choose "
                               "'Create new segmentation' as the output.")
    finally:
        slicer.mrmlScene.RemoveNode(labelmap)
    _style_liver_segment(segmentation_node, segment_id)
    _remember_input(segmentation_node, reference_volume)
    segmentation_node.CreateClosedSurfaceRepresentation()
    remember_written_segment(segmentation_node, reference_volume)
    return segment_id


def segment_checksum(segmentation_node, reference_volume) -> str:
    """Checksum of the current 'Liver' segment voxels on the reference volume's grid."""
    segment_id = liver_segment_id(segmentation_node)
    if not segment_id:
        return ""
    array = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, reference_volume)
    return labelmap_checksum(array)


def remember_written_segment(segmentation_node, reference_volume) -> None:
    """Store the checksum of the segment as the module wrote it (see :func:`was_edited`)."""
    segmentation_node.SetAttribute(CHECKSUM_ATTRIBUTE, segment_checksum(segmentation_node, reference_volume))


def was_edited(segmentation_node, reference_volume) -> bool:
    """True if the 'Liver' segment differs from what the module last wrote into it.

    A segmentation the module never wrote counts as edited when it has a 'Liver' segment
    (it came from elsewhere and must not be overwritten silently).
    """
    if segmentation_node is None or not liver_segment_id(segmentation_node):
        return False
    stored = segmentation_node.GetAttribute(CHECKSUM_ATTRIBUTE)
    return not stored or stored != segment_checksum(segmentation_node, reference_volume)


def may_replace_liver(segmentation_node, reference_volume) -> bool:
    """True unless the 'Liver' segment was edited and the user chooses to keep it (asked)."""
    if not was_edited(segmentation_node, reference_volume):
        return True
    return slicer.util.confirmYesNoDisplay(
        f"The 'Liver' segment of '{segmentation_node.GetName()}' was edited (or not made by this module).\n\n"
        "Replace it with a new automatic segmentation?\n\n"
        "Yes: replace it.  No: keep it and put the new result into a new segmentation.",
        windowTitle="Keep the edited liver?")


def set_provenance(segmentation_node, values: dict) -> None:
    """Remember model name/version/device of the automatic run on the segmentation node."""
    for key, value in values.items():
        if value is not None:
            segmentation_node.SetAttribute(MODEL_ATTRIBUTE_PREFIX + key, str(value))


def get_provenance(segmentation_node, keys) -> dict:
    """Values stored by :func:`set_provenance` (missing keys are left out)."""
    values = {}
    for key in keys:
        value = segmentation_node.GetAttribute(MODEL_ATTRIBUTE_PREFIX + key)
        if value:
            values[key] = value
    return values


def export_liver_mask(segmentation_node, reference_volume, path: str | Path) -> None:
    """Write the 'Liver' segment as a labelmap file on the reference volume's grid."""
    segment_id = liver_segment_id(segmentation_node)
    if not segment_id:
        raise RuntimeError(f"The segmentation '{segmentation_node.GetName()}' has no '{SEGMENT_NAME}' segment.")
    check_one_liver_segment(segmentation_node)
    labelmap = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__LiverVolumetryExport__")
    try:
        segment_ids = vtk.vtkStringArray()
        segment_ids.InsertNextValue(segment_id)
        logic = slicer.modules.segmentations.logic()
        if not logic.ExportSegmentsToLabelmapNode(segmentation_node, segment_ids, labelmap, reference_volume):
            raise RuntimeError("Slicer could not export the liver segment to a labelmap.")
        if not slicer.util.saveNode(labelmap, str(path), {"useCompression": 0}):  # read once, then deleted
            raise RuntimeError(f"Slicer could not write the liver mask to {path}.")
    finally:
        display = labelmap.GetDisplayNode()
        color = display.GetColorNode() if display is not None else None
        if color is not None and not color.GetSingletonTag():  # the export's own table, not a shared default one
            slicer.mrmlScene.RemoveNode(color)
        slicer.mrmlScene.RemoveNode(labelmap)


def save_volume(volume_node, path: str | Path) -> None:
    """Write the volume to a file for the engine without touching the node's storage
    (``exportNode``, unlike ``saveNode``, leaves the node's storage node alone). The file is
    read once and deleted, so it is not compressed: that would only keep the GUI waiting."""
    if not slicer.util.exportNode(volume_node, str(path), {"useCompression": 0}):
        raise RuntimeError(f"Slicer could not write the volume '{volume_node.GetName()}' to {path}.")


def place_under_study(data_node, volume_node) -> None:
    """Put ``data_node`` next to ``volume_node`` in the subject hierarchy (its study)."""
    hierarchy = slicer.mrmlScene.GetSubjectHierarchyNode()
    volume_item = hierarchy.GetItemByDataNode(volume_node)
    data_item = hierarchy.GetItemByDataNode(data_node)
    if not volume_item or not data_item:
        return
    parent = hierarchy.GetItemParent(volume_item)
    if parent and parent != hierarchy.GetSceneItemID():
        hierarchy.SetItemParent(data_item, parent)


def open_in_segment_editor(segmentation_node, volume_node) -> None:
    """Switch to the Segment Editor with this segmentation, volume and the liver selected."""
    slicer.util.selectModule("SegmentEditor")
    editor = slicer.util.getModuleWidget("SegmentEditor").editor
    editor.setSegmentationNode(segmentation_node)
    editor.setSourceVolumeNode(volume_node)
    segment_id = liver_segment_id(segmentation_node)
    if segment_id:
        editor.setCurrentSegmentID(segment_id)
