"""The measurement table of a segmentation: one row (its latest measurement, replaced by each
run or update), one column per measurement, shown in a table view.

Numeric measurements are double columns, text columns are string columns; every column
carries its unit (``SetColumnUnitLabel``), a description (``SetColumnDescription``) and a
readable long name, so the table view and the exported schema explain each value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import slicer
import vtk

from .engine_cli import column_metadata, is_number

TABLE_REFERENCE_ROLE = "LiverVolumetryTable"
TABLE_EXTENSIONS = (".csv", ".tsv", ".txt")  # vtkMRMLTableStorageNode::GetFieldDelimiterCharacters


def _engine_describe():
    """The engine's describe_column, or None when the engine cannot be imported."""
    try:
        from LiverVolumetryLib.measure import describe_column
    except ImportError:
        return None
    return describe_column


def long_name(column: str) -> str:
    """'original_shape_MeshVolume' -> 'shape MeshVolume'; 'volume_ml' -> 'volume ml'."""
    name = column[len("original_"):] if column.startswith("original_") else column
    return name.replace("_", " ")


def table_for_segmentation(segmentation_node, create: bool = True):
    """The measurement table referenced by the segmentation node (created if asked)."""
    table_node = segmentation_node.GetNodeReference(TABLE_REFERENCE_ROLE)
    if table_node is None and create:
        table_node = slicer.mrmlScene.AddNewNodeByClass(
            "vtkMRMLTableNode", f"{segmentation_node.GetName()} measurements")
        segmentation_node.SetNodeReferenceID(TABLE_REFERENCE_ROLE, table_node.GetID())
    return table_node


def _column_array(name: str, value: Any):
    array = vtk.vtkDoubleArray() if is_number(value) else vtk.vtkStringArray()
    array.SetName(name)
    array.InsertNextValue(float(value) if is_number(value) else ("" if value is None else str(value)))
    return array


def fill_table(table_node, columns: dict[str, Any]) -> None:
    """Replace the table's content by one row holding ``columns`` (ordered)."""
    describe = _engine_describe()
    # SetColumnTitle came with Slicer's translatable tables; SetColumnLongName is its deprecated forerunner.
    titled = hasattr(table_node, "SetColumnTitle")
    was_modifying = table_node.StartModify()
    try:
        table_node.RemoveAllColumns()
        for name, value in columns.items():
            table_node.AddColumn(_column_array(name, value))
            unit, description = column_metadata(name, describe)
            table_node.SetColumnUnitLabel(name, unit)
            table_node.SetColumnDescription(name, description)
            if titled:
                table_node.SetColumnTitle(name, long_name(name))
            else:
                table_node.SetColumnLongName(name, long_name(name))
    finally:
        table_node.EndModify(was_modifying)


def value(table_node, column: str, row: int = 0):
    """A cell value (float for numeric columns), or None if the column is missing."""
    array = table_node.GetTable().GetColumnByName(column)
    if array is None or row >= array.GetNumberOfValues():
        return None
    return array.GetValue(row)


def show_table(table_node) -> None:
    """Switch to a layout with a table view and show the table in it."""
    layout_manager = slicer.app.layoutManager()
    if layout_manager is None:
        return
    layout_with_table = slicer.modules.tables.logic().GetLayoutWithTable(layout_manager.layout)
    layout_manager.setLayout(layout_with_table)
    application_logic = slicer.app.applicationLogic()
    application_logic.GetSelectionNode().SetActiveTableID(table_node.GetID())
    application_logic.PropagateTableSelection()


def export_table(table_node, path: str | Path) -> Path:
    """Write the table as CSV (Slicer also writes a ``.schema.csv`` with units); return the
    path written. Slicer's table writer picks the format from the extension, which Qt's own
    save dialog does not add: '.csv' is appended unless the name ends in .csv, .tsv or .txt."""
    path = Path(path)
    if path.suffix.lower() not in TABLE_EXTENSIONS:
        path = path.with_name(path.name + ".csv")
    # exportNode, not saveNode: saving the scene later must not write the table over this copy.
    if not slicer.util.exportNode(table_node, str(path), {}):
        raise RuntimeError(f"The table could not be written to {path}.")
    return path
