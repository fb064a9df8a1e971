"""Injected optimizers and LR schedulers, the LightningCLI way (as lightning-hydra-template's mnist_module).

Every module takes `optimizer: OptimizerCallable | None` and `lr_scheduler: LRSchedulerCallable |
None`; in YAML:

    model:
      init_args:
        optimizer:
          class_path: torch.optim.AdamW
          init_args: {lr: 1.0e-3, weight_decay: 0.0}
        lr_scheduler:
          class_path: lightning_modules.optim.WarmupCosineLR
          init_args: {warmup_steps: 100, decay: cosine}

and on the command line `--model.init_args.optimizer.init_args.lr 1e-4`. `None` keeps each
module's former default (AdamW with the module's `default_optimizer` settings; constant LR), so
results do not move. A default is `None` rather than a partial because jsonargparse can neither
print nor override a partial; the YAMLs spell the optimizer out.
"""

from __future__ import annotations

import functools
import inspect
import io
import math
import os
from typing import Any, Callable, Iterable, Literal

import torch
from torch.optim.lr_scheduler import LRScheduler

OptimizerFactory = Callable[[Iterable], torch.optim.Optimizer]


class WarmupCosineLR(LRScheduler):
    """Linear warm-up over `warmup_steps` optimizer steps, then a constant LR or a cosine decay to 0.

    Args:
        optimizer: the optimizer (given by the module).
        warmup_steps: steps of linear warm-up, factor (step + 1) / warmup_steps.
        decay: "constant" or "cosine" (to 0 at the run's last step).
        total_steps: the run's length in optimizer steps; null = read from the trainer
            (`estimated_stepping_batches`) at the first decaying step, not earlier: reading it while
            optimizers are configured builds the train loader before Lightning restores a checkpoint,
            so a resumed fit would lose the loader's mid-epoch position (Lightning issue #20550).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int = 0,
                 decay: Literal["constant", "cosine"] = "constant", total_steps: int | None = None,
                 last_epoch: int = -1):
        if decay not in ("constant", "cosine"):
            raise ValueError(f"lr_scheduler decay={decay!r}; use constant or cosine")
        self.warmup_steps, self.decay, self.total_steps = int(warmup_steps), decay, total_steps
        self.run_length: Callable[[], int] | None = None  # set by the module; not saved
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        warmup = self.warmup_steps
        if step < warmup:
            return (step + 1) / warmup
        if self.decay == "cosine" and step > warmup:  # at step == warmup the cosine factor is 1
            if self.total_steps is None:
                if self.run_length is None:
                    raise RuntimeError("WarmupCosineLR(decay='cosine') needs total_steps or a trainer")
                self.total_steps = max(1, int(self.run_length()))
            progress = min(1.0, (step - warmup) / max(1, self.total_steps - warmup))
            # float32 cosine, as the LambdaLR this replaces computed it (numbers must not move)
            return 0.5 * (1.0 + torch.cos(torch.tensor(progress * math.pi)).item())
        return 1.0

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().state_dict().items() if k != "run_length"}


def adamw(**settings: float) -> OptimizerFactory:
    """torch AdamW with `settings` (lr, weight_decay, ...) as an optimizer factory, for Python callers."""
    return functools.partial(torch.optim.AdamW, **settings)


def warmup(warmup_steps: int, decay: str = "constant", total_steps: int | None = None):
    """A `WarmupCosineLR` factory, for Python callers."""
    return functools.partial(WarmupCosineLR, warmup_steps=warmup_steps, decay=decay, total_steps=total_steps)


def factory_from_config(config: dict[str, Any], base: type, option: str) -> Callable:
    """A `class_path` + `init_args` dict (as saved in a checkpoint made from Python) as a factory.

    Only subclasses of `base` from torch.optim or lightning_modules are built: a checkpoint's
    hyper-parameters must not choose what code runs.
    """
    import importlib

    class_path = str(config.get("class_path", ""))
    module_name, _, name = class_path.rpartition(".")
    if not module_name.startswith(("torch.optim", "lightning_modules.")):
        raise ValueError(f"{option}.class_path={class_path!r}: only torch.optim and lightning_modules classes are "
                         "built from saved hyper-parameters")
    cls = getattr(importlib.import_module(module_name), name, None)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"{option}.class_path={class_path!r} is not a {base.__name__}")
    return functools.partial(cls, **dict(config.get("init_args") or {}))


def configure_injected(module: Any, params: Iterable, optimizer: OptimizerFactory | None,
                       lr_scheduler: Callable[[torch.optim.Optimizer], Any] | None,
                       default_optimizer: dict[str, float], interval: str = "step") -> Any:
    """What `configure_optimizers` returns for an injected optimizer (+ scheduler, stepped every `interval`)."""
    if isinstance(optimizer, dict):
        optimizer = factory_from_config(optimizer, torch.optim.Optimizer, "model.init_args.optimizer")
    if isinstance(lr_scheduler, dict):
        lr_scheduler = factory_from_config(lr_scheduler, LRScheduler, "model.init_args.lr_scheduler")
    opt = (optimizer or adamw(**default_optimizer))(params)
    if lr_scheduler is None:
        return opt
    scheduler = lr_scheduler(opt)
    if isinstance(scheduler, WarmupCosineLR) and scheduler.total_steps is None:
        scheduler.run_length = lambda: module.trainer.estimated_stepping_batches
    if isinstance(scheduler, WarmupCosineLR) and scheduler.warmup_steps <= 0 and scheduler.decay == "constant":
        return opt  # a no-op schedule: same as none (and as before the injection)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}


def plain_hyperparameters(module: Any, keys: tuple[str, ...] = ("optimizer", "lr_scheduler")) -> None:
    """Keep only plain values in a module's saved hyper-parameters (after `save_hyperparameters`).

    Objects with `to_dict` (the NoiseSchedule) become their dict. `optimizer`/`lr_scheduler` stay
    only as plain config: under the CLI they are the parsed `class_path`/`init_args` dicts (kept: the
    checkpoint records them and `torch.load(weights_only=True)` reads them); a callable passed from
    Python would be pickled by reference, which a safe load refuses, so it is left out (a reload
    gets the default). Both the live and the initial copy (what loggers write) are cleaned.
    """
    for hparams in (module.hparams, getattr(module, "_hparams_initial", {})):
        for key in list(hparams):
            value = hparams[key]
            if hasattr(value, "to_dict") and not isinstance(value, dict):
                hparams[key] = value.to_dict()
            elif key in keys and not (value is None or isinstance(value, dict)):
                del hparams[key]


def save_plain_hyperparameters(module: Any, optimizer: Any, lr_scheduler: Any) -> None:
    """`save_hyperparameters()` of the calling `__init__` (its frame, which Lightning would find itself
    when called there), made plain (`plain_hyperparameters`), and the injected optimizer and LR
    scheduler kept on the module for `configure_optimizers`."""
    module.save_hyperparameters(frame=inspect.currentframe().f_back)
    plain_hyperparameters(module)
    module.optimizer, module.lr_scheduler = optimizer, lr_scheduler


# hyper-parameters of checkpoints written before the optimizer, LR scheduler and noise schedule were arguments
LEGACY_KEYS = ("lr", "weight_decay", "warmup_steps", "lr_schedule")


def upgrade_legacy_hparams(checkpoint: dict[str, Any]) -> bool:
    """Rewrite an older synthmed checkpoint's hyper-parameters to today's arguments, in place.

    `lr` / `weight_decay` become `optimizer` (AdamW, as they meant), `warmup_steps` / `lr_schedule`
    become `lr_scheduler` (WarmupCosineLR), and a diffusion checkpoint's saved noise schedule
    becomes `noise_schedule`. Returns whether anything changed.
    """
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hparams, dict) or not any(k in hparams for k in LEGACY_KEYS):
        return False
    settings = {k: hparams.pop(k) for k in ("lr", "weight_decay") if k in hparams}
    if settings and hparams.get("optimizer") is None:
        hparams["optimizer"] = {"class_path": "torch.optim.AdamW", "init_args": settings}
    warmup_steps, decay = hparams.pop("warmup_steps", 0), hparams.pop("lr_schedule", "constant")
    if (warmup_steps or decay != "constant") and hparams.get("lr_scheduler") is None:
        hparams["lr_scheduler"] = {"class_path": "lightning_modules.optim.WarmupCosineLR",
                                   "init_args": {"warmup_steps": int(warmup_steps), "decay": decay}}
    state = checkpoint.get("synthmed_diffusion")
    if isinstance(state, dict) and "noise_schedule" not in hparams:
        hparams["noise_schedule"] = dict(state["noise_schedule"])
    return True


class LoadsLegacyCheckpoints:
    """Mixin for LightningModules: `load_from_checkpoint` reads the file safely and upgrades old hyper-parameters."""

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any):
        if isinstance(checkpoint_path, (str, os.PathLike)):
            from lightning_modules.checkpoint_io import load_checkpoint

            checkpoint = load_checkpoint(checkpoint_path, "checkpoint_path", expected=f"a {cls.__name__} checkpoint")
            if upgrade_legacy_hparams(checkpoint):
                buffer = io.BytesIO()
                torch.save(checkpoint, buffer)
                buffer.seek(0)
                checkpoint_path = buffer
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)
