"""The reverse-diffusion loop shared by every sampler (no Lightning).

It makes exactly the random draws that diffusers' `DDPMPipeline` / `DDIMPipeline` make (initial
noise by `randn_tensor`, then the scheduler's own step noise), so an exported pixel model gives
the same image in diffusers as here for the same seed. Passing one generator per image (a list)
makes every image depend only on its own seed, never on which batch it was drawn in.

Progress: a tqdm bar on stderr when stderr is a terminal; in a log (not a TTY) one plain line
every `PROGRESS_LINE_SECONDS`, so a short sampling run prints nothing and a long one is visible.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Sequence, TextIO

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
PROGRESS_LINE_SECONDS = 30.0


class StepProgress:
    """Sampling progress: a tqdm bar on a TTY, else a line every `every_s` seconds (none if quicker).

    tqdm alone would write a bar per refresh into a log file; the plain-line fallback is ours.
    """

    def __init__(self, total: int, desc: str = "sampling", stream: TextIO | None = None,
                 every_s: float = PROGRESS_LINE_SECONDS, enabled: bool = True):
        self.total, self.desc, self.every_s = total, desc, every_s
        self.stream = stream if stream is not None else sys.stderr
        is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar = tqdm(total=total, desc=desc, file=self.stream, leave=False) if enabled and is_tty else None
        self.enabled, self.done = enabled, 0
        self.start = self.last_line = time.monotonic()

    def update(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            return
        now = time.monotonic()
        if self.enabled and now - self.last_line >= self.every_s:
            self.last_line = now
            elapsed = now - self.start
            eta = elapsed / self.done * (self.total - self.done)
            print(f"{self.desc}: step {self.done}/{self.total}, {elapsed:.0f} s elapsed, ETA {eta:.0f} s",
                  file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def generators_for(seeds: int | Sequence[int] | None) -> torch.Generator | list[torch.Generator] | None:
    """CPU generator(s): an int -> one generator for the batch; a list -> one per image."""
    if seeds is None:
        return None
    if isinstance(seeds, int):
        return torch.Generator("cpu").manual_seed(seeds)
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


@torch.no_grad()
def reverse_diffusion(
    model_fn: ModelFn,
    scheduler: DDPMScheduler | DDIMScheduler | DPMSolverMultistepScheduler,
    shape: tuple[int, ...],
    *,
    num_inference_steps: int,
    generator: torch.Generator | list[torch.Generator] | None = None,
    eta: float = 0.0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    noise: torch.Tensor | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Sample x_0 of `shape` by running `scheduler` backwards with `model_fn(x_t, t)`.

    `noise` replaces the initial draw (fixed-noise grids); `eta` only applies to DDIM;
    `progress=False` silences the bar / periodic line (see the module docstring).
    """
    if noise is None:
        noise = randn_tensor(shape, generator=generator, device=torch.device(device), dtype=dtype)
    x = noise.to(device=device, dtype=dtype) * scheduler.init_noise_sigma
    scheduler.set_timesteps(num_inference_steps)
    step_kwargs = {"eta": eta} if isinstance(scheduler, DDIMScheduler) else {}
    bar = StepProgress(len(scheduler.timesteps), desc=f"sampling {shape[0]} ({type(scheduler).__name__})",
                       enabled=progress)
    try:
        for t in scheduler.timesteps:
            model_output = model_fn(scheduler.scale_model_input(x, t), t.to(device))
            x = scheduler.step(model_output, t, x, generator=generator, **step_kwargs).prev_sample
            bar.update()
    finally:
        bar.close()
    return x
