"""Step clocks for Lightning runs and plain loops, and the steady-state window both are judged on.

A run's throughput is measured between the END of step `warmup` and the END of step
`warmup + steps`: everything that happens per step in a real run (data loading, hooks,
logging, EMA, LR schedule, progress bar) falls in that window exactly `steps` times, while
start-up (imports, data setup, first-epoch latent encoding, allocator warm-up) does not.

Two clocks are read at every step end: wall time (`time.perf_counter`, what a user waits for)
and this process's CPU time (`time.process_time`, all its threads). On a shared CPU machine
the wall clock also counts the time another job held the cores; CPU time counts only work this
process did, so a ratio of CPU-time throughputs is far less sensitive to background load
(with --threads 1 and no loader workers it is the cleanest measure of overhead). On a GPU the
wall clock is the one that matters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from lightning.pytorch import Callback

from benchmarks.common import synchronize


@dataclass
class StepLog:
    """End time and image count of every optimizer step, plus epoch starts and validation runs."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    ends: list[float] = field(default_factory=list)
    cpu_ends: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    epoch_starts: dict[int, tuple[float, float, int]] = field(default_factory=dict)  # epoch -> (wall, cpu, steps)
    validations_at: list[int] = field(default_factory=list)                # steps done when validation began
    train_started: tuple[float, float] | None = None  # (wall, cpu) at on_train_start, before the module's hook

    def step_done(self, batch_size: int) -> None:
        synchronize(self.device)
        self.ends.append(time.perf_counter())
        self.cpu_ends.append(time.process_time())
        self.sizes.append(int(batch_size))

    def before_first_epoch(self) -> tuple[float, float]:
        """(wall, CPU) seconds from on_train_start to the start of epoch 0: the module's own
        on_train_start work (e.g. filling a latent cache) and the first loader set-up."""
        if self.train_started is None or 0 not in self.epoch_starts:
            raise RuntimeError("no on_train_start / epoch 0 recorded")
        wall, cpu, _ = self.epoch_starts[0]
        return wall - self.train_started[0], cpu - self.train_started[1]

    def epoch_started(self, epoch: int) -> None:
        synchronize(self.device)
        self.epoch_starts[epoch] = (time.perf_counter(), time.process_time(), len(self.ends))

    def window(self, warmup: int, steps: int) -> "Window":
        """Throughput between the end of step `warmup` and the end of step `warmup + steps`."""
        if len(self.ends) < warmup + steps or warmup < 1:
            raise RuntimeError(f"need >= {warmup + steps} recorded steps with warmup >= 1, have {len(self.ends)}")
        first, last = warmup - 1, warmup + steps - 1
        images = sum(self.sizes[warmup:warmup + steps])
        inside = [s for s in self.validations_at if warmup <= s < warmup + steps]
        return Window(self.ends[last] - self.ends[first], self.cpu_ends[last] - self.cpu_ends[first], images, steps,
                      len(inside))

    def epoch_seconds(self, epoch: int) -> tuple[float, float, int]:
        """(wall seconds, CPU seconds, images) from the start of `epoch` to the end of its last step.

        Epoch-end hooks (sample grids, checkpoints) are not included: they are not what the
        epoch's data path costs.
        """
        start, cpu_start, first = self.epoch_starts[epoch]
        nxt = self.epoch_starts.get(epoch + 1)
        last = (nxt[2] if nxt else len(self.ends)) - 1
        if last < first:
            raise RuntimeError(f"epoch {epoch} has no recorded steps")
        return self.ends[last] - start, self.cpu_ends[last] - cpu_start, sum(self.sizes[first:last + 1])


@dataclass
class Window:
    """A measured steady-state window."""

    seconds: float
    cpu_seconds: float
    images: int
    steps: int
    validations: int = 0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds

    @property
    def images_per_cpu_s(self) -> float:
        return self.images / self.cpu_seconds

    @property
    def ms_per_step(self) -> float:
        return 1000.0 * self.seconds / self.steps


class StepTimer(Callback):
    """Lightning callback filling a `StepLog` (append it last, so other callbacks' per-step work
    of step k lies before the clock read of step k or before that of step k + 1: both inside the
    window)."""

    def __init__(self) -> None:
        self.clock = StepLog()

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.clock.device = pl_module.device

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        synchronize(self.clock.device)  # callbacks' hooks run before the LightningModule's
        self.clock.train_started = (time.perf_counter(), time.process_time())

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.clock.epoch_started(trainer.current_epoch)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.clock.step_done(len(batch["image"]) if isinstance(batch, dict) else len(batch[0]))

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self.clock.validations_at.append(len(self.clock.ends))


def find_timer(trainer: Any) -> StepTimer:
    for callback in trainer.callbacks:
        if isinstance(callback, StepTimer):
            return callback
    raise RuntimeError("the trainer has no benchmarks.timing.StepTimer callback")
