"""A run's logs: ``log.csv`` (always), TensorBoard scalars (when installed), a progress bar.

``log.csv`` gets one row per validation; a run resumed on an older ``log.csv`` keeps that
file's columns. TensorBoard event files go to ``RUN/tensorboard`` when
``torch.utils.tensorboard`` can be imported (it needs the optional ``tensorboard``
package; without it nothing is written and nothing is said). The tqdm bar shows on an
interactive terminal only.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable
from pathlib import Path

COLUMNS = ["iteration", "loss", "lr", "val_dice_mean", "seconds", "epoch", "val_dice_cases"]


def _tensorboard_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed (ImportError) or broken: stay silent
        return None
    try:
        return SummaryWriter(log_dir=str(folder))
    except Exception:
        return None


class RunLog:
    """Logging of one training process; everything is a no-op when ``enabled`` is False."""

    def __init__(self, run_dir: Path, total: int, start: int, enabled: bool = True, progress: bool = False,
                 message: Callable[[str], None] = print):
        self.enabled, self._message = enabled, message
        self._stream = self._writer = self._tb = self._bar = None
        if not enabled:
            return
        path = run_dir / "log.csv"
        columns = COLUMNS
        if path.is_file() and path.stat().st_size:
            with open(path, newline="") as stream:
                columns = next(csv.reader(stream), None) or COLUMNS
        new = not path.is_file() or not path.stat().st_size
        self._stream = open(path, "a", newline="")
        self._writer = csv.DictWriter(self._stream, fieldnames=columns, extrasaction="ignore")
        if new:
            self._writer.writeheader()
            self._stream.flush()
        self._tb = _tensorboard_writer(run_dir / "tensorboard")
        if progress and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=start, unit="it", dynamic_ncols=True, desc="training")

    def message(self, text: str) -> None:
        """A line of text, printed above the progress bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            with self._bar.external_write_mode():
                self._message(text)
        else:
            self._message(text)

    def step(self, iteration: int, loss: float, lr: float) -> None:
        """After each optimiser step (``iteration`` counts completed steps)."""
        if not self.enabled:
            return
        if self._tb is not None:
            self._tb.add_scalar("train/loss", loss, iteration)
            self._tb.add_scalar("train/lr", lr, iteration)
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def validation(self, row: dict, scores: dict[str, float]) -> None:
        """One ``log.csv`` row (keys of :data:`COLUMNS`) and the validation scalars."""
        if not self.enabled:
            return
        self._writer.writerow({**row, "val_dice_cases": ";".join(f"{k}={v:.4f}" for k, v in scores.items())})
        self._stream.flush()
        if self._tb is not None:
            iteration = int(row["iteration"])
            self._tb.add_scalar("train/loss_mean", float(row["loss"]), iteration)
            if scores:
                self._tb.add_scalar("val/dice_mean", float(row["val_dice_mean"]), iteration)
                for case, value in scores.items():
                    self._tb.add_scalar(f"val/dice/{case}", value, iteration)
            self._tb.flush()

    def close(self) -> None:
        """Close the bar, the CSV file and the TensorBoard writer."""
        for item in (self._bar, self._tb, self._stream):
            if item is not None:
                item.close()
        self._bar = self._tb = self._stream = None

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
