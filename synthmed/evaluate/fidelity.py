"""FID and KID through torchmetrics, on features computed once by a named extractor.

torchmetrics is given an identity feature module (`PrecomputedFeatures`) so its own
`FrechetInceptionDistance` / `KernelInceptionDistance` code does the statistics; feeding it the
extractor itself on the images gives the same number (tested), only slower.
"""

from __future__ import annotations

import warnings

import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from synthmed.evaluate.extractors import PrecomputedFeatures
from synthmed.evaluate.runtime import single_thread

KID_SUBSETS = 100
KID_MAX_SUBSET_SIZE = 1000


def _check(real: torch.Tensor, fake: torch.Tensor) -> None:
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature matrices must be N x D with the same D; got {tuple(real.shape)} and "
                         f"{tuple(fake.shape)}")
    if real.shape[0] < 2 or fake.shape[0] < 2:
        raise ValueError(f"FID/KID need at least 2 images per set; got {real.shape[0]} real and "
                         f"{fake.shape[0]} fake")


@single_thread()
def fid_from_features(real: torch.Tensor, fake: torch.Tensor, batch_size: int = 1024) -> float:
    """Fréchet distance between Gaussians fitted to N x D real and M x D fake features."""
    _check(real, fake)
    metric = FrechetInceptionDistance(feature=PrecomputedFeatures(real.shape[1]), reset_real_features=True)
    for start in range(0, real.shape[0], batch_size):
        metric.update(real[start:start + batch_size].double(), real=True)
    for start in range(0, fake.shape[0], batch_size):
        metric.update(fake[start:start + batch_size].double(), real=False)
    return float(metric.compute())


def kid_subset_size(n_real: int, n_fake: int) -> int:
    """torchmetrics' default 1000, capped at half the smaller set.

    Half, not all: subsets as large as the set would all be the same images, and the reported
    KID std would be 0 whatever the data (the mean is unbiased at any subset size).
    """
    return max(2, min(KID_MAX_SUBSET_SIZE, min(n_real, n_fake) // 2))


@single_thread()
def kid_from_features(real: torch.Tensor, fake: torch.Tensor, seed: int = 0,
                      subsets: int = KID_SUBSETS) -> tuple[float, float, dict]:
    """KID mean and std over `subsets` random subsets (polynomial kernel, degree 3), seeded.

    Returns (mean, std, settings) where settings records the subset count and size.
    """
    _check(real, fake)
    size = kid_subset_size(real.shape[0], fake.shape[0])
    with warnings.catch_warnings():  # "will save all extracted features in buffer": intended, they are small
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=PrecomputedFeatures(real.shape[1]), subsets=subsets,
                                         subset_size=size)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):  # torchmetrics draws the subsets from the global RNG
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std), {"subsets": subsets, "subset_size": size, "kernel": "polynomial, degree 3, "
                                     "gamma 1/D, coef 1 (torchmetrics defaults)"}
