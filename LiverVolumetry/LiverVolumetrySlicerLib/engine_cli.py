"""The engine's command line as the Slicer module sees it: arguments, JSON-line events, results.

Pure Python (no ``slicer``/``qt``/``vtk`` imports) so that it is unit-tested without Slicer.
The module runs ``PythonSlicer -m LiverVolumetryLib.cli ...`` in a background process; this
file builds those arguments, turns each stdout line into an :class:`EngineEvent`, and
turns the engine's ``measurements.json`` rows into measurement-table columns.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLI_MODULE = "LiverVolumetryLib.cli"
DEVICES = ("auto", "cpu", "cuda")
TABLE_JSON = "measurements.json"

STAGE_LABELS = {
    "start": "Starting",
    "load": "Loading image",
    "preprocess": "Preprocessing",
    "network": "Running network",
    "postprocess": "Post-processing",
    "measure": "Measuring",
    "radiomics": "Computing radiomics",
    "volume": "Computing volume",
    "write": "Writing results",
}

# Columns the module adds to (or reads from) the engine's row, with unit and description.
PROVENANCE_COLUMNS = {
    "model_name": ("", "Name of the model bundle that produced the segmentation"),
    "model_version": ("", "Version of the model bundle that produced the segmentation"),
    "device": ("", "Device the network ran on (cpu or cuda)"),
    "seconds": ("s", "Run time of the engine for this case"),
    "input_spacing_mm": ("mm", "Voxel spacing of the input volume (column x row x slice)"),
    "source": ("", "'automatic' for the network's segmentation, 'edited' after hand correction"),
    "unsure_fraction": ("", "Network voxels of liver probability 0.2-0.8 per voxel of 0.5 or more "
                            "(automatic segmentation only; usually under 0.3)"),
    "warnings": ("", "Plausibility warnings on the liver mask (volume, side of the body, cut by the scan) and, "
                     "for an automatic segmentation, on the network's uncertainty; empty when nothing stood out"),
}
_SKIPPED_COLUMNS = ("input", "mask", "status", "error")

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
_ERROR_PREFIX = "livervolumetry: error:"


@dataclass(frozen=True)
class EngineEvent:
    """One line of engine output: a JSON event, or plain ``text`` (a human message)."""

    kind: str
    case: str | None = None
    fraction: float | None = None
    stage: str | None = None
    status: str | None = None
    error: str | None = None
    seconds: float | None = None
    message: str | None = None


def parse_line(line: str) -> EngineEvent | None:
    """The event a stdout/stderr line carries; None for a blank line."""
    text = line.strip()
    if not text:
        return None
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("event"), str):
            return _event_from_json(data)
    return EngineEvent(kind="text", message=text)


def _event_from_json(data: dict[str, Any]) -> EngineEvent:
    kind = data["event"]
    fraction = data.get("fraction")
    seconds = data.get("seconds")
    return EngineEvent(
        kind=kind,
        case=data.get("case"),
        fraction=min(max(float(fraction), 0.0), 1.0) if isinstance(fraction, (int, float)) else None,
        stage=data.get("stage"),
        status=data.get("status"),
        error=data.get("error"),
        seconds=float(seconds) if isinstance(seconds, (int, float)) else None,
        message=data.get("message"),
    )


def progress_text(stage: str | None, fraction: float | None) -> str:
    """Text for the progress bar, e.g. 'Running network: 42%'."""
    label = STAGE_LABELS.get(stage or "", (stage or "Working").capitalize())
    percent = 0 if fraction is None else round(100 * fraction)
    return f"{label}: {percent}%"


def failure_message(returncode: int, failed_event: EngineEvent | None, lines: Sequence[str]) -> str:
    """A plain-words explanation of why a run did not succeed."""
    if failed_event is not None and failed_event.error:
        return f"The liver could not be processed: {failed_event.error}"
    for line in reversed(lines):
        if line.startswith(_ERROR_PREFIX):
            return f"The liver could not be processed: {line[len(_ERROR_PREFIX):].strip()}"
    if returncode == 2:
        return "The processing engine rejected its arguments (usage error); see the log for details."
    if returncode in (-9, 137):  # SIGKILL: on Linux and macOS usually the system running out of memory
        return (f"The processing engine was stopped by the system (exit status {returncode}), most likely for "
                "lack of memory. Close other programs, or try a smaller image, and run again.")
    texts = (event.message for event in map(parse_line, reversed(lines)) if event is not None and event.kind == "text")
    tail = next(texts, "")  # the last human line, not a JSON progress event
    detail = f" Last message: {tail}" if tail else ""
    return f"The processing engine stopped unexpectedly (exit status {returncode}).{detail}"


def safe_case_name(name: str) -> str:
    """A file-name-safe case id derived from a node name (the engine uses the file stem)."""
    cleaned = _SAFE_NAME.sub("_", name).strip("._")
    if cleaned.lower().endswith(".seg"):  # the engine would read '<x>.seg.nrrd' as case '<x>'
        cleaned = cleaned[:-4] + "_seg"
    return cleaned or "volume"


def segment_arguments(input_path: str | Path, output_dir: str | Path, device: str = "auto",
                      model_dir: str | Path | None = None, radiomics: bool = True) -> list[str]:
    """Arguments of ``LiverVolumetryLib.cli segment`` for one input file."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    args = ["segment", str(input_path), "-o", str(output_dir), "--overwrite", "--progress", "json",
            "--device", device]
    if model_dir:
        args += ["--model", str(model_dir)]
    if not radiomics:
        args.append("--no-radiomics")
    return args


def measure_arguments(image_path: str | Path, mask_path: str | Path, output_dir: str | Path,
                      case: str, radiomics: bool = True) -> list[str]:
    """Arguments of ``LiverVolumetryLib.cli measure`` (recompute from a corrected mask)."""
    args = ["measure", str(image_path), str(mask_path), "-o", str(output_dir), "--overwrite", "--case", case,
            "--progress", "json"]
    if not radiomics:
        args.append("--no-radiomics")
    return args


def mask_path(output_dir: str | Path, case: str) -> Path:
    """Where ``segment`` writes the liver mask of ``case``."""
    return Path(output_dir) / f"{case}_liver.nii.gz"


def read_case_row(output_dir: str | Path, case: str) -> dict[str, Any]:
    """The row of ``case`` in ``measurements.json``; raises ValueError if it is missing."""
    path = Path(output_dir) / TABLE_JSON
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"the engine wrote no readable results table ({path.name}: {error})") from None
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict) and str(row.get("case")) == case:
            return row
    raise ValueError(f"the results table has no row for case '{case}'")


def result_summary(row: dict[str, Any], source: str) -> str:
    """'Liver volume: 1712.4 mL (automatic segmentation)', then the row's plausibility
    warnings, if any, on a line of their own."""
    text = f"Liver volume: {float(row['volume_ml']):.1f} mL ({source} segmentation)"
    return f"{text}\nCheck: {row['warnings']}" if row.get("warnings") else text


def spacing_text(spacing: Sequence[float]) -> str:
    """'0.78 x 0.78 x 6' for a voxel spacing in mm."""
    return " x ".join(f"{value:.4g}" for value in spacing)


def table_columns(row: dict[str, Any], spacing: Sequence[float], source: str,
                  keep: dict[str, Any] | None = None) -> dict[str, Any]:
    """Ordered table columns: case, volume, voxel count, radiomics, then provenance.

    ``keep`` supplies provenance values the row lacks (a ``measure`` row has no model
    columns; the module keeps those of the automatic run).
    """
    keep = keep or {}
    columns: dict[str, Any] = {"case": str(row.get("case", ""))}
    for key in ("volume_ml", "voxel_count"):
        if key in row:
            columns[key] = row[key]
    for key, value in row.items():
        if key.startswith("original_"):
            columns[key] = value
    for key in ("model_name", "model_version", "device", "seconds"):
        value = row.get(key)
        if value is None:  # a measure row has these columns, empty
            value = keep.get(key)
        if value is not None:
            columns[key] = value
    if row.get("unsure_fraction") is not None:  # a measure row (edited mask) has none
        columns["unsure_fraction"] = row["unsure_fraction"]
    columns["input_spacing_mm"] = spacing_text(spacing)
    columns["source"] = source
    columns["warnings"] = row.get("warnings") or ""
    return {key: value for key, value in columns.items() if key not in _SKIPPED_COLUMNS}


def column_metadata(name: str, describe: Callable[[str], tuple[str, str]] | None = None) -> tuple[str, str]:
    """(unit, description) of a table column; ``describe`` is the engine's describe_column."""
    if name in PROVENANCE_COLUMNS:
        return PROVENANCE_COLUMNS[name]
    if name == "case":
        return "", "Case name (the input volume's name)"
    if describe is not None:
        try:
            return describe(name)
        except Exception:  # noqa: BLE001 - a missing description must never break the table
            return "", ""
    return "", ""


def is_number(value: Any) -> bool:
    """True for int/float values (not bool) that belong in a numeric table column."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def labelmap_checksum(array: Any) -> str:
    """SHA-256 of a binary labelmap (shape and which voxels are non-zero)."""
    import numpy as np

    binary = np.ascontiguousarray(np.asarray(array) > 0)
    digest = hashlib.sha256(repr(binary.shape).encode("ascii"))
    digest.update(np.packbits(binary).tobytes())
    return digest.hexdigest()
