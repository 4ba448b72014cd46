"""Atomic file writing: a file is either complete or absent, never half-written.

Everything the engine writes goes through :func:`atomic_path`: the writer writes to a
hidden temporary file in the destination folder, which is renamed over the destination
only after the writer finished without an exception (Ctrl-C included).
"""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputError

_COMPOUND_SUFFIXES = (".nii.gz", ".seg.nrrd", ".tar.gz")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in _COMPOUND_SUFFIXES:
        if name.endswith(suffix):
            return path.name[-len(suffix):]
    return path.suffix


#: Temporary paths an ``atomic_path`` of this process is filling now.
_FILLING: set[str] = set()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` on success.

    The temporary name keeps the destination's extension, so writers that choose the
    format from the extension (SimpleITK, matplotlib) behave as for the real name.
    With ``overwrite=False`` an existing destination raises :class:`OutputError`. Given a
    temporary path that an enclosing ``atomic_path`` is filling (a writer called on it), it
    yields that path as it is: the enclosing one moves it into place.
    """
    path = Path(path)
    if os.fspath(path) in _FILLING:
        yield path
        return
    if path.is_dir():
        raise OutputError(path, "is a folder; a file cannot be written in its place (remove or rename it)")
    if not overwrite and path.exists():
        raise OutputError(path, "already exists (use --overwrite to replace it)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{_suffix(path)}", dir=path.parent)
    except OSError as error:
        raise OutputError(path, f"cannot write here ({error.strerror or error})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    _FILLING.add(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes owner-only files; use normal permissions
        try:
            os.replace(tmp, path)
        except OSError as error:  # e.g. a folder created at ``path`` meanwhile
            raise OutputError(path, f"cannot be replaced ({error.strerror or error})") from None
    except OutputError as error:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if error.path != os.fspath(tmp):
            raise
        raise OutputError(path, error.cause) from None  # name the file the user asked for, not the hidden one
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    finally:
        _FILLING.discard(tmp_name)


def write_text_atomic(path: str | os.PathLike, text: str, overwrite: bool = True) -> None:
    """Write a text file atomically (UTF-8)."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        # backslashreplace: a name that is not UTF-8 (a surrogate in an error text) must not fail the write
        tmp.write_text(text, encoding="utf-8", errors="backslashreplace")


#: Signals that stop a command-line run: Ctrl-C, and what `timeout`, SLURM, `docker stop`
#: and a closed terminal send.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt, as Ctrl-C is, while the block runs:
    the temporary files of the writes under way are then removed instead of left behind.
    The handlers before are restored after. Only in the main thread (elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in STOP_SIGNALS if sig != signal.SIGINT}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold back the stop signals until the block ends, then raise KeyboardInterrupt: the
    renames of a case's files and the table row that records them happen all or not at all.
    Only in the main thread (elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise KeyboardInterrupt


def remove_stale_parts(path: str | os.PathLike) -> None:
    """Remove the temporary files a killed writer of ``path`` left (``.<name>.*.part*``, and
    ``..<name>.*.part*`` of a writer that itself wrote through a temporary name): a process
    killed outright (SIGKILL, power loss) cannot remove them itself."""
    path = Path(path)
    folder, name = glob.escape(str(path.parent)), glob.escape(path.name)
    for pattern in (f".{name}.*.part*", f"..{name}.*.part*"):
        for stale in glob.glob(os.path.join(folder, pattern)):
            with contextlib.suppress(OSError):
                os.unlink(stale)
