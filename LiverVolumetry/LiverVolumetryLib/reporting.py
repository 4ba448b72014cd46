"""How a run reports progress: a progress bar, JSON lines for programs, or nothing.

JSON lines (``--progress json``) are the contract with the Slicer module, which runs the
engine in a background process and reads its stdout:
``{"event": "progress", "case": ..., "fraction": 0.42, "stage": "network"}``,
``{"event": "case_done", "case": ..., "status": "ok" | "failed" | "skipped", "error": ..., "seconds": ...}``,
``{"event": "log", "message": ...}``.
"""

from __future__ import annotations

import json
import sys


class Reporter:
    """Silent reporter; subclasses print."""

    def start(self, total: int) -> None: ...

    def progress(self, case: str, fraction: float, stage: str) -> None: ...

    def case_done(self, case: str, status: str, error: str | None, seconds: float) -> None: ...

    def log(self, message: str) -> None: ...

    def close(self) -> None: ...


class JsonReporter(Reporter):
    """One JSON object per line on stdout, flushed at once."""

    def _emit(self, **event) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    def start(self, total: int) -> None:
        self._emit(event="start", cases=total)

    def progress(self, case: str, fraction: float, stage: str) -> None:
        self._emit(event="progress", case=case, fraction=round(float(fraction), 4), stage=stage)

    def case_done(self, case: str, status: str, error: str | None, seconds: float) -> None:
        self._emit(event="case_done", case=case, status=status, error=error, seconds=round(seconds, 2))

    def log(self, message: str) -> None:
        self._emit(event="log", message=message)


class BarReporter(Reporter):
    """A tqdm progress bar over all cases (in case units) on stderr, messages above it."""

    def __init__(self) -> None:
        self._bar = None
        self._case_base = 0
        self._total = 0

    def start(self, total: int) -> None:
        from tqdm import tqdm

        self._total = total

        self._bar = tqdm(total=total, unit="case", file=sys.stderr, dynamic_ncols=True,
                         bar_format="{desc} {percentage:3.0f}%|{bar}| {n:.1f}/{total} cases [{elapsed}<{remaining}]")

    def progress(self, case: str, fraction: float, stage: str) -> None:
        if self._bar is not None:
            self._bar.set_description_str(f"{case}: {stage}")
            self._bar.n = self._case_base + min(max(fraction, 0.0), 1.0)
            self._bar.refresh()

    def case_done(self, case: str, status: str, error: str | None, seconds: float) -> None:
        self._case_base += 1
        if status == "failed" and self._total == 1:
            self.close()  # the command prints the one-line error itself
            return
        text = f"{case}: {status}" + (f" ({seconds:.1f} s)" if status == "ok" else "") + (f" - {error}" if error else "")
        self.log(text)
        if self._bar is not None:
            self._bar.n = self._case_base
            self._bar.refresh()

    def log(self, message: str) -> None:
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class TextReporter(Reporter):
    """Plain lines on stderr (no bar): for logs and non-interactive use."""

    def start(self, total: int) -> None:
        self._total = total

    def case_done(self, case: str, status: str, error: str | None, seconds: float) -> None:
        if status == "failed" and getattr(self, "_total", 0) == 1:
            return  # a single case's error is the command's one-line error message
        self.log(f"{case}: {status}" + (f" ({seconds:.1f} s)" if status == "ok" else "") + (f" - {error}" if error else ""))

    def log(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)


def make_reporter(kind: str) -> Reporter:
    """'bar' (default on a terminal), 'text', 'json' or 'none'."""
    if kind == "auto":
        kind = "bar" if sys.stderr.isatty() else "text"
    return {"bar": BarReporter, "json": JsonReporter, "text": TextReporter, "none": Reporter}[kind]()
