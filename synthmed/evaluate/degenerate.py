"""Degenerate samples: fakes that are near-constant or saturated (seed 002's "completely white images").

An image (in [0, 1]) is *near-constant* when its pixel standard deviation is below
CONSTANT_STD, and *saturated* when at least SATURATED_SHARE of its pixels sit at the extremes
(<= 1/255 or >= 254/255). The same share of the real images is reported beside it, because
some modalities have large black backgrounds.
"""

from __future__ import annotations

import torch

from synthmed.evaluate import bootstrap
from synthmed.evaluate.results import MetricResult

CONSTANT_STD = 0.02
SATURATED_SHARE = 0.9
DEFINITION = (f"share of fakes that are near-constant (pixel std < {CONSTANT_STD:g} in [0, 1]) or saturated "
              f"(>= {SATURATED_SHARE:.0%} of pixels at 0 or 1)")


def degenerate_mask(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(near_constant, saturated) bool per image of uint8 N x C x H x W."""
    x = images.float().flatten(1) / 255.0
    near_constant = x.std(dim=1) < CONSTANT_STD
    extreme = ((x <= 1 / 255) | (x >= 254 / 255)).float().mean(dim=1)
    return near_constant, extreme >= SATURATED_SHARE


def degenerate_result(fake: torch.Tensor, real: torch.Tensor, rounds: int, seed: int,
                      class_name: str | None = None) -> MetricResult:
    if fake.shape[0] == 0:
        from synthmed.evaluate.results import not_computed

        return not_computed("degenerate_fraction", "", "no fake images", n_real=int(real.shape[0]), n_fake=0,
                            higher_is_better=False, class_name=class_name, definition=DEFINITION)
    constant, saturated = degenerate_mask(fake)
    bad = (constant | saturated).double()
    real_constant, real_saturated = degenerate_mask(real)
    return MetricResult(
        name="degenerate_fraction", space="", value=float(bad.mean()), n_real=int(real.shape[0]),
        n_fake=int(fake.shape[0]), higher_is_better=False,
        interval=bootstrap.mean_interval(bad, rounds, seed, salt=21), class_name=class_name, definition=DEFINITION,
        extra={"near_constant": int(constant.sum()), "saturated": int(saturated.sum()),
               "real_fraction": float((real_constant | real_saturated).double().mean()), "bootstrap_rounds": rounds})
