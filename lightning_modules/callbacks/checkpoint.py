"""StepCheckpoint: Lightning's ModelCheckpoint whose `last.ckpt` is really the last state.

Two gaps of Lightning 2.6 are closed here.

Epoch-level saves: since 2.6, `save_last` writes `last.ckpt` only when a top-k file is saved at
the same step, so with `monitor` + `save_top_k: 1` it is a copy of the best checkpoint (measured:
a brain_tumor_mri fold that trained 24 epochs left `last.ckpt` at epoch 18, its best), and
`fit --ckpt_path last` would go back to the best epoch instead of continuing. StepCheckpoint
refreshes `last.ckpt` at every epoch-level save point (validation end, or train epoch end when
there is no validation), as Lightning did before 2.6.

Step-level saves: with `every_n_train_steps: N` Lightning's ModelCheckpoint refreshes `last.ckpt` only every N
steps (and its end-of-training fallback only fires when nothing was saved at all), so a run
whose length is not a multiple of N ends with a `last.ckpt` up to N - 1 steps old: what
`predict --ckpt_path .../last.ckpt`, export and a later resume would read. StepCheckpoint also
saves (top-k and) `last.ckpt` when the step that just ended is the run's last one (max_steps
reached, or the last batch of the last epoch), so `best_model_path` without a monitor is the
final step too. It saves from the same hook as the periodic saves, before the
EMA callback copies its average into the model at train end, so the checkpoint holds the EMA
weights (`state_dict`) and the live weights (`current_model_state`) exactly as a mid-run one
does and a resumed or extended fit continues from the right place.

`save_last: link` (Lightning >= 2.1): `last.ckpt` is a relative symlink to the newest top-k file
instead of a second copy of it; the generator configs use it (a run then leaves one checkpoint
file: the LDM's 82 MB and the autoencoder's 12 MB once instead of twice). Lightning links to the
newest file it saved, even when that file is older than the state at an epoch-level save point
(a monitored run whose metric stopped improving); then StepCheckpoint writes a real `last.ckpt`
instead, so `last.ckpt` is still the latest state (the next top-k save turns it back into a link).
A symlink resolves wherever the run folder is moved (`runs.move_aside`) or copied with its links
(`cp -a`, `rsync -a`); `torch.load`, `--ckpt_path last` and `runs.find_checkpoint` read through it.
"""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint


def is_final_training_step(trainer: "pl.Trainer") -> bool:
    """True in `on_train_batch_end` of the step after which fit stops by itself (not early stopping)."""
    if trainer.max_steps is not None and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
        return True
    last_epoch = trainer.max_epochs is not None and 0 < trainer.max_epochs <= trainer.current_epoch + 1
    return last_epoch and bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)


class StepCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` (same arguments) whose `last.ckpt` is the latest state, not the best one.

    With `save_last: true` (or `link`) it refreshes `last.ckpt` at every epoch-level save point and,
    with `every_n_train_steps`, also at the final training step (see the module docstring for why).
    With `link`, `last.ckpt` links to a top-k file saved at the same step, else it is written as a file.
    Top-k files and `best_model_path` follow ModelCheckpoint's rules unchanged.
    """

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def _refresh_last(self, trainer: "pl.Trainer") -> None:
        """Write `last.ckpt` at an epoch-level save point unless this step was saved already."""
        if self.save_last and self._every_n_epochs >= 1 and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_last_checkpoint(self, trainer: "pl.Trainer", monitor_candidates: dict) -> None:
        if not self.save_last:
            return
        if self.save_last == "link" and self._last_global_step_saved == trainer.global_step:
            super()._save_last_checkpoint(trainer, monitor_candidates)  # a top-k file of this step: link to it
            return
        # A real file: the newest top-k file (if any) is older than this state. A link there goes first: a
        # CheckpointIO that writes in place would write through it into the top-k file it names (Lightning's
        # default one writes a temporary file and renames it, measured on 2.6.6).
        if self.last_model_path and os.path.islink(self.last_model_path) and trainer.is_global_zero:
            os.remove(self.last_model_path)
        mode, self.save_last = self.save_last, True
        try:
            super()._save_last_checkpoint(trainer, monitor_candidates)
        finally:
            self.save_last = mode

    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if (self.save_last and self._every_n_train_steps > 0 and is_final_training_step(trainer)
                and not self._should_skip_saving_checkpoint(trainer)):
            candidates = self._monitor_candidates(trainer)
            if self.monitor is None or self.monitor in candidates:  # as a periodic save does
                self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
