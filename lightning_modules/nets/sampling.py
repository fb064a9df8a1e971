"""The reverse-diffusion loop shared by every sampler (no Lightning).

It makes exactly the random draws that diffusers' `DDPMPipeline` / `DDIMPipeline` make (initial
noise by `randn_tensor`, then the scheduler's own step noise), so an exported pixel model gives
the same image in diffusers as here for the same seed. Passing one generator per image (a list)
makes every image depend only on its own seed, never on which batch it was drawn in.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
    scheduler: DDPMScheduler | DDIMScheduler,
    shape: tuple[int, ...],
    *,
    num_inference_steps: int,
    generator: torch.Generator | list[torch.Generator] | None = None,
    eta: float = 0.0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample x_0 of `shape` by running `scheduler` backwards with `model_fn(x_t, t)`.

    `noise` replaces the initial draw (fixed-noise grids); `eta` only applies to DDIM.
    """
    if noise is None:
        noise = randn_tensor(shape, generator=generator, device=torch.device(device), dtype=dtype)
    x = noise.to(device=device, dtype=dtype) * scheduler.init_noise_sigma
    scheduler.set_timesteps(num_inference_steps)
    step_kwargs = {"eta": eta} if isinstance(scheduler, DDIMScheduler) else {}
    for t in scheduler.timesteps:
        model_output = model_fn(scheduler.scale_model_input(x, t), t.to(device))
        x = scheduler.step(model_output, t, x, generator=generator, **step_kwargs).prev_sample
    return x
