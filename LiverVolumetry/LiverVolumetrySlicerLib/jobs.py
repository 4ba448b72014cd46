"""The two background jobs of the module: segment (network + measure) and re-measure.

A job writes its inputs to a fresh temporary folder, runs the engine command line out of
process, and, on the main thread after the process ended, brings the results into the
scene. The temporary folder is deleted at the end whatever happened (success, failure or
cancel). Callbacks: ``on_progress(text, percent)``, ``on_log(message)`` and
``on_done(success, message, cancelled)``.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import slicer

from . import engine_cli, segmentation_io, table
from .process import EngineProcess

AUTOMATIC_PROVENANCE = ("model_name", "model_version", "device")
KEPT_PROVENANCE = ("model_name", "model_version")


@contextlib.contextmanager
def _removed_on_error(folder: Path) -> Iterator[None]:
    """Delete the temporary ``folder`` if preparing the engine's inputs fails."""
    try:
        yield
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _work_folder(volume) -> tuple[Path, str]:
    return Path(slicer.util.tempDirectory("LiverVolumetry")), engine_cli.safe_case_name(volume.GetName())


def show_measurements(segmentation, volume, row: dict, source: str) -> str:
    """Fill and show the segmentation's measurement table; return a one-line summary."""
    keep = segmentation_io.get_provenance(segmentation, KEPT_PROVENANCE)
    table_node = table.table_for_segmentation(segmentation)
    table.fill_table(table_node, engine_cli.table_columns(row, volume.GetSpacing(), source, keep))
    segmentation_io.place_under_study(table_node, volume)
    table.show_table(table_node)
    return engine_cli.result_summary(row, source)


def _require_in_scene(*nodes) -> None:
    """Refuse to bring results into nodes that were removed from the scene during the run."""
    for node in nodes:
        if node is not None and not slicer.mrmlScene.IsNodePresent(node):
            raise RuntimeError(f"'{node.GetName()}' was removed from the scene during the run; nothing was imported.")


def start_segmentation(volume, segmentation, device: str = "auto", model_dir: str | None = None,
                       radiomics: bool = True, on_progress=None, on_log=None, on_done=None,
                       new_segmentation: Callable[[], object] | None = None) -> EngineProcess:
    """Segment ``volume``; at the end the 'Liver' segment and the table are replaced. With
    ``segmentation`` None, ``new_segmentation()`` makes the output only once the results are
    in, so that a cancelled or failed run leaves the scene as it was."""
    if segmentation is None and new_segmentation is None:
        raise ValueError("give the output segmentation or a way to make one")
    if segmentation is not None:  # before any work: the result would replace the first 'Liver' only
        segmentation_io.check_one_liver_segment(segmentation)
    work_dir, case = _work_folder(volume)
    image, out_dir = work_dir / f"{case}.nrrd", work_dir / "out"
    with _removed_on_error(work_dir):
        segmentation_io.save_volume(volume, image)
        arguments = engine_cli.segment_arguments(image, out_dir, device, model_dir, radiomics)
        before = segmentation_io.segment_checksum(segmentation, volume) if segmentation is not None else None

    def import_results() -> str:
        nonlocal segmentation
        _require_in_scene(volume, segmentation)
        row = engine_cli.read_case_row(out_dir, case)
        if segmentation is not None and segmentation_io.segment_checksum(segmentation, volume) != before:
            (on_log or logging.info)(f"The liver of '{segmentation.GetName()}' was edited during the run: it is kept, "
                                     "and the new result goes into a new segmentation.")
            segmentation = None
        created = segmentation is None
        segmentation = segmentation or new_segmentation()
        try:
            segmentation_io.import_liver_mask(engine_cli.mask_path(out_dir, case), segmentation, volume)
        except Exception:
            if created:  # a failed run leaves the scene as it was: no empty new segmentation
                slicer.mrmlScene.RemoveNode(segmentation)
            raise
        segmentation_io.set_provenance(segmentation, {key: row.get(key) for key in AUTOMATIC_PROVENANCE})
        segmentation_io.place_under_study(segmentation, volume)
        return show_measurements(segmentation, volume, row, "automatic")

    return run_engine(arguments, work_dir, import_results, on_progress, on_log, on_done)


def start_measurement(volume, segmentation, radiomics: bool = True, on_progress=None, on_log=None,
                      on_done=None) -> EngineProcess:
    """Recompute the table from the current (hand-corrected) 'Liver' segment; no network."""
    work_dir, case = _work_folder(volume)
    image, mask, out_dir = work_dir / f"{case}.nrrd", work_dir / f"{case}_liver.nrrd", work_dir / "out"
    with _removed_on_error(work_dir):
        segmentation_io.save_volume(volume, image)
        segmentation_io.export_liver_mask(segmentation, volume, mask)
        source = "edited" if segmentation_io.was_edited(segmentation, volume) else "automatic"

    def import_results() -> str:
        _require_in_scene(volume, segmentation)
        return show_measurements(segmentation, volume, engine_cli.read_case_row(out_dir, case), source)

    if on_progress:
        on_progress(engine_cli.progress_text("measure", 0.0), 0)
    arguments = engine_cli.measure_arguments(image, mask, out_dir, case, radiomics)
    return run_engine(arguments, work_dir, import_results, on_progress, on_log, on_done)


def run_engine(arguments: list[str], work_dir: Path, import_results: Callable[[], str],
               on_progress=None, on_log=None, on_done=None) -> EngineProcess:
    """Start the engine process; route its events to the callbacks; clean up at the end."""
    on_progress = on_progress or (lambda text, percent: None)
    on_log = on_log or logging.info
    on_done = on_done or (lambda success, message, cancelled: None)
    failed: list[engine_cli.EngineEvent] = []

    def on_event(event: engine_cli.EngineEvent) -> None:
        if event.kind == "progress":
            on_progress(engine_cli.progress_text(event.stage, event.fraction), round(100 * (event.fraction or 0)))
        elif event.kind == "case_done" and event.status == "failed":
            failed.append(event)
            on_log(f"{event.case}: failed: {event.error}")
        elif event.kind == "case_done":
            on_log(f"{event.case}: {event.status} ({event.seconds or 0:.1f} s)")
        elif event.message:
            on_log(event.message)

    def on_finished(returncode: int, cancelled: bool) -> None:
        try:
            if cancelled:
                outcome = (False, "Cancelled.", True)
            elif returncode == 0 and not failed:
                outcome = (True, import_results(), False)
            else:
                first = failed[0] if failed else None
                outcome = (False, engine_cli.failure_message(returncode, first, process.lines), False)
        except Exception as error:  # noqa: BLE001 - reported to the user through on_done
            logging.exception("LiverVolumetry: loading the results failed")
            outcome = (False, f"The results could not be loaded: {error}", False)
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
        on_done(*outcome)  # once: a failure inside on_done is not taken for a failed import

    process = EngineProcess(arguments, on_event, on_finished)
    try:
        process.start()
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    return process
