"""ProgressLine: a plain progress line every ~30 s when there is no progress bar (logs, pipes, CI).

Lightning's bars are for terminals; in a log file (a `reproduce` stage's output is piped) they are
either off or a wall of carriage returns, so a 2-minute diffusion fit printed nothing. This prints

    train: step 120/700 (17 %), epoch 3, 45 s elapsed, about 3 min left, train/loss 0.123

at most every `every_s` seconds, and only while the Trainer has no progress-bar callback (on a
terminal the bar shows the same). Lightning has no such plain-text callback, hence this one.
"""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from lightning_modules.durations import format_seconds


def total_steps(trainer: "pl.Trainer") -> int | None:
    """The fit's step budget: max_steps, else max_epochs x batches per epoch; None when unknown."""
    if trainer.max_steps is not None and trainer.max_steps > 0:
        return int(trainer.max_steps)
    batches = trainer.num_training_batches
    if trainer.max_epochs is not None and trainer.max_epochs > 0 and batches not in (None, float("inf")):
        return int(trainer.max_epochs * batches // max(1, trainer.accumulate_grad_batches))
    return None


class ProgressLine(Callback):
    """Print one line of training progress every `every_s` seconds when no progress bar is shown.

    Args:
        every_s: seconds between lines (default 30).
        force: print even when a progress bar is active (tests).
    """

    def __init__(self, every_s: float = 30.0, force: bool = False):
        self.every_s, self.force = float(every_s), force
        self._start = self._last = 0.0
        self._first_step = 0

    def _active(self, trainer: "pl.Trainer") -> bool:
        return self.force or trainer.progress_bar_callback is None

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._start = self._last = time.monotonic()
        self._first_step = trainer.global_step  # a resumed fit counts its speed from here

    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        now = time.monotonic()
        if not self._active(trainer) or now - self._last < self.every_s:
            return
        self._last = now
        rank_zero_info(self.line(trainer, now - self._start))

    def line(self, trainer: "pl.Trainer", elapsed: float) -> str:
        """The progress text for the current step after `elapsed` seconds."""
        step, total = trainer.global_step, total_steps(trainer)
        parts = [f"train: step {step}" + (f"/{total} ({100 * step / total:.0f} %)" if total else ""),
                 f"epoch {trainer.current_epoch}", f"{format_seconds(elapsed)} elapsed"]
        done = step - self._first_step
        if total and done > 0:
            parts.append(f"about {format_seconds(elapsed / done * max(0, total - step))} left")
        elif not total:
            parts.append("no ETA (no step budget)")
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            parts.append(f"train/loss {float(loss):.4g}")
        return ", ".join(parts)
