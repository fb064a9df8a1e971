"""Known-answer tests of the evaluation metrics on tiny tensors (no CLI, no files)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import linalg
from torchmetrics.image.fid import FrechetInceptionDistance

from synthmed.evaluate.extractors import PrecomputedFeatures
from synthmed.evaluate.copy_detector import conformal_p, summary
from synthmed.evaluate.fidelity import fid_from_features, kid_from_features
from synthmed.evaluate.manifold import knn_radii, per_image_indicators, precision_recall_density_coverage
from synthmed.evaluate.similarity import ms_ssim_settings, nearest, paired_scores, random_pairs


def gaussian(n: int, d: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * scale + shift


# ------------------------------------------------------------------------------------------ FID / KID
def reference_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula with scipy's matrix square root (as in the original TTUR code)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_matches_torchmetrics_and_the_textbook_formula():
    real, fake = gaussian(200, 8, 0), gaussian(150, 8, 1, shift=0.5, scale=1.3)
    ours = fid_from_features(real, fake)
    metric = FrechetInceptionDistance(feature=PrecomputedFeatures(8))
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    assert ours == pytest.approx(float(metric.compute()), rel=1e-6)
    assert ours == pytest.approx(reference_fid(real.double().numpy(), fake.double().numpy()), rel=1e-5)
    assert ours > 1.0  # shifted by 0.5 in 8 dims: ||mu||^2 alone is ~2


def test_fid_of_a_set_against_itself_is_zero_even_when_rank_deficient():
    for n, d in ((100, 8), (30, 64)):  # second: fewer samples than dimensions (singular covariance)
        x = gaussian(n, d, 3)
        scale = float(torch.cov(x.T.double()).trace())
        assert abs(fid_from_features(x, x)) < 1e-3 * scale


def test_kid_is_about_zero_for_one_distribution_and_positive_for_two():
    real = gaussian(120, 8, 0)
    same, other = gaussian(120, 8, 1), gaussian(120, 8, 2, shift=1.0)
    assert abs(kid_from_features(real, same)) < 0.05 < kid_from_features(real, other)
    assert kid_from_features(real, other) == kid_from_features(real, other)  # no randomness left


def test_fid_refuses_single_images_and_mismatched_dims():
    with pytest.raises(ValueError, match="at least 2 images"):
        fid_from_features(gaussian(1, 4, 0), gaussian(5, 4, 1))
    with pytest.raises(ValueError, match="same D"):
        fid_from_features(gaussian(5, 4, 0), gaussian(5, 3, 1))


# ------------------------------------------------------------------------------------------ k-NN manifolds
def brute_force_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Naeem et al. / Kynkäänniemi et al. written as literal loops."""
    def dist(a, b):
        return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))

    def radius(points, i):
        return sorted(dist(points[i], points[j]) for j in range(len(points)) if j != i)[k - 1]

    r_real = [radius(real, i) for i in range(len(real))]
    r_fake = [radius(fake, j) for j in range(len(fake))]
    precision = np.mean([any(dist(f, real[i]) < r_real[i] for i in range(len(real))) for f in fake])
    recall = np.mean([any(dist(r, fake[j]) < r_fake[j] for j in range(len(fake))) for r in real])
    density = sum(dist(f, real[i]) < r_real[i] for f in fake for i in range(len(real))) / (k * len(fake))
    coverage = np.mean([any(dist(real[i], f) < r_real[i] for f in fake) for i in range(len(real))])
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


@pytest.mark.parametrize("k", [1, 3])
def test_manifold_metrics_match_a_brute_force_reference(k):
    real = gaussian(14, 3, 0).numpy()
    fake = gaussian(11, 3, 1, shift=0.6, scale=0.8).numpy()
    ours = precision_recall_density_coverage(torch.from_numpy(real), torch.from_numpy(fake), k=k, chunk=4)
    expected = brute_force_prdc(real.astype(np.float64), fake.astype(np.float64), k)
    for key in expected:
        assert ours[key] == pytest.approx(expected[key], abs=1e-12), key
    terms = per_image_indicators(torch.from_numpy(real), torch.from_numpy(fake), k=k)  # what the intervals resample
    for key in expected:
        assert float(terms[key].mean()) == pytest.approx(expected[key], abs=1e-12), key
    assert 0 < ours["precision"] < 1 and 0 < ours["coverage"] < 1  # a non-trivial example


def test_manifold_metrics_on_identical_and_disjoint_sets():
    x = gaussian(60, 5, 0)
    same = precision_recall_density_coverage(x, x.clone(), k=5)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert same["density"] == pytest.approx(1.0)  # each real ball holds itself + its k-1 nearer neighbours
    far = precision_recall_density_coverage(x, x + 100.0, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_knn_radii_excludes_the_point_itself_and_needs_more_than_k_points():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    assert knn_radii(x, k=1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert knn_radii(x, k=2).tolist() == [3.0, 2.0, 3.0, 6.0]
    with pytest.raises(ValueError, match="more than 4 samples"):
        knn_radii(x, k=4)


# ------------------------------------------------------------------------------------------ pixel metrics
def images(n: int, seed: int, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def test_identical_pairs_give_ssim_one_and_infinite_psnr():
    x = images(6, 0)
    scores = paired_scores(x, x.clone(), torch.arange(6))
    assert scores["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert scores["ms_ssim"] == pytest.approx(1.0, abs=1e-6)
    assert scores["psnr"] == math.inf


def test_nearest_real_finds_the_copy_and_random_pairs_are_seeded():
    real = images(10, 0)
    fake = real[[7, 2, 2]] + 0.001
    idx, dist = nearest(fake, real)
    assert idx.tolist() == [7, 2, 2] and float(dist.max()) == pytest.approx(0.001, rel=1e-4)
    assert torch.equal(random_pairs(20, 10, seed=3), random_pairs(20, 10, seed=3))
    assert not torch.equal(random_pairs(20, 10, seed=3), random_pairs(20, 10, seed=4))
    noise = images(3, 9)
    assert paired_scores(noise, real, nearest(noise, real)[0])["ssim"] < 0.2


def test_ms_ssim_settings_follow_the_image_size():
    assert ms_ssim_settings(256)["kernel_size"] == 11 and ms_ssim_settings(256)["scales"] == 5
    small = ms_ssim_settings(64)
    assert small["kernel_size"] == 3 and small["betas"] == [0.2, 0.3, 0.5]
    assert ms_ssim_settings(8) is None


# ------------------------------------------------------------------------------------------ copy audit helpers
def test_conformal_p_and_summary():
    held = torch.arange(1, 20, dtype=torch.float64)  # 19 held-out distances 1..19
    p = conformal_p(torch.tensor([0.5, 1.0, 10.0, 100.0], dtype=torch.float64), held)
    assert p.tolist() == pytest.approx([1 / 20, 2 / 20, 11 / 20, 1.0])
    s = summary(torch.arange(101, dtype=torch.float64))
    assert (s["min"], s["p5"], s["median"], s["max"], s["n"]) == (0.0, 5.0, 50.0, 100.0, 101)


def test_brute_force_reference_itself_is_sane():
    # guard against a reference that agrees with anything: two far clusters give all zeros
    real = np.array(list(itertools.product([0.0, 1.0], repeat=2)) + [[0.5, 0.5]])
    fake = real + 50.0
    assert brute_force_prdc(real, fake, 2) == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
