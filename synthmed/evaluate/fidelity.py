"""FID and KID on features computed once by a named extractor, with sample-size honesty.

FID: torchmetrics' `FrechetInceptionDistance` computes the number (it is given an identity
feature module, `PrecomputedFeatures`; feeding it the extractor itself gives the same number,
tested). With fewer images than feature dimensions in either set the covariance estimate is
rank-deficient and FID's O(D/n) bias dominates, so the result is marked unreliable with that
reason (the value is kept in evaluation.json but never printed). Its bootstrap interval (only for
reliable FID) re-evaluates the Fréchet distance on resampled means / covariances; each round
costs two D x D eigendecompositions, so FID uses at most FID_MAX_ROUNDS rounds.

KID: the unbiased estimate of MMD^2 with torchmetrics' polynomial kernel (degree 3, gamma 1/D,
coef 1) on the *whole* sets — the small-sample number. torchmetrics' `KernelInceptionDistance`
averages the same estimator over random subsets; with one subset equal to the whole set both give
the same value (tested). The whole-set form is written here because the bootstrap needs it on a
precomputed kernel matrix with resampling counts: an image is never paired with its own duplicate
(the unbiased estimator leaves out i == j pairs, and the bootstrap leaves out pairs of copies).
"""

from __future__ import annotations

import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import poly_kernel

from synthmed.evaluate import bootstrap
from synthmed.evaluate.extractors import PrecomputedFeatures
from synthmed.evaluate.results import MetricResult
from synthmed.evaluate.runtime import single_thread

FID_MAX_ROUNDS = 50
FID_DEFINITION = "Fréchet distance between Gaussian fits of real and fake features (torchmetrics)"
KID_DEFINITION = ("kernel inception distance: unbiased MMD^2, polynomial kernel degree 3, gamma 1/D, coef 1, on "
                  "the whole sets (unbiased at any n: the small-sample number)")


def _check(real: torch.Tensor, fake: torch.Tensor) -> None:
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature matrices must be N x D with the same D; got {tuple(real.shape)} and "
                         f"{tuple(fake.shape)}")
    if real.shape[0] < 2 or fake.shape[0] < 2:
        raise ValueError(f"FID/KID need at least 2 images per set; got {real.shape[0]} real and "
                         f"{fake.shape[0]} fake")


@single_thread()
def fid_from_features(real: torch.Tensor, fake: torch.Tensor, batch_size: int = 1024) -> float:
    """Fréchet distance between Gaussians fitted to N x D real and M x D fake features (torchmetrics)."""
    _check(real, fake)
    metric = FrechetInceptionDistance(feature=PrecomputedFeatures(real.shape[1]), reset_real_features=True)
    for start in range(0, real.shape[0], batch_size):
        metric.update(real[start:start + batch_size].double(), real=True)
    for start in range(0, fake.shape[0], batch_size):
        metric.update(fake[start:start + batch_size].double(), real=False)
    return float(metric.compute())


def _weighted_moments(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = w.sum()
    mu = w @ x / n
    centred = x - mu
    return mu, (centred.T * w) @ centred / (n - 1)


def _psd_sqrt(s: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(s)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_from_counts(real: torch.Tensor, fake: torch.Tensor, real_w: torch.Tensor, fake_w: torch.Tensor) -> float:
    """FID of a bootstrap round (features float64, counts as weights); tr sqrt(S1 S2) via symmetric eigh."""
    mu1, s1 = _weighted_moments(real, real_w)
    mu2, s2 = _weighted_moments(fake, fake_w)
    root = _psd_sqrt(s1)
    trace_sqrt = torch.linalg.eigvalsh(root @ s2 @ root).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * trace_sqrt)


@single_thread()
def fid_result(real: torch.Tensor, fake: torch.Tensor, space: str, rounds: int, seed: int,
               class_name: str | None = None) -> MetricResult:
    """FID with n, reliability (n >= D in both sets) and, when reliable, a bootstrap interval."""
    _check(real, fake)
    n_real, n_fake, dims = real.shape[0], fake.shape[0], real.shape[1]
    value = fid_from_features(real, fake)
    common = dict(name="fid", space=space, value=value, n_real=n_real, n_fake=n_fake, higher_is_better=False,
                  class_name=class_name, definition=FID_DEFINITION, extra={"feature_dims": dims})
    if min(n_real, n_fake) < dims:
        reason = (f"unreliable: {min(n_real, n_fake)} images < {dims} feature dimensions (n_real {n_real}, "
                  f"n_fake {n_fake}): the covariance is rank-deficient and FID is biased by O(D/n); read KID")
        return MetricResult(**common, reliable=False, reason=reason)
    r64, f64 = real.double(), fake.double()
    fid_rounds = min(rounds, FID_MAX_ROUNDS)
    ci = bootstrap.replicate(lambda rw, fw: frechet_from_counts(r64, f64, rw, fw), n_real, n_fake, fid_rounds,
                             seed, salt=1)
    common["extra"]["bootstrap_rounds"] = fid_rounds
    return MetricResult(**common, interval=ci)


def _kernels(real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r, f = real.double(), fake.double()
    return poly_kernel(r, r), poly_kernel(f, f), poly_kernel(r, f)


def _within(k: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Mean kernel over ordered pairs of distinct draws that are not copies of one image."""
    pairs = w.sum() ** 2 - (w * w).sum()
    return (w @ k @ w - (w * w * k.diagonal()).sum()) / pairs


def mmd2_from_counts(k_rr: torch.Tensor, k_ff: torch.Tensor, k_rf: torch.Tensor, real_w: torch.Tensor,
                     fake_w: torch.Tensor) -> float:
    """Unbiased MMD^2 of weighted sets (all weights 1: the textbook estimator)."""
    cross = real_w @ k_rf @ fake_w / (real_w.sum() * fake_w.sum())
    return float(_within(k_rr, real_w) + _within(k_ff, fake_w) - 2 * cross)


@single_thread()
def kid_from_features(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Whole-set unbiased KID (see the module docstring)."""
    _check(real, fake)
    k_rr, k_ff, k_rf = _kernels(real, fake)
    return mmd2_from_counts(k_rr, k_ff, k_rf, torch.ones(real.shape[0], dtype=torch.float64),
                            torch.ones(fake.shape[0], dtype=torch.float64))


@single_thread()
def kid_result(real: torch.Tensor, fake: torch.Tensor, space: str, rounds: int, seed: int,
               class_name: str | None = None) -> MetricResult:
    """KID with n and a bootstrap interval (resampling both sets; copies never paired with each other)."""
    _check(real, fake)
    k_rr, k_ff, k_rf = _kernels(real, fake)
    ones_r = torch.ones(real.shape[0], dtype=torch.float64)
    ones_f = torch.ones(fake.shape[0], dtype=torch.float64)
    value = mmd2_from_counts(k_rr, k_ff, k_rf, ones_r, ones_f)
    ci = bootstrap.replicate(lambda rw, fw: mmd2_from_counts(k_rr, k_ff, k_rf, rw, fw), real.shape[0],
                             fake.shape[0], rounds, seed, salt=2)
    return MetricResult(name="kid", space=space, value=value, n_real=real.shape[0], n_fake=fake.shape[0],
                        higher_is_better=False, interval=ci, class_name=class_name, definition=KID_DEFINITION,
                        extra={"kernel": "polynomial, degree 3, gamma 1/D, coef 1 (torchmetrics poly_kernel)",
                               "bootstrap_rounds": rounds})
