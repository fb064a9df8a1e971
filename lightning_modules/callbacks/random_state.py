"""Random-number state in checkpoints, so a resumed fit draws what the uninterrupted one would have.

Lightning checkpoints weights, optimizer, LR schedulers, loop counters and callback states, but
not the global random generators that training steps draw from (diffusion noise and timesteps,
label dropout for classifier-free guidance, posterior samples, dropout layers). Without them a
fit resumed with `--ckpt_path last` continues with the generators as `seed_everything` left
them at start-up, i.e. with different noise than the run that was killed.

`ResumeRandomState` stores every rank's torch (CPU and CUDA), numpy and Python generator states
in each checkpoint and puts them back just before the first training batch of a resumed fit:
the point where the killed run would have continued. The synthmed CLI adds it to every `fit`;
with a plain `Trainer` add it to `callbacks` yourself.
"""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn


def capture_random_state() -> dict[str, Any]:
    """This process's generator states (torch CPU, every CUDA device in use, numpy, Python).

    Only tensors and plain Python values, so `torch.load(weights_only=True)` reads them."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                                       float(gauss)]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_random_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ResumeRandomState(Callback):
    """Save each rank's random generator states in checkpoints; restore them when a fit resumes.

    Under DDP every rank's state is gathered into the checkpoint (checkpoints are written by
    all ranks together, so the gather is safe); a resume with a different number of processes
    gives every rank rank zero's state and warns that the noise is no longer the same.
    """

    def __init__(self) -> None:
        self._pending: list[dict[str, Any]] | None = None

    def state_dict(self) -> dict[str, Any]:
        state = capture_random_state()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            states: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(states, state)
        else:
            states = [state]
        return {"ranks": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = list(state_dict.get("ranks") or []) or None

    def on_train_batch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch: Any,
                             batch_idx: int) -> None:
        if self._pending is None:
            return
        states, self._pending = self._pending, None
        if len(states) != trainer.world_size:
            rank_zero_warn(f"the checkpoint holds random states of {len(states)} process(es) but this fit has "
                           f"{trainer.world_size}: every rank continues from rank 0's state, so the noise drawn "
                           "from here on differs from the original run's")
        restore_random_state(states[trainer.global_rank] if len(states) == trainer.world_size else states[0])
