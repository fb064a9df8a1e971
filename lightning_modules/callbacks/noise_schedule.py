"""The callback that logs the diffusion module's noise schedule (it does not set it).

The schedule is the module's `noise_schedule` argument (`model.init_args.noise_schedule` in YAML:
name linear | scaled_linear | cosine | sigmoid, num_train_timesteps, beta_start, beta_end), saved
with its hyper-parameters and in every checkpoint, as diffusers' schedulers save their config.
This callback writes its one-line description to the log and the alpha-bar and log-SNR curves
to TensorBoard when fit starts.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

from lightning_modules.nets.schedules import NoiseSchedule, describe


class NoiseScheduleCallback(Callback):
    """Log the module's `NoiseSchedule`.

    Args:
        log_curves: write noise_schedule/alpha_bar and noise_schedule/log_snr (x axis = t).
    """

    def __init__(self, log_curves: bool = True):
        self.log_curves = log_curves

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if not isinstance(getattr(pl_module, "noise_schedule", None), NoiseSchedule):
            raise TypeError(f"NoiseScheduleCallback logs a diffusion module's noise schedule, but the model is a "
                            f"{type(pl_module).__name__}: this YAML configures a generator. If --ckpt_path was "
                            "given, it is probably another kind of checkpoint (give a checkpoint of this "
                            "generator's run); otherwise remove the callback")

    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        rank_zero_info(f"noise schedule: {describe(pl_module.noise_schedule)}")
        if self.log_curves and trainer.is_global_zero:
            self._log_curves(trainer, pl_module.noise_schedule)

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
