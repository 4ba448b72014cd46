"""Stop this process when the process that started it ends.

A GUI that runs the engine through a launcher (Slicer's ``PythonSlicer`` starts
``python-real``) can only kill the launcher; without a process-tree library the engine
would compute on, orphaned, after Cancel. With ``--exit-with-parent`` the engine watches
its parent and exits as soon as it is gone. The outputs are written atomically, so an
engine stopped this way leaves no partial file behind (its temporary files are removed by
the next run).
"""

from __future__ import annotations

import os
import threading
import time

#: Exit status of an engine stopped because its parent ended (128 + SIGTERM, as when killed).
EXIT_PARENT_GONE = 143


def _windows_parent_alive():
    """A function telling whether the parent still runs, from a handle opened now, so that a
    later process reusing the parent's id is not taken for it. None if it cannot be opened."""
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    synchronize = 0x00100000
    handle = kernel32.OpenProcess(synchronize, False, os.getppid())
    if not handle:
        return None
    wait_timeout = 0x00000102
    return lambda: kernel32.WaitForSingleObject(handle, 0) == wait_timeout


def _posix_parent_alive():
    """On POSIX an orphan is adopted by another process (init or a subreaper): the parent's
    id changes once the parent has ended."""
    parent = os.getppid()
    return lambda: os.getppid() == parent


def parent_alive_check():
    """A function returning False once the parent has ended, or None where it cannot be watched."""
    if os.name == "nt":
        try:
            return _windows_parent_alive()
        except (OSError, AttributeError):
            return None
    return _posix_parent_alive()


def exit_with_parent(poll_s: float = 0.5) -> bool:
    """Start a daemon thread that ends this process when its parent has ended. True if the
    parent is watched."""
    alive = parent_alive_check()
    if alive is None:
        return False

    def watch() -> None:
        while alive():
            time.sleep(poll_s)
        os._exit(EXIT_PARENT_GONE)  # nobody reads the output any more; no clean-up can be reported

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
    return True
