"""Exceptions whose message is a one-line explanation for the user.

The CLI prints ``str(error)`` and exits non-zero; the Slicer module shows it in an
error dialog. No traceback is ever shown for these.
"""

from __future__ import annotations

import os


class LiverVolumetryError(Exception):
    """Base class: anything the user can fix or needs to know, in one line."""


class InputError(LiverVolumetryError):
    """An input file, folder or image is unusable. The message names the file."""

    def __init__(self, path: str | os.PathLike | None, cause: str):
        self.path = None if path is None else os.fspath(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}" if self.path else cause)


class ModelBundleError(LiverVolumetryError):
    """A model bundle is missing, malformed, or its weights fail the checksum."""

    def __init__(self, path: str | os.PathLike | None, cause: str):
        self.path = None if path is None else os.fspath(path)
        self.cause = cause
        super().__init__(f"model bundle {self.path}: {cause}" if self.path else f"model bundle: {cause}")


class OutputError(LiverVolumetryError):
    """An output cannot be written (exists without --overwrite, not writable, ...)."""

    def __init__(self, path: str | os.PathLike, cause: str):
        self.path = os.fspath(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")


class CancelledError(LiverVolumetryError):
    """The caller's cancel check returned True; work stopped cleanly."""

    def __init__(self, message: str = "cancelled by the user"):
        super().__init__(message)


def os_error_text(error: OSError) -> str:
    """One line for an OSError nothing more specific caught: the file it names and why
    (``/data/MR/3: permission denied``)."""
    cause = (error.strerror or type(error).__name__).lower()
    names = [os.fsdecode(n) for n in (error.filename, error.filename2) if n is not None]
    return f"{' -> '.join(names)}: {cause}" if names else f"{cause} ({error})"


def name_is_not_utf8(path: str | os.PathLike) -> bool:
    """Whether a file name's bytes are not UTF-8 (e.g. Latin-1 from an old CD or ZIP
    export): ITK cannot take such a name (it aborts the whole process)."""
    try:
        os.fsencode(os.fspath(path)).decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


#: The cause given for such a name.
NOT_UTF8_CAUSE = "its name is not valid UTF-8 text (e.g. a Latin-1 name from an old export); rename it"

