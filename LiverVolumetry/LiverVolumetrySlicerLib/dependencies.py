"""First-use check and installation of the Python packages the engine needs inside Slicer.

Torch comes from the PyTorch extension (``PyTorchUtils``), which picks the build that
matches the computer's GPU driver; the other packages are installed with
``slicer.util.pip_install`` after the user agrees. Nothing is downloaded when everything is
already importable, so the module works offline once set up. ``slicer`` is imported
inside the functions only: the requirement lists are checked in CI without Slicer.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging

# (import name, pip requirement). numpy and SimpleITK ship with Slicer.
REQUIREMENTS = (
    ("monai", "monai>=1.3"),
    ("safetensors", "safetensors>=0.4"),
    ("slicerio", "slicerio>=1.1"),
    ("scipy", "scipy>=1.10"),
    ("matplotlib", "matplotlib>=3.7"),
    ("tqdm", "tqdm>=4.60"),
    ("yaml", "PyYAML>=6"),
    ("onnxruntime", "onnxruntime>=1.17"),  # the fast CPU path; PyTorch is used without it
)
RADIOMICS = ("radiomics", "pyradiomics>=3.0.1")
# pyradiomics has no wheels for recent Pythons and its source build fails in pip's build
# isolation: its build requirements are installed first, then it is built without isolation.
RADIOMICS_BUILD_REQUIREMENTS = "numpy setuptools wheel versioneer"
TORCH_REQUIREMENT = ">=2.2"


class DependencyError(RuntimeError):
    """A package is missing and could not be installed; the message says how to fix it."""


#: Packages that need PyTorch: installing them without it would make pip pull a generic torch
#: wheel instead of the build PyTorchUtils picks for the computer's GPU driver.
NEEDS_TORCH = {"monai"}


def missing(radiomics: bool = True, torch: bool = True) -> list[tuple[str, str]]:
    """Requirements whose package cannot be imported (checked without importing it); with
    ``torch=False``, those needing PyTorch are left out."""
    wanted = [r for r in REQUIREMENTS if torch or r[0] not in NEEDS_TORCH] + ([RADIOMICS] if radiomics else [])
    return [(name, requirement) for name, requirement in wanted if importlib.util.find_spec(name) is None]


def torch_missing() -> bool:
    return importlib.util.find_spec("torch") is None


def _install_torch() -> bool:
    """Install PyTorch through the PyTorch extension (which asks first); False if the user declined."""
    try:
        import PyTorchUtils
    except ImportError:
        raise DependencyError(
            "Liver Volumetry needs the 'PyTorch' extension. Install it with the Extensions Manager "
            "(View > Extensions Manager, search 'PyTorch'), restart Slicer and try again.") from None
    torch_logic = PyTorchUtils.PyTorchUtilsLogic()
    if torch_logic.torchInstalled():
        return True
    # installTorch returns None only when the user cancels its confirmation; failures raise.
    return torch_logic.installTorch(askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT) is not None


def _pip(arguments: str, what: str, fix: str) -> None:
    import slicer

    install = slicer.util.pip_install
    try:
        # Newer Slicer's installer asks again unless told not to; ensure() has already asked.
        quiet = {"interactive": False} if "interactive" in inspect.signature(install).parameters else {}
    except (TypeError, ValueError):  # no signature to read
        quiet = {}
    try:
        install(arguments, **quiet)
    except Exception as error:  # noqa: BLE001 - pip failures come as several exception types
        logging.error("LiverVolumetry: pip_install(%r) failed: %s", arguments, error)
        raise DependencyError(f"Installing {what} failed. {fix} Details are in the Python console log.") from None


def _install_packages(requirements: list[tuple[str, str]]) -> None:
    plain = [requirement for name, requirement in requirements if name != RADIOMICS[0]]
    if plain:
        _pip(" ".join(plain), ", ".join(plain),
             "Check the internet connection (or proxy settings) and try again.")
    if any(name == RADIOMICS[0] for name, _ in requirements):
        _pip(RADIOMICS_BUILD_REQUIREMENTS, "the build tools of pyradiomics",
             "Check the internet connection and try again.")
        _pip(f"--no-build-isolation {RADIOMICS[1]}", "pyradiomics",
             "pyradiomics is compiled on this computer: it needs a C compiler (on Windows the "
             "'Microsoft C++ Build Tools'). Alternatively untick 'Radiomics features' to measure "
             "the liver volume only.")
    importlib.invalidate_caches()


def ensure(radiomics: bool = True, torch: bool = True) -> bool:
    """Make sure torch (if ``torch``) and the engine's packages are importable; ask first.
    ``torch=False`` (the phantom, re-measuring a mask) installs nothing that needs PyTorch.

    Returns False if the user declined; raises :class:`DependencyError` on failure.
    """
    import slicer

    if torch and torch_missing() and not _install_torch():
        return False
    needed = missing(radiomics, torch)
    if not needed:
        return True
    names = ", ".join(requirement for _, requirement in needed)
    # As PyTorchUtils does, a test run installs without asking: a modal dialog would hang it.
    if not slicer.app.commandOptions().testingEnabled and not slicer.util.confirmOkCancelDisplay(
            "Liver Volumetry needs these Python packages, which are not installed yet:\n\n"
            f"{names}\n\nInstall them now? This downloads them from the internet once and may take "
            "a few minutes; Slicer is busy meanwhile.",
            windowTitle="Install Liver Volumetry dependencies"):
        return False
    with slicer.util.WaitCursor():
        _install_packages(needed)
    still = missing(radiomics, torch)
    if still:
        raise DependencyError(
            "These packages are still missing after installation: "
            f"{', '.join(r for _, r in still)}. Restart Slicer and try again.")
    return True
