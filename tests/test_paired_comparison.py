"""Test-set accuracy intervals and the paired comparison (synthmed/evaluate/paired.py) on predictions with a known answer."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from synthmed.evaluate.paired import accuracy_interval, mcnemar_exact, paired_difference


def test_identical_predictions_differ_by_zero_with_an_interval_of_zero():
    right = np.random.default_rng(0).random(200) < 0.7
    diff = paired_difference(right, right.copy(), seed=3)
    assert diff.difference == 0 and diff.low == 0 and diff.high == 0  # the same images resampled for both
    assert (diff.a_only, diff.b_only, diff.mcnemar_p) == (0, 0, 1.0)
    assert "+0.0 points [95 % CI +0.0, +0.0]" == diff.text()


def test_one_model_right_on_20_more_images_is_a_positive_difference_with_small_mcnemar_p():
    rng = np.random.default_rng(1)
    b = rng.random(200) < 0.6
    a = b.copy()
    a[np.flatnonzero(~b)[:20]] = True  # A is right on 20 images where B is wrong, and equal elsewhere
    diff = paired_difference(a, b, seed=0)
    assert diff.difference == pytest.approx(10.0)  # 20 of 200 images = 10 points
    assert 0 < diff.low < 10 < diff.high
    assert (diff.a_only, diff.b_only) == (20, 0)
    assert diff.mcnemar_p == pytest.approx(2 * 0.5 ** 20)  # two-sided exact binomial, 20 of 20 discordant
    assert diff.mcnemar_p < 1e-5
    flipped = paired_difference(b, a, seed=0)
    assert flipped.difference == pytest.approx(-10.0) and flipped.high < 0
    assert flipped.text().startswith("−10.0 points [95 % CI −")


def test_balanced_disagreement_is_not_significant():
    a = np.array([1] * 10 + [0] * 10 + [1] * 80, dtype=bool)
    b = np.array([0] * 10 + [1] * 10 + [1] * 80, dtype=bool)
    diff = paired_difference(a, b, seed=0)
    assert diff.difference == 0 and diff.low < 0 < diff.high
    assert diff.mcnemar_p == pytest.approx(binomtest(10, 20, 0.5).pvalue) and diff.mcnemar_p == 1.0


def test_fold_averaged_correctness_uses_the_binary_vectors_given_for_mcnemar():
    a = np.array([1.0, 0.5, 0.5, 0.0])  # mean over two folds per image
    b = np.array([0.5, 0.5, 0.0, 0.0])
    diff = paired_difference(a, b, seed=0, binary_a=np.array([1, 1, 0, 0]), binary_b=np.array([0, 1, 0, 0]))
    assert diff.difference == pytest.approx(25.0)
    assert (diff.a_only, diff.b_only) == (1, 0) and diff.mcnemar_p == 1.0
    assert paired_difference(a, b, seed=0).mcnemar_p is None  # no binary vectors: no McNemar


def test_accuracy_interval_is_seeded_and_contains_the_accuracy():
    right = np.array([1] * 70 + [0] * 30)
    first, again = accuracy_interval(right, seed=5), accuracy_interval(right, seed=5)
    assert first == again and first.value == pytest.approx(70.0) and first.n == 100
    assert 60 < first.low < 70 < first.high < 80  # binomial sd at n=100, p=0.7 is 4.6 points
    assert accuracy_interval(np.ones(50)).text() == "100.00 [100.00, 100.00]"


def test_unpaired_vectors_are_refused():
    with pytest.raises(ValueError, match="equally long"):
        paired_difference(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="paired"):
        mcnemar_exact(np.ones(3), np.ones(4))
