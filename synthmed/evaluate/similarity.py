"""Paired pixel similarity (SSIM, MS-SSIM, PSNR via torchmetrics) under the two definitions papers use.

* `[nearest_real]`: each fake image against its nearest real image, nearest by Euclidean (RMS)
  distance in **pixel space** at the evaluation size; mean over fakes. A fake set equal to the
  real set scores SSIM 1 here. High values mean "looks like some real image" (and, at the
  extreme, copying: see the memorisation audit).
* `[random_pairs]`: each fake image against a real image drawn at random (seeded); mean over the
  pairs. This is what "SSIM between real and synthetic sets" in most papers computes; it
  measures within-dataset similarity more than fidelity.

Images are compared in [0, 1] (`data_range=1`). MS-SSIM needs images larger than
(kernel_size - 1) * 2 ** (scales - 1): torchmetrics' defaults (kernel 11, 5 scales) need > 160 px,
so smaller images use kernel_size=3 and betas=(0.2, 0.3, 0.5) (3 scales); the settings used are
written into the report.
"""

from __future__ import annotations

import math

import torch
from torchmetrics.image import (MultiScaleStructuralSimilarityIndexMeasure, PeakSignalNoiseRatio,
                                StructuralSimilarityIndexMeasure)

DEFINITIONS = {
    "nearest_real": "each fake vs its nearest real image (Euclidean distance in pixel space at the evaluation "
                    "size), mean over fakes",
    "random_pairs": "each fake vs a randomly drawn real image (seeded), mean over pairs",
}
DEFAULT_MS_SSIM = {"kernel_size": 11, "betas": (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)}
SMALL_MS_SSIM = {"kernel_size": 3, "betas": (0.2, 0.3, 0.5)}


def nearest(query: torch.Tensor, reference: torch.Tensor, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Index and RMS pixel distance of each query image's nearest reference image (chunked, O(chunk x N))."""
    q = query.flatten(1).double()
    r = reference.flatten(1).double()
    scale = math.sqrt(q.shape[1])
    dists, idx = [], []
    for s in range(0, q.shape[0], chunk):
        d = torch.cdist(q[s:s + chunk], r)
        values, where = d.min(dim=1)
        dists.append(values / scale)
        idx.append(where)
    return torch.cat(idx), torch.cat(dists)


def random_pairs(n_fake: int, n_real: int, seed: int) -> torch.Tensor:
    """For each fake index 0..n_fake-1 a random real index (with replacement), from a seeded generator."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, n_real, (n_fake,), generator=generator)


def ms_ssim_settings(size: int) -> dict | None:
    """torchmetrics' defaults when the images are large enough, else the small-image settings; None if too small."""
    for settings in (DEFAULT_MS_SSIM, SMALL_MS_SSIM):
        if size > (settings["kernel_size"] - 1) * 2 ** (len(settings["betas"]) - 1):
            return {"kernel_size": settings["kernel_size"], "betas": list(settings["betas"]),
                    "scales": len(settings["betas"]), "data_range": 1.0, "normalize": "relu"}
    return None


def _mean(values: torch.Tensor) -> float:
    return float(values.double().mean())


def paired_scores(fake: torch.Tensor, real: torch.Tensor, real_index: torch.Tensor,
                  batch_size: int = 64) -> dict[str, float | None]:
    """Mean SSIM, MS-SSIM and PSNR of fake[i] vs real[real_index[i]] (float images in [0, 1]).

    PSNR is averaged per pair (identical pairs give +inf, honestly). MS-SSIM is None when the
    images are too small for any setting (see `ms_ssim_settings`).
    """
    return {k: (_mean(v) if v is not None else None)
            for k, v in paired_score_values(fake, real, real_index, batch_size).items()}


@torch.inference_mode()
def paired_score_values(fake: torch.Tensor, real: torch.Tensor, real_index: torch.Tensor,
                        batch_size: int = 64) -> dict[str, torch.Tensor | None]:
    """Per-pair SSIM, MS-SSIM (None when too small) and PSNR values (for the bootstrap over fakes)."""
    size = fake.shape[-1]
    ssim = StructuralSimilarityIndexMeasure(data_range=1.0, reduction="none")
    psnr = PeakSignalNoiseRatio(data_range=1.0, reduction="none", dim=(1, 2, 3))
    ms_cfg = ms_ssim_settings(size)
    ms_ssim = None
    if ms_cfg is not None:
        ms_ssim = MultiScaleStructuralSimilarityIndexMeasure(
            data_range=1.0, kernel_size=ms_cfg["kernel_size"], betas=tuple(ms_cfg["betas"]), reduction="none",
            normalize="relu")
    values: dict[str, list[torch.Tensor]] = {"ssim": [], "ms_ssim": [], "psnr": []}
    for start in range(0, fake.shape[0], batch_size):
        f = fake[start:start + batch_size].float()
        r = real[real_index[start:start + batch_size]].float()
        values["ssim"].append(ssim(f, r).reshape(-1))
        values["psnr"].append(psnr(f, r).reshape(-1))
        if ms_ssim is not None:
            values["ms_ssim"].append(ms_ssim(f, r).reshape(-1))
        for metric in (ssim, psnr, ms_ssim):
            if metric is not None:
                metric.reset()
    return {
        "ssim": torch.cat(values["ssim"]),
        "ms_ssim": torch.cat(values["ms_ssim"]) if ms_ssim is not None else None,
        "psnr": torch.cat(values["psnr"]),
    }
