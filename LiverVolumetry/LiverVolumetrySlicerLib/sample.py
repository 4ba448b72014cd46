"""A synthetic abdominal MRI phantom as sample data: generated locally, nothing downloaded.

The engine's ``make_phantom`` draws the image (and its true liver mask); it is written to
Slicer's temporary folder and loaded like any volume. The Sample Data module gets a
'Liver phantom' button whose custom loader generates the phantom; Sample Data sources need
a URI, so the source points at the local file the loader writes.
"""

from __future__ import annotations

import os
from pathlib import Path

import slicer

SAMPLE_CATEGORY = "Liver Volumetry"
SAMPLE_NAME = "LiverPhantom"
PHANTOM_FILE = "LiverPhantom.nrrd"
TRUTH_FILE = "LiverPhantom-reference-liver.nrrd"


def _phantom_folder() -> Path:
    folder = Path(slicer.app.temporaryPath) / "LiverVolumetry"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_phantom(seed: int = 0) -> tuple[Path, Path]:
    """Generate the phantom with the engine; return (image file, true liver mask file)."""
    import SimpleITK as sitk
    from LiverVolumetryLib.phantom import make_phantom

    phantom = make_phantom(seed=seed)
    folder = _phantom_folder()
    image_path, truth_path = folder / PHANTOM_FILE, folder / TRUTH_FILE
    sitk.WriteImage(phantom.image, str(image_path), True)
    sitk.WriteImage(phantom.liver, str(truth_path), True)
    return image_path, truth_path


def load_phantom(with_truth: bool = False, seed: int = 0):
    """Load the phantom into the scene; with ``with_truth`` also its true liver labelmap.

    Returns the volume node, or (volume node, labelmap node) with ``with_truth``.
    """
    image_path, truth_path = write_phantom(seed)
    volume = slicer.util.loadVolume(str(image_path), {"name": SAMPLE_NAME})
    if not with_truth:
        return volume
    truth = slicer.util.loadLabelVolume(str(truth_path), {"name": f"{SAMPLE_NAME} reference liver", "show": False})
    return volume, truth


def _load_from_sample_data(source=None):
    """Custom loader called by the Sample Data module's button."""
    from . import dependencies

    try:
        if dependencies.ensure(radiomics=False, torch=False):
            return load_phantom()
    except dependencies.DependencyError as error:
        slicer.util.errorDisplay(f"The liver phantom could not be generated: {error}")
    return None


def register_sample_data(icons_folder: str | os.PathLike) -> None:
    """Add the 'Liver phantom' button to the Sample Data module (if that module is loaded)."""
    try:
        import SampleData
    except ImportError:
        return

    phantom_uri = (_phantom_folder() / PHANTOM_FILE).as_uri()
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category=SAMPLE_CATEGORY,
        sampleName=SAMPLE_NAME,
        uris=phantom_uri,
        fileNames=PHANTOM_FILE,
        nodeNames=SAMPLE_NAME,
        thumbnailFileName=os.path.join(str(icons_folder), "LiverPhantom.png"),
        customDownloader=_load_from_sample_data,
    )
