"""ResumableEarlyStopping: Lightning's EarlyStopping that only judges a freshly logged metric.

Lightning's EarlyStopping checks its monitor at every train-epoch end (or validation end) and
raises "Early stopping conditioned on metric `val/loss` which is not available" when validation
has not run since the start of the process. Two ordinary runs hit that (Lightning issues #18595
and #19549 describe the mechanism):

- `--trainer.max_steps N` that ends mid-epoch: the epoch loop stops, `on_train_epoch_end` runs,
  validation did not; the fit crashed at its very end, leaving no checkpoint and no metrics.
- a resume (`fit --ckpt_path`) from a checkpoint written while validation was running (what
  Lightning's SIGUSR1 / SLURM preemption handler can write at any moment): Lightning does not
  restart a half-done validation, so the resumed epoch ends without one.

Where the metric is present but stale (validation ran in an earlier epoch, not this one) the plain
callback would count the old value once more (one patience step lost per stop). This subclass
skips the check in both cases: it runs only when the monitored value in `callback_metrics` is a
new object since the last check (Lightning stores a new tensor each time a metric is logged or
computed, and leaves the old one in place otherwise). Everything else, state_dict included, is
EarlyStopping's own, so checkpoints stay interchangeable with the plain callback.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.utilities import rank_zero_info


class ResumableEarlyStopping(EarlyStopping):
    """`EarlyStopping` (same arguments) that skips a check when its monitor was not logged since the last one.

    See the module docstring: a max_steps stop mid-epoch and a resume from a checkpoint written
    during validation no longer crash, and a stale value is not counted twice.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._last_checked: Any = None  # the callback_metrics tensor judged last (compared by identity)
        self._validated = False  # a validation loop ended since the last check

    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not trainer.sanity_checking:
            self._validated = True
        super().on_validation_end(trainer, pl_module)

    def _run_early_stopping_check(self, trainer: "pl.Trainer") -> None:
        current = trainer.callback_metrics.get(self.monitor)
        validated, self._validated = self._validated, False
        # absent although validation ran: a misspelt monitor, which EarlyStopping itself reports (strict)
        if (current is None and not validated) or (current is not None and current is self._last_checked):
            rank_zero_info(f"{type(self).__name__}: `{self.monitor}` was not logged since the last check "
                           f"(epoch {trainer.current_epoch}, step {trainer.global_step}); check skipped")
            return
        self._last_checked = current
        super()._run_early_stopping_check(trainer)
