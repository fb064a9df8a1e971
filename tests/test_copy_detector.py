"""Calibration of the copy detector (issue 12 item 1) on phantoms: copies flagged, new images not.

Cases, each a set of "fakes" audited against the same training set and held-out reference:
exact copies and lightly augmented copies (horizontal flip, 2-px shift, JPEG q75, small noise) of
training images must be flagged >= 0.9; Gaussian-blurred (sigma 1 and 2 px) held-out real images
and fresh phantoms of another seed (same distribution, never in training) <= 0.1. The flagged
fractions of both representations are printed (pytest -s) for the record.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from datamodules.phantom_generator import phantom_seed, render_batch
from synthmed.evaluate.copy_detector import copy_audit
from synthmed.evaluate.extractors import ClassifierExtractor, extract_features
from synthmed.evaluate.images import ImageSet
from synthmed.evaluate.results import find
from test_evaluate_cli import save_classifier_ckpt

SIZE = 32
COPY_CASES = ("exact copy", "flip", "shift 2 px", "JPEG q75", "noise sd 0.03")
NEW_CASES = ("blur sigma 1", "blur sigma 2", "fresh")


def phantom_set(seed: int, per_class: int, name: str) -> ImageSet:
    labels = [c for c in range(3) for _ in range(per_class)]
    seeds = [phantom_seed(seed, c, i) for c in range(3) for i in range(per_class)]
    images, _ = render_batch(labels, SIZE, seeds)
    return image_set(torch.from_numpy(images)[:, None], name, labels)


def image_set(images: torch.Tensor, name: str, labels: list[int]) -> ImageSet:
    """An in-memory ImageSet of uint8 N x 1 x S x S images (unique names and hashes)."""
    paths = [f"{name}/{i}.png" for i in range(images.shape[0])]
    return ImageSet(root=__import__("pathlib").Path(name), images=images.contiguous(), paths=paths, labels=labels,
                    class_names=["benign", "malignant", "normal"][:max(labels) + 1] if min(labels) >= 0 else [],
                    sha256=[f"{name}-{i}" for i in range(images.shape[0])])


def _apply(images: torch.Tensor, fn) -> torch.Tensor:
    return torch.from_numpy(np.stack([fn(x[0].numpy())[None] for x in images]).astype(np.uint8))


def _jpeg(x: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(x).save(buffer, format="JPEG", quality=75)
    return np.asarray(Image.open(buffer))


def _shift(x: np.ndarray) -> np.ndarray:
    return ndimage.shift(x.astype(np.float32), (2, 2), order=0, mode="nearest").round()


def _noise(rng: np.random.Generator):
    return lambda x: np.clip(x + rng.normal(0, 0.03 * 255, x.shape), 0, 255).round()


def _blur(sigma: float):
    return lambda x: ndimage.gaussian_filter(x.astype(np.float32), sigma).round()


def cases(train: ImageSet, heldout: ImageSet, fresh: ImageSet, n_copies: int) -> dict[str, ImageSet]:
    """The eight audited sets: five kinds of copies of training images, blurred held-out images, fresh images."""
    rng = np.random.default_rng(0)
    pick = torch.from_numpy(np.sort(rng.choice(len(train), n_copies, replace=False)))
    src, labels = train.images[pick], [train.labels[i] for i in pick.tolist()]
    sets = {"exact copy": src.clone(), "flip": src.flip(-1), "shift 2 px": _apply(src, _shift),
            "JPEG q75": _apply(src, _jpeg), "noise sd 0.03": _apply(src, _noise(rng))}
    out = {name: image_set(images, name, labels) for name, images in sets.items()}
    for sigma in (1, 2):
        out[f"blur sigma {sigma}"] = image_set(_apply(heldout.images, _blur(sigma)), f"blur{sigma}", heldout.labels)
    out["fresh"] = fresh
    return out


def flagged_fractions(extractor, train: ImageSet, reference: ImageSet, audited: dict[str, ImageSet],
                      tmp_path) -> dict[str, dict[str, float]]:
    """{case: {representation: flagged share, "c_t[...]": C_T}} from the detector `synthmed evaluate` runs."""
    feats = {"train": extract_features(extractor, train.images), "real": extract_features(extractor, reference.images)}
    out = {}
    for name, fake in audited.items():
        results, _ = copy_audit(fake, reference, train, {**feats, "fake": extract_features(extractor, fake.images)},
                                extractor.name, tmp_path / name.replace(" ", "_"), rounds=0, seed=0)
        row = {}
        for space in ("pixel-highpass", extractor.name):
            row[space] = find(results, "near_copy_fraction", space).value
            row[f"c_t[{space}]"] = find(results, "data_copying_z", space).value
        out[name] = row
    return out


def print_table(title: str, fractions: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}: flagged fraction (pixel-highpass / features), C_T (pixel-highpass / features)")
    for name, row in fractions.items():
        values = list(row.values())
        print(f"  {name:14s} {values[0]:.3f} / {values[2]:.3f}   C_T {values[1]:+.2f} / {values[3]:+.2f}")


def assert_calibrated(fractions: dict[str, dict[str, float]]) -> None:
    for name in COPY_CASES:
        assert fractions[name]["pixel-highpass"] >= 0.9, (name, fractions[name])
        assert fractions[name]["c_t[pixel-highpass]"] < -2, (name, fractions[name])  # data copying
    for name in NEW_CASES:
        assert fractions[name]["pixel-highpass"] <= 0.1, (name, fractions[name])
    for name in ("blur sigma 1", "blur sigma 2"):
        assert fractions[name]["c_t[pixel-highpass]"] > 2, (name, fractions[name])  # farther: underfitting, not copying
    # the features (a random ResNet here) are neither flip/shift invariant nor noise robust: exact copies only
    assert list(fractions["exact copy"].values())[2] >= 0.9, fractions["exact copy"]
    assert abs(fractions["fresh"]["c_t[pixel-highpass]"]) < 2  # as close as new real images


@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
    return ClassifierExtractor(save_classifier_ckpt(tmp_path_factory.mktemp("clf") / "clf.ckpt", size=SIZE)).eval()


def test_copy_detector_is_calibrated_on_phantoms(extractor, tmp_path):
    train, reference = phantom_set(0, 30, "train"), phantom_set(1, 30, "reference")
    heldout, fresh = phantom_set(3, 10, "heldout"), phantom_set(2, 10, "fresh")
    fractions = flagged_fractions(extractor, train, reference, cases(train, heldout, fresh, 30), tmp_path)
    print_table("phantoms 32 px (train 90, held-out reference 90, 30 per case)", fractions)
    assert_calibrated(fractions)


def test_c_t_matches_the_paper_formula_with_scipy_u():
    """One cell: C_T = (U - mn/2) / sqrt(mn(m+n+1)/12) with scipy's Mann-Whitney U; copies give C_T << 0."""
    import math

    from synthmed.evaluate.data_copying import CellComparisons, scipy_u

    g = torch.Generator().manual_seed(0)
    d_held = torch.rand(40, 15, generator=g, dtype=torch.float64) + 0.5
    d_fake = torch.rand(25, 15, generator=g, dtype=torch.float64) + 0.45
    one_cell = np.zeros(15, dtype=int)
    stat = CellComparisons(d_held, d_fake, one_cell, np.zeros(40, dtype=int), np.zeros(25, dtype=int)).statistic()
    u = scipy_u(d_fake.min(dim=1).values, d_held.min(dim=1).values)
    assert stat["c_t"] == pytest.approx((u - 25 * 40 / 2) / math.sqrt(25 * 40 * 66 / 12))
    copies = CellComparisons(d_held, d_fake * 0, one_cell, np.zeros(40, dtype=int), np.zeros(25, dtype=int))
    assert copies.statistic()["c_t"] == pytest.approx(-25 * 40 / 2 / math.sqrt(25 * 40 * 66 / 12))
