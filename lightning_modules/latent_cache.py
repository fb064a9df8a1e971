"""The latent cache of LatentDiffusionModule: each training image's posterior, encoded once.

Entries are keyed by the batch contract's `index` and hold the frozen VAE's posterior mean and
std (float32, on the CPU) plus a fingerprint of the image they came from: a cached latent is
used only while the image at that index is unchanged, so random augmentation simply re-encodes.

`fill` encodes the whole training set before the first step. Under DDP each rank encodes every
world_size-th image and the ranks exchange what they encoded (`all_gather`), so every image is
encoded once in all and every rank ends with the full cache, whatever shard DDP's sampler gives
it in later epochs. No Lightning here: the caller passes the encoder and the gather function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from lightning_modules.checkpoint_io import load_checkpoint

Posterior = tuple[torch.Tensor, torch.Tensor]


class LatentCache:
    """index -> (posterior mean, posterior std, image fingerprint)."""

    def __init__(self) -> None:
        self.entries: dict[int, tuple[torch.Tensor, torch.Tensor, float]] = {}
        self.dirty = False
        self._weights: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def fingerprints(self, images: torch.Tensor) -> list[float]:
        """One number per image: a fixed random projection (cheap; changes when any pixel changes)."""
        if self._weights is None or self._weights.shape != images.shape[1:]:
            self._weights = torch.randn(images.shape[1:], generator=torch.Generator().manual_seed(0))
        w = self._weights.to(images.device, torch.float32)
        return (images.float() * w).flatten(1).sum(1).tolist()

    def _hit(self, key: int, fingerprint: float) -> bool:
        entry = self.entries.get(key)
        return entry is not None and abs(entry[2] - fingerprint) <= 1e-3 * (1 + abs(fingerprint))

    def lookup(self, keys: list[int], fingerprints: list[float]) -> Posterior | None:
        """Stacked (mean, std) when every key is cached for the same image, else None."""
        if not all(self._hit(k, p) for k, p in zip(keys, fingerprints)):
            return None
        return (torch.stack([self.entries[k][0] for k in keys]), torch.stack([self.entries[k][1] for k in keys]))

    def store(self, keys: list[int], mean: torch.Tensor, std: torch.Tensor, fingerprints: list[float]) -> None:
        for k, m, s, p in zip(keys, mean.detach().float().cpu(), std.detach().float().cpu(), fingerprints):
            self.entries[int(k)] = (m, s, float(p))
        self.dirty = True

    @torch.no_grad()
    def fill(self, dataset: Dataset, encode: Callable[[torch.Tensor], Posterior], latent_shape: tuple[int, ...],
             batch_size: int, device: torch.device, rank: int = 0, world_size: int = 1,
             all_gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> int:
        """Encode this rank's share of `dataset` (images not cached yet) and share it; returns how many it encoded.

        Under DDP every rank must call this (the exchange is a collective)."""
        shard = list(range(rank, len(dataset), world_size))
        encoded, mine = 0, []
        for batch in DataLoader(Subset(dataset, shard), batch_size=max(1, batch_size), shuffle=False):
            images = batch["image"].to(device)
            keys = [int(i) for i in batch["index"]]
            prints = self.fingerprints(images)
            todo = [j for j, (k, p) in enumerate(zip(keys, prints)) if not self._hit(k, p)]
            if todo:
                mean, std = encode(images[todo])
                self.store([keys[j] for j in todo], mean, std, [prints[j] for j in todo])
                encoded += len(todo)
            mine.extend(keys)
        if world_size > 1 and all_gather is not None:
            self._exchange(mine, -(-len(dataset) // world_size), tuple(latent_shape), all_gather, device)
        return encoded

    def _exchange(self, mine: list[int], per_rank: int, shape: tuple[int, ...], all_gather: Callable,
                  device: torch.device) -> None:
        """All-gather every rank's entries (padded to the same count; key -1 marks padding)."""
        keys = torch.full((per_rank,), -1, dtype=torch.long)
        means, stds = torch.zeros(per_rank, *shape), torch.zeros(per_rank, *shape)
        prints = torch.zeros(per_rank, dtype=torch.float64)
        for j, k in enumerate(mine):
            keys[j], means[j], stds[j], prints[j] = k, self.entries[k][0], self.entries[k][1], self.entries[k][2]
        gathered = [all_gather(t.to(device)).cpu() for t in (keys, means, stds, prints)]
        for k, m, s, p in zip(*(t.flatten(0, 1) for t in gathered)):
            if int(k) >= 0:
                self.entries[int(k)] = (m.clone(), s.clone(), float(p))

    # --- disk -------------------------------------------------------------------------------
    def load(self, path: Path) -> bool:
        if not path.is_file():
            return False
        # tensors, tuples and floats only: weights_only=True reads it and refuses anything that would run code
        self.entries = load_checkpoint(path, "model.init_args.cache_dir", expected="a synthmed latent cache file")
        self.dirty = False
        return True

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{id(self)}")
        torch.save(self.entries, tmp)
        tmp.replace(path)
        self.dirty = False
