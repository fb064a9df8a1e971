"""Seeded bootstrap over images: resampling counts and 95 % percentile intervals.

A bootstrap round draws each image set with replacement; it is represented by *counts* (how often
each original image was drawn), so a metric can be re-evaluated on precomputed distance / kernel
matrices instead of copying images. Metrics built on pairs of distinct images (KID, k-NN radii)
never pair an image with its own duplicate (see fidelity / manifold).

Hand-written because the libraries synthmed uses offer no resampling over precomputed matrices
(scipy.stats.bootstrap resamples raw data and recomputes the statistic from it, which for FID/KID/
k-NN metrics would recompute feature matrices each round).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

DEFAULT_ROUNDS = 200  # measured: all intervals of a 300-fake / 180-real / 32 px evaluate in a few seconds on CPU
LEVEL = 0.95


def counts(n: int, rounds: int, generator: torch.Generator) -> torch.Tensor:
    """rounds x n float64 multiplicities of n items drawn n times with replacement."""
    draws = torch.randint(0, n, (rounds, n), generator=generator)
    out = torch.zeros(rounds, n, dtype=torch.float64)
    out.scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))
    return out


def generator(seed: int, salt: int = 0) -> torch.Generator:
    """A torch.Generator seeded from the evaluation seed and a per-metric salt (independent streams)."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(salt))


def interval(values: list[float] | torch.Tensor, level: float = LEVEL) -> tuple[float, float] | None:
    """Percentile interval of bootstrap replicates (non-finite replicates kept: inf stays inf)."""
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    v = v[~torch.isnan(v)]
    if v.numel() < 2:
        return None
    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
    s = torch.sort(v).values
    pick = [s[min(s.numel() - 1, max(0, int(math.floor(q * (s.numel() - 1) + 0.5))))] for q in (lo, hi)]
    return float(pick[0]), float(pick[1])


def mean_interval(values: torch.Tensor, rounds: int, seed: int, salt: int) -> tuple[float, float] | None:
    """Interval of the mean of per-image values (e.g. SSIM per fake), resampling the images."""
    v = values.double().flatten()
    if rounds < 1 or v.numel() < 2:
        return None
    c = counts(v.numel(), rounds, generator(seed, salt))
    with torch.no_grad():
        finite = torch.isfinite(v)
        if bool(finite.all()):
            return interval(c @ v / v.numel())
        # inf values (PSNR of identical pairs): a round's mean is inf when it drew one
        drew_inf = (c[:, ~finite] > 0).any(dim=1)
        means = (c[:, finite] @ v[finite]) / v.numel()
        means[drew_inf] = math.inf
        return interval(means)


def replicate(statistic: Callable[[torch.Tensor, torch.Tensor], float], n_real: int, n_fake: int, rounds: int,
              seed: int, salt: int) -> tuple[float, float] | None:
    """Interval of statistic(real_counts, fake_counts) over `rounds` joint resamplings of both sets."""
    if rounds < 1 or n_real < 2 or n_fake < 2:
        return None
    g = generator(seed, salt)
    real_counts, fake_counts = counts(n_real, rounds, g), counts(n_fake, rounds, g)
    return interval([statistic(real_counts[b], fake_counts[b]) for b in range(rounds)])
