"""The callback that owns the noise schedule.

Configured in YAML (`linear` 1e-4..0.02, T=1000 by default; `scaled_linear`, `cosine`,
`sigmoid`), it installs the schedule on the diffusion module when fit starts and logs the
alpha-bar and log-SNR curves to TensorBoard. The module writes the schedule into every
checkpoint and re-installs it on load, so sampling after a reload uses exactly the training
schedule even when this callback is absent or configured differently at predict time (a
warning says so).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightning_modules.nets.schedules import NoiseSchedule, describe


class NoiseScheduleCallback(Callback):
    """Install and log a `NoiseSchedule`.

    Args:
        name: "linear" | "scaled_linear" | "cosine" | "sigmoid".
        num_train_timesteps: T.
        beta_start / beta_end: ends of the beta curve (ignored by cosine).
        log_curves: write noise_schedule/alpha_bar and noise_schedule/log_snr (x axis = t).
    """

    def __init__(self, name: str = "linear", num_train_timesteps: int = 1000, beta_start: float = 1e-4,
                 beta_end: float = 0.02, log_curves: bool = True):
        self.schedule = NoiseSchedule(name, num_train_timesteps, beta_start, beta_end)
        self.log_curves = log_curves

    @staticmethod
    def _check_module(pl_module: "pl.LightningModule") -> None:
        if not hasattr(pl_module, "set_noise_schedule"):
            raise TypeError(f"NoiseScheduleCallback needs a diffusion module; {type(pl_module).__name__} has no "
                            "set_noise_schedule (remove the callback from this YAML)")

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        self._check_module(pl_module)
        if stage == "fit":
            pl_module.set_noise_schedule(self.schedule)

    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # a resumed fit has re-installed the checkpoint's schedule by now: that one wins
        if pl_module.noise_schedule != self.schedule:
            rank_zero_warn(f"resuming with the checkpoint's noise schedule {pl_module.noise_schedule}, not the "
                           f"configured {self.schedule}")
        rank_zero_info(f"noise schedule: {describe(pl_module.noise_schedule)}")
        if self.log_curves and trainer.is_global_zero:
            self._log_curves(trainer, pl_module.noise_schedule)

    def _warn_if_different(self, pl_module: "pl.LightningModule") -> None:
        if getattr(pl_module, "noise_schedule", self.schedule) != self.schedule:
            rank_zero_warn(f"sampling with the checkpoint's noise schedule {pl_module.noise_schedule}; the "
                           f"configured {self.schedule} is ignored outside fit")

    def on_predict_start(self, trainer, pl_module) -> None:
        self._warn_if_different(pl_module)

    def on_test_start(self, trainer, pl_module) -> None:
        self._warn_if_different(pl_module)

    def _log_curves(self, trainer: "pl.Trainer", schedule: NoiseSchedule) -> None:
        alpha_bar, log_snr = schedule.alphas_cumprod(), schedule.log_snr()
        for logger in trainer.loggers:
            if not isinstance(logger, TensorBoardLogger):
                continue
            writer = logger.experiment
            writer.add_text("noise_schedule/description", describe(schedule))
            for t in range(0, len(alpha_bar), max(1, len(alpha_bar) // 250)):
                writer.add_scalar("noise_schedule/alpha_bar", float(alpha_bar[t]), global_step=t)
                writer.add_scalar("noise_schedule/log_snr", float(log_snr[t]), global_step=t)

    def state_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule.to_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = NoiseSchedule.from_dict(state_dict["schedule"])
        if saved != self.schedule:
            rank_zero_warn(f"the checkpoint was trained with {saved}; keeping it instead of the configured {self.schedule}")
        self.schedule = saved
