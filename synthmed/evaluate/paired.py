"""Classifier accuracy on a test set with a 95 % interval, and two classifiers compared on the same test images.

Inputs are per-image correctness vectors over one test set: 1/0 for one run, or the mean over
cross-validation folds (every fold is tested on the same images, so the mean over images of the
fold-averaged correctness is the mean of the folds' test accuracies).

- `accuracy_interval`: seeded percentile bootstrap over test images.
- `paired_difference`: A − B in points with a paired bootstrap interval (the same resampled images
  for both, so image difficulty cancels).
- `mcnemar_exact`: McNemar's exact test on binary correctness (the discordant images only; two-sided
  binomial test with p = 1/2, scipy.stats.binomtest).

The bootstrap is a few lines of numpy on a precomputed vector (the images are not re-classified);
scipy.stats.bootstrap would do the same but cannot share one set of resampled images between the
interval of A − B and the seed-stable draws used elsewhere, so it is written here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest  # scipy comes with scikit-learn, a synthmed dependency

ROUNDS = 2000
LEVEL = 0.95


def _draws(n: int, rounds: int, seed: int) -> np.ndarray:
    """rounds x n image indices drawn with replacement (seeded)."""
    return np.random.default_rng(seed).integers(0, n, size=(rounds, n))


def _percentile(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    lo, hi = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class AccuracyInterval:
    """Accuracy in points (percent) on n test images, with its bootstrap 95 % interval."""

    value: float
    low: float
    high: float
    n: int
    rounds: int

    def text(self) -> str:
        return f"{self.value:.2f} [{self.low:.2f}, {self.high:.2f}]"


def accuracy_interval(correct: np.ndarray, rounds: int = ROUNDS, seed: int = 0) -> AccuracyInterval:
    """Mean per-image correctness x 100 and its percentile bootstrap interval over images."""
    c = np.asarray(correct, dtype=np.float64)
    if c.size == 0:
        raise ValueError("no test images")
    means = c[_draws(c.size, rounds, seed)].mean(axis=1) * 100
    return AccuracyInterval(float(c.mean() * 100), *_percentile(means), n=int(c.size), rounds=rounds)


@dataclass(frozen=True)
class PairedDifference:
    """A − B accuracy in points on the same n test images, paired bootstrap 95 % interval, McNemar's exact p."""

    difference: float
    low: float
    high: float
    n: int
    rounds: int
    a_only: int | None = None  # images only A classified correctly (McNemar's discordant pairs)
    b_only: int | None = None
    mcnemar_p: float | None = None

    def text(self) -> str:
        return f"{self.difference:+.1f} points [95 % CI {self.low:+.1f}, {self.high:+.1f}]".replace("-", "−")


def paired_difference(correct_a: np.ndarray, correct_b: np.ndarray, rounds: int = ROUNDS, seed: int = 0,
                      binary_a: np.ndarray | None = None, binary_b: np.ndarray | None = None) -> PairedDifference:
    """(mean(A) − mean(B)) x 100 with a paired bootstrap interval; McNemar on binary_a/b (default: A and B
    themselves when they are 0/1)."""
    a, b = np.asarray(correct_a, dtype=np.float64), np.asarray(correct_b, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired comparison needs two equally long non-empty vectors, got {a.shape} and {b.shape}")
    d = a - b
    means = d[_draws(d.size, rounds, seed)].mean(axis=1) * 100
    lo, hi = _percentile(means)
    if binary_a is None and binary_b is None and np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all():
        binary_a, binary_b = a, b
    mc = mcnemar_exact(binary_a, binary_b) if binary_a is not None and binary_b is not None else (None, None, None)
    return PairedDifference(float(d.mean() * 100), lo, hi, int(d.size), rounds, *mc)


def mcnemar_exact(right_a: np.ndarray, right_b: np.ndarray) -> tuple[int, int, float]:
    """(#images only A got right, #only B got right, two-sided exact McNemar p); p = 1 with no discordant image."""
    a, b = np.asarray(right_a).astype(bool), np.asarray(right_b).astype(bool)
    if a.shape != b.shape:
        raise ValueError(f"McNemar needs paired vectors, got {a.shape} and {b.shape}")
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    if a_only + b_only == 0:
        return a_only, b_only, 1.0
    return a_only, b_only, float(binomtest(a_only, a_only + b_only, 0.5).pvalue)
