"""The procedural ultrasound phantoms: determinism, masks, and class semantics measured on pixels."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage.measure import regionprops

from datamodules.phantom_generator import (
    BENIGN, CLASS_NAMES, MALIGNANT, NORMAL, phantom_seed, render_batch, render_phantom, write_phantom_tree,
)
from synthmed import make_phantoms

N_STATS = 40  # phantoms per class for the class-level statistics (~0.3 s per class at 64 px)


def lesion_stats(image: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Pixel measurements of one lesion: contrast, posterior column, margin irregularity, shape."""
    img, m = image.astype(float), mask.astype(bool)
    size = img.shape[0]
    ys, xs = np.nonzero(m)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    w = x1 - x0 + 1
    ring = ndimage.binary_dilation(m, iterations=max(2, size // 16)) & ~m
    ring[y1 + 1:, x0:x1 + 1] = False  # the column below is the posterior feature, not "surrounding"
    depth = max(2, int(0.15 * size))
    below = img[y1 + 1:y1 + 1 + depth, x0 + w // 4:x1 - w // 4 + 1]
    beside = np.concatenate([img[y1 + 1:y1 + 1 + depth, max(0, x0 - w):x0].ravel(),
                             img[y1 + 1:y1 + 1 + depth, x1 + 1:x1 + 1 + w].ravel()])
    region = regionprops(m.astype(int))[0]
    return {
        "contrast": img[m].mean() / img[ring].mean(),
        "posterior": below.mean() / beside.mean(),
        "irregularity": region.perimeter ** 2 / (4 * np.pi * region.area),
        "height_over_width": (y1 - y0 + 1) / w,
        "area_fraction": m.mean(),
    }


@pytest.fixture(scope="module")
def class_stats() -> dict[int, dict[str, np.ndarray]]:
    out = {}
    for label in (BENIGN, MALIGNANT):
        rows = [lesion_stats(*render_phantom(label, 64, seed)) for seed in range(N_STATS)]
        out[label] = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    return out


def test_class_names_sorted_like_an_image_folder():
    assert list(CLASS_NAMES) == sorted(CLASS_NAMES) == ["benign", "malignant", "normal"]


@pytest.mark.parametrize("label", [BENIGN, MALIGNANT, NORMAL])
def test_deterministic_and_seed_dependent(label):
    a_img, a_mask = render_phantom(label, 64, 7)
    b_img, b_mask = render_phantom(label, 64, 7)
    assert a_img.dtype == np.uint8 and a_img.shape == (64, 64) and a_mask.shape == (64, 64)
    assert a_img.tobytes() == b_img.tobytes() and a_mask.tobytes() == b_mask.tobytes()
    c_img, _ = render_phantom(label, 64, 8)
    assert np.abs(a_img.astype(int) - c_img.astype(int)).mean() > 5


def test_mask_empty_iff_normal_and_binary():
    for seed in range(20):
        for label in (BENIGN, MALIGNANT, NORMAL):
            _, mask = render_phantom(label, 64, seed)
            assert set(np.unique(mask)) <= {0, 1}
            assert (mask.sum() == 0) == (label == NORMAL), (label, seed)


def test_mask_area_in_range(class_stats):
    for label in (BENIGN, MALIGNANT):
        area = class_stats[label]["area_fraction"]
        assert area.min() > 0.01 and area.max() < 0.15, (CLASS_NAMES[label], area.min(), area.max())


def test_lesions_are_hypoechoic(class_stats):
    for label in (BENIGN, MALIGNANT):
        contrast = class_stats[label]["contrast"]
        assert contrast.mean() < 0.7 and (contrast < 1.0).all(), (CLASS_NAMES[label], contrast.mean())


def test_posterior_enhancement_benign_shadowing_malignant(class_stats):
    benign, malignant = class_stats[BENIGN]["posterior"], class_stats[MALIGNANT]["posterior"]
    assert benign.mean() > 1.1 and (benign > 1.0).mean() > 0.85
    assert malignant.mean() < 0.8 and (malignant < 1.0).mean() > 0.85


def test_malignant_margin_irregular_and_taller(class_stats):
    benign, malignant = class_stats[BENIGN], class_stats[MALIGNANT]
    assert malignant["irregularity"].mean() > 2.0 * benign["irregularity"].mean()
    assert benign["height_over_width"].mean() < 0.8  # wider than tall
    assert malignant["height_over_width"].mean() > 0.95  # taller-than-wide tendency


def test_malignant_interior_more_heterogeneous():
    def interior_cv(label):
        cvs = []
        for seed in range(N_STATS):
            img, mask = render_phantom(label, 128, seed)
            core = ndimage.binary_erosion(mask.astype(bool), iterations=3)
            vals = img[core].astype(float)
            cvs.append(ndimage.uniform_filter(img.astype(float), 5)[core].std() / (vals.mean() + 1))
        return np.mean(cvs)

    assert interior_cv(MALIGNANT) > 1.3 * interior_cv(BENIGN)


@pytest.mark.parametrize("size", [32, 128])
def test_other_resolutions_same_scene(size):
    for label in (BENIGN, MALIGNANT):
        img, mask = render_phantom(label, size, 3)
        assert img.shape == mask.shape == (size, size)
        ref = render_phantom(label, 64, 3)[1].astype(bool)
        resized = np.asarray(Image.fromarray(mask * 255).resize((64, 64), Image.NEAREST)) > 127
        iou = (resized & ref).sum() / (resized | ref).sum()
        assert iou > 0.6, (size, label, iou)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="size=8 must be >= 16"):
        render_phantom(BENIGN, 8, 0)
    with pytest.raises(ValueError, match="label=5"):
        render_phantom(5, 64, 0)


def test_render_batch_matches_single():
    imgs, masks = render_batch([0, 1, 2], 32, [4, 5, 6])
    assert imgs.shape == masks.shape == (3, 32, 32)
    assert imgs[1].tobytes() == render_phantom(1, 32, 5)[0].tobytes()


def test_tree_writer_layout_and_refusal(tmp_path):
    out = write_phantom_tree(tmp_path / "tree", per_class=2, size=32, seed=1)
    for label, cls in enumerate(CLASS_NAMES):
        names = sorted(p.name for p in (out / cls).iterdir())
        assert names == [f"{cls}_00000.png", f"{cls}_00001.png"]  # only images: masks go to tree_masks/
        masks = tmp_path / "tree_masks" / cls
        assert sorted(p.name for p in masks.iterdir()) == [f"{cls}_00000_mask.png", f"{cls}_00001_mask.png"]
        image = np.asarray(Image.open(out / cls / f"{cls}_00001.png"))
        mask = np.asarray(Image.open(masks / f"{cls}_00001_mask.png"))
        want_img, want_mask = render_phantom(label, 32, phantom_seed(1, label, 1))
        assert np.array_equal(image, want_img) and np.array_equal(mask, want_mask * 255)
    before = (out / "benign" / "benign_00000.png").read_bytes()
    with pytest.raises(FileExistsError, match="not empty"):
        write_phantom_tree(out, per_class=1, size=32, seed=2)
    assert (out / "benign" / "benign_00000.png").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree", "tree_masks"]  # no temp folders left


def test_make_phantoms_verb(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert make_phantoms.main([str(tmp_path / "empty"), "--per-class", "1", "--size", "16"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"out: {(tmp_path / 'empty').resolve()}"
    assert len(list((tmp_path / "empty").rglob("*.png"))) == 3  # images only
    assert len(list((tmp_path / "empty_masks").rglob("*_mask.png"))) == 3
    assert make_phantoms.main([str(tmp_path / "empty"), "--per-class", "1"]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err


def test_speed_600_images_64px():
    start = time.perf_counter()
    for i in range(150):
        render_phantom(i % 3, 64, i)
    per_image = (time.perf_counter() - start) / 150
    # ~3 ms on an idle core; the bound leaves room for a loaded CI machine
    assert per_image < 0.05, f"{per_image * 1000:.1f} ms per 64 px phantom (600 must take a few seconds)"
