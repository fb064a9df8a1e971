"""Distances to the training set in which blur and noise do not look like closeness.

`pixel-highpass`: each image is made gray, standardised per image (zero mean, unit std over its
pixels: brightness and contrast do not count), larger images are area-downsampled to at most
HIGHPASS_MAX_SIZE px, and the fine detail is kept by subtracting a Gaussian blur (sigma
HIGHPASS_SIGMA px, torchvision). Two images a, b (central crops) are compared by

    d(a, b) = sqrt(|a| / |b| + |b| / |a| - 2 cos(a, b))   (= |a - b| / sqrt(|a| |b|))

minimised over shifts of up to MAX_SHIFT px and a horizontal flip of the query. A copy (also
flipped, shifted by 2 px, JPEG-compressed or with a little noise) keeps its fine detail (speckle,
texture) and scores near 0; a new image of the same distribution has unrelated detail (d ~ 1.2 on
phantoms). Blur removes detail energy, so |a| / |b| grows and a blurred image moves *away* from
every training image, instead of towards the blurry average as in plain RMS pixel distance.

`features`: Euclidean distance between the named extractor's features.

Hand-written: no library computes shift- and flip-searched detail distances between image sets.
Cost: (fakes x train) pairs x (2 MAX_SHIFT + 1)^2 x 2 crops as matrix products (300 x 180 at 32 px:
about 0.4 s on one CPU thread).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms.v2.functional import gaussian_blur

HIGHPASS_SIGMA = 1.5
HIGHPASS_MAX_SIZE = 64
MAX_SHIFT = 3
PIXEL_SPACE = "pixel-highpass"
PIXEL_DESCRIPTION = (f"gray, standardised per image, high-pass (image minus Gaussian blur sigma {HIGHPASS_SIGMA:g} px, "
                     f"at <= {HIGHPASS_MAX_SIZE} px); distance ‖a - b‖ / sqrt(‖a‖ ‖b‖), minimised over shifts "
                     f"<= {MAX_SHIFT} px and a horizontal flip")


def highpass(images: torch.Tensor) -> torch.Tensor:
    """uint8 / float N x C x S x S -> float64 N x S' x S' fine-detail images (see the module docstring)."""
    x = images.float()
    x = x.mean(dim=1, keepdim=True)
    if x.shape[-1] > HIGHPASS_MAX_SIZE:
        x = F.interpolate(x, size=(HIGHPASS_MAX_SIZE, HIGHPASS_MAX_SIZE), mode="area")
    x = (x - x.mean(dim=(2, 3), keepdim=True)) / x.std(dim=(2, 3), keepdim=True).clamp_min(1e-3)
    size = 2 * int(3 * HIGHPASS_SIGMA) + 1
    detail = x - gaussian_blur(x, [size, size], [HIGHPASS_SIGMA, HIGHPASS_SIGMA])
    return detail[:, 0].double()


def _shift(size: int) -> int:
    return max(0, min(MAX_SHIFT, size // 8))


def pixel_distances(query: torch.Tensor, train: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Q x N matrix of min-over-shift-and-flip detail distances of high-passed images (`highpass`)."""
    size = query.shape[-1]
    r = _shift(size)
    centre = train[:, r:size - r, r:size - r].flatten(1)
    centre_sq = centre.square().sum(dim=1)
    out = []
    for start in range(0, query.shape[0], chunk):
        q = query[start:start + chunk]
        best = None
        for image in (q, q.flip(-1)):
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    crop = image[:, r + dy:size - r + dy, r + dx:size - r + dx].flatten(1)
                    crop_sq = crop.square().sum(dim=1)
                    # |a - b|^2 / (|a| |b|)
                    d2 = (crop_sq[:, None] + centre_sq[None, :] - 2 * crop @ centre.T)
                    d2 = d2 / (crop_sq[:, None] * centre_sq[None, :]).sqrt().clamp_min(1e-12)
                    best = d2 if best is None else torch.minimum(best, d2)
        out.append(best.clamp_min(0).sqrt())
    return torch.cat(out)


def feature_distances(query: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """Q x N Euclidean distances between feature rows."""
    return torch.cdist(query.double(), train.double())
