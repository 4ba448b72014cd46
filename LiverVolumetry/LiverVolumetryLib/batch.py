"""Cohort runs: segment and measure many cases, with a results table, resume and errors.

Contract for ``OUTDIR``: ``<case>_liver.nii.gz``, ``<case>_liver.seg.nrrd``, ``<case>_qc.png``
per case, and ``measurements.csv`` / ``measurements.json`` for the whole run. Every file
is written atomically; the table is rewritten after each case, so an interrupted run
keeps every finished case and a re-run resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from .atomic import atomic_path, interrupts_deferred, remove_stale_parts
from .bundle import ModelBundle, load_bundle
from .errors import CancelledError, InputError, LiverVolumetryError, OutputError
from .inputs import InputCase
from .reporting import Reporter
from .scan_files import input_stamp

LEADING_COLUMNS = ("case", "input", "series_uid", "volume_ml", "voxel_count")
TRAILING_COLUMNS = ("input_stamp", "model_name", "model_version", "model_sha256", "device", "seconds",
                    "unsure_fraction", "warnings", "status", "error")
TABLE_CSV, TABLE_JSON = "measurements.csv", "measurements.json"


@dataclass(frozen=True)
class CaseOutputs:
    """The files one case writes into the output folder."""

    mask: Path
    segmentation: Path
    qc: Path

    @classmethod
    def for_case(cls, out_dir: Path, case: str) -> "CaseOutputs":
        return cls(out_dir / f"{case}_liver.nii.gz", out_dir / f"{case}_liver.seg.nrrd", out_dir / f"{case}_qc.png")

    def all(self) -> tuple[Path, Path, Path]:
        return self.mask, self.segmentation, self.qc


def ordered_row(row: dict) -> dict:
    """Put a row's columns in the table's canonical order (features in between)."""
    lead = {k: row.get(k) for k in LEADING_COLUMNS}
    trail = {k: row.get(k) for k in TRAILING_COLUMNS}
    middle = {k: v for k, v in row.items() if k not in lead and k not in trail}
    return {**lead, **middle, **trail}


class ResultsTable:
    """Rows keyed by case, kept on disk after every change (atomic CSV + JSON)."""

    def __init__(self, out_dir: Path, overwrite: bool = False):
        from .outputs import read_measurements

        self.out_dir = out_dir
        self.existed = (out_dir / TABLE_JSON).is_file()
        if not self.existed and (out_dir / TABLE_CSV).is_file() and not overwrite:  # its rows would be lost
            raise OutputError(out_dir / TABLE_CSV, f"exists without {TABLE_JSON}, which a run reads to add to the "
                                                   f"table: restore {TABLE_JSON}, remove {TABLE_CSV}, or use "
                                                   "another output folder")
        # In canonical order: a table written before a column existed (series_uid) gets it in its place.
        self.rows: dict[str, dict] = {str(r.get("case")): ordered_row(r)
                                      for r in read_measurements(out_dir / TABLE_JSON)}
        if self.existed:
            self._mend_csv()

    def _sorted_rows(self) -> list[dict]:
        return sorted(self.rows.values(), key=lambda r: r.get("status") != "ok")

    def _mend_csv(self) -> None:
        """Rewrite a CSV that is not the JSON's table (a run killed between writing the two)."""
        from .atomic import write_text_atomic
        from .outputs import measurements_csv

        if (self.out_dir / TABLE_CSV).is_dir():
            return  # refused before any work (check_output_folder)
        expected = measurements_csv(self._sorted_rows())
        try:
            current = (self.out_dir / TABLE_CSV).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            current = None
        if current != expected:
            write_text_atomic(self.out_dir / TABLE_CSV, expected)

    def finished(self, case: str) -> bool:
        return self.rows.get(case, {}).get("status") == "ok"

    def put(self, row: dict) -> None:
        self.rows[str(row["case"])] = ordered_row(row)
        self.save()

    def save(self) -> None:
        from .outputs import write_measurements

        # A run in which nothing worked writes no table of its own (no partial output).
        if not self.existed and not any(r.get("status") == "ok" for r in self.rows.values()):
            return
        write_measurements(self._sorted_rows(), self.out_dir / TABLE_CSV, self.out_dir / TABLE_JSON, overwrite=True)
        self.existed = True


def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def process_case(item: InputCase, out_dir: Path, bundle: ModelBundle, device: str, radiomics: bool,
                 overwrite: bool, reporter: Reporter, cancel=None, record=None) -> dict:
    """Segment, measure and write one case; returns its table row (raises on failure),
    which ``record(row)`` is given as soon as the files are in place."""
    from .confidence import confidence_warnings
    from .imageio import read_image, series_uid_of
    from .measure import measure_keeping_volume
    from .outputs import write_mask, write_segmentation
    from .plausibility import plausibility_warnings
    from .qc import write_qc_png
    from .segment import segment_liver

    outputs = CaseOutputs.for_case(out_dir, item.case)
    if not overwrite:
        for path in outputs.all():
            if path.exists():
                raise LiverVolumetryError(f"{path}: already exists (use --overwrite to replace it)")
    start = time.perf_counter()

    def stage(lo: float, hi: float):
        return lambda fraction, name: reporter.progress(item.case, lo + (hi - lo) * fraction, name)

    stage(0, 1)(0.0, "load")
    stamp = input_stamp(item.path)  # before reading: a change while it runs is seen next time
    image = read_image(item.path, item.series_uid)
    try:
        result = segment_liver(image, bundle, device, progress=stage(0.05, 0.7), cancel=cancel)
    except InputError as error:  # about the image in memory: name its file
        raise error if error.path else InputError(item.path, error.cause) from None
    if not sitk.GetArrayViewFromImage(result.mask).any():
        raise LiverVolumetryError(f"{item.path}: no liver found in this image")
    stage(0, 1)(0.7, "measure")
    values, warnings = measure_keeping_volume(image, result.mask, radiomics=radiomics, progress=stage(0.7, 0.92))
    warnings += confidence_warnings(result.unsure_fraction) + plausibility_warnings(image, result.mask)
    if cancel is not None and cancel():
        raise CancelledError()
    stage(0, 1)(0.92, "write")
    title = f"{item.case}: liver {values['volume_ml']:.0f} mL ({bundle.name} {bundle.version})"
    for path in outputs.all():
        remove_stale_parts(path)  # of a run killed outright
    # All three files are written to temporary names first and renamed together at the end,
    # and ``record`` (the table) is told in the same breath: the stop signals wait until all
    # of it is done, so an interruption leaves a case's files and its row together or none.
    with interrupts_deferred():
        with contextlib.ExitStack() as stack:
            mask_tmp, seg_tmp, qc_tmp = (stack.enter_context(atomic_path(p, overwrite=overwrite))
                                         for p in outputs.all())
            write_mask(result.mask, mask_tmp)
            write_segmentation(result.mask, seg_tmp)
            write_qc_png(image, result.mask, qc_tmp, title=title, warnings=warnings)
        row = {"case": item.case, "input": os.path.abspath(item.path), "series_uid": series_uid_of(image),
               **{k: _finite(v) for k, v in values.items()},
               "model_name": bundle.name, "model_version": bundle.version, "model_sha256": bundle.sha256,
               "device": result.device,
               "seconds": round(time.perf_counter() - start, 2), "unsure_fraction": round(result.unsure_fraction, 4),
               "warnings": "; ".join(warnings), "input_stamp": stamp, "status": "ok", "error": None}
        if record is not None:
            record(row)
    return row


def _same_input(recorded: str, path: Path) -> bool:
    """Whether the table's ``input`` entry names ``path`` (the same file, however written)."""
    try:
        return Path(recorded).resolve() == path.resolve() or os.path.samefile(recorded, path)
    except OSError:
        return False


def _series_read(item: InputCase) -> str:
    """The UID of the series ``item`` names (by UID or description), as reading would choose it."""
    from .dicom import choose_series, list_dicom_series

    return choose_series(item.path, list_dicom_series(item.path), item.series_uid).uid


def check_output_folder(cases: list[InputCase], out_dir: Path, table: ResultsTable, overwrite: bool,
                        bundle: ModelBundle | None = None) -> None:
    """Refuse an output path that is a file, a table row of the same case name that came
    from another input (resuming would report that scan's results for this one), and a
    finished row of another model than ``bundle`` (one table would mix two models)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(out_dir, "is a file; the output must be a folder")
    files = [out_dir / TABLE_CSV, out_dir / TABLE_JSON,
             *(path for item in cases for path in CaseOutputs.for_case(out_dir, item.case).all())]
    if folder := next((path for path in files if path.is_dir()), None):  # else found only after the work
        raise OutputError(folder, "is a folder where this run writes a file (remove or rename it)")
    if bundle is not None:
        _check_one_model(table, bundle, out_dir, {item.case for item in cases} if overwrite else set())
    if overwrite:
        return
    for item in cases:
        row = table.rows.get(item.case, {})
        recorded, series = row.get("input"), row.get("series_uid")
        if recorded and not _same_input(str(recorded), item.path):
            raise OutputError(out_dir / TABLE_CSV, f"already holds case '{item.case}' from another input "
                                                   f"({recorded}); use another output folder or --overwrite")
        if series and item.series_uid and series != item.series_uid and series != _series_read(item):
            raise OutputError(out_dir / TABLE_CSV, f"already holds case '{item.case}' from another DICOM series "
                                                   f"({series}); use another output folder or --overwrite")


def _made_by(row: dict) -> tuple:
    return row.get("model_name"), row.get("model_version"), row.get("model_sha256")


def _check_one_model(table: ResultsTable, bundle: ModelBundle, out_dir: Path, replaced: set[str]) -> None:
    """Refuse a table holding a finished case (other than the ``replaced`` ones) segmented by
    another model than ``bundle``, by name and version or, where the row records them, by
    its weights (two exports under one name): one table, one model."""
    other = {case: _made_by(row) for case, row in table.rows.items()
             if table.finished(case) and not row.get("mask") and case not in replaced
             and (_made_by(row)[:2] != (bundle.name, bundle.version)
                  or row.get("model_sha256") not in (None, bundle.sha256))}
    if other:
        names = [f"'{case}'" for case in other]
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        name, version, sha = next(iter(other.values()))
        same_name = (name, version) == (bundle.name, bundle.version)
        weights = f" (weights {sha[:12]}, not {bundle.sha256[:12]})" if same_name else ""
        fix = "use another output folder" + ("" if replaced else " or --overwrite")
        raise OutputError(out_dir / TABLE_CSV, f"already holds case{'s' if len(names) > 1 else ''} {shown} segmented "
                                               f"by model {name} {version}, not {bundle.name} {bundle.version}"
                                               f"{weights}; {fix}")


def _kept(table: ResultsTable, out_dir: Path, case: str, radiomics: bool) -> str | None:
    """Why a finished case is not segmented again (None: it is). A row ``measure`` wrote
    from a (hand-corrected) mask is kept whatever automatic files are there: redoing it
    would replace that measurement by the network's. A case whose scan changed since (its
    recorded ``input_stamp``) is redone, and so is one measured without the radiomics
    features asked for now."""
    if not table.finished(case):
        return None
    if table.rows[case].get("mask"):
        return f"kept: measured from {table.rows[case]['mask']}"
    outputs = CaseOutputs.for_case(out_dir, case).all()
    if not all(p.exists() for p in outputs):
        return None
    if radiomics and not _has_radiomics(table.rows[case]):
        return None  # segmented with --no-radiomics before
    recorded, path = table.rows[case].get("input_stamp"), table.rows[case].get("input")
    if recorded and path and input_stamp(path) != recorded:
        return None  # the scan was replaced (re-exported, corrected) since this case was segmented
    return "already done"


def _has_radiomics(row: dict) -> bool:
    """Whether a row holds radiomics features, or says why it cannot (a region pyradiomics refused)."""
    return (any(k.startswith("original_") and v is not None for k, v in row.items())
            or "no radiomics features" in (row.get("warnings") or ""))


def run_segmentation(cases: list[InputCase], out_dir: str | Path, model: str | Path | ModelBundle | None = None,
                     device: str = "auto", radiomics: bool = True, overwrite: bool = False,
                     reporter: Reporter | None = None, cancel=None) -> list[dict]:
    """Run every case; a failing case is recorded and the run goes on. Returns the rows."""
    from .segment import resolve_device

    reporter = reporter or Reporter()
    out_dir = Path(out_dir)
    table = ResultsTable(out_dir, overwrite)
    bundle = model if isinstance(model, ModelBundle) else load_bundle(model)
    check_output_folder(cases, out_dir, table, overwrite, bundle)
    device = resolve_device(device)
    rows = []
    reporter.start(len(cases))
    try:
        for item in cases:
            # A finished case of this table (same input, checked above) whose files are not all
            # there any more is redone: what is left of its files is this table's own output.
            replace = overwrite or table.finished(item.case)
            if not overwrite and (why := _kept(table, out_dir, item.case, radiomics)):
                reporter.case_done(item.case, "skipped", f"{why} (use --overwrite to redo)", 0.0)
                rows.append(table.rows[item.case])
                continue
            start = time.perf_counter()
            try:
                row = process_case(item, out_dir, bundle, device, radiomics, replace, reporter, cancel,
                                   record=table.put)
            except (CancelledError, BrokenPipeError):  # cancelled, or the reader of our output went away
                raise
            except LiverVolumetryError as error:
                row = {"case": item.case, "input": os.path.abspath(item.path), "model_name": bundle.name,
                       "model_version": bundle.version, "device": device,
                       "seconds": round(time.perf_counter() - start, 2), "status": "failed", "error": str(error)}
            except (RuntimeError, ValueError, OSError, MemoryError) as error:  # unexpected, but keep the cohort going
                first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                row = {"case": item.case, "input": os.path.abspath(item.path), "model_name": bundle.name,
                       "model_version": bundle.version, "device": device,
                       "seconds": round(time.perf_counter() - start, 2), "status": "failed",
                       "error": f"{item.path}: {type(error).__name__}: {first}"}
            if row["status"] == "failed":
                if replace:  # asked to replace this case's files, which the failed row no longer describes
                    for path in CaseOutputs.for_case(out_dir, item.case).all():
                        path.unlink(missing_ok=True)
                table.put(row)
            rows.append(table.rows[item.case])
            reporter.case_done(item.case, row["status"], row["error"], row["seconds"])
    finally:
        reporter.close()
    return rows
