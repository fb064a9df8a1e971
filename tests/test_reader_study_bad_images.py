"""The reader study decodes images with the loaders' `read_image` (issue 15 items 12-14): a
decompression-bomb header or a NaN float TIFF gets an error naming the file instead of Pillow's
bare traceback, and EXIF orientation is applied as in training."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from synthmed.reader_study.blinding import blind_png
from synthmed.reader_study.create import create_study
from test_loader_defects import png_claiming


def _tree(root, n=4, value=90):
    for cls in ("a", "b"):
        for i in range(n):
            path = root / cls / f"{cls}{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(i + (0 if cls == "a" else 100))
            Image.fromarray(np.clip(value + rng.normal(0, 20, (24, 24)), 0, 255).astype(np.uint8)).save(path)
    return root


def test_create_names_a_decompression_bomb_file(tmp_path):
    real, fake = _tree(tmp_path / "real"), _tree(tmp_path / "fake", value=150)
    png_claiming(real / "a" / "huge.png", 20000, 20000)
    with pytest.raises(ValueError, match=r"huge\.png"):
        create_study(real, fake, tmp_path / "study.sqlite", per_source=5, size=32)
    assert not (tmp_path / "study.sqlite").exists()


def test_blinding_names_a_nan_float_tiff(tmp_path):
    arr = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    arr[3, 3] = np.nan
    path = tmp_path / "nan.tif"
    Image.fromarray(arr, mode="F").save(path)
    with pytest.raises(ValueError, match=r"nan\.tif.*NaN"):
        blind_png(path, 8)


def test_blinding_applies_exif_orientation(tmp_path):
    arr = np.zeros((8, 16), np.uint8)
    arr[:, :8] = 255  # left half white, stored landscape
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.png"
    img.save(path, exif=exif)
    served = np.asarray(Image.open(io.BytesIO(blind_png(path, 16, mode="L"))))
    top, bottom = served[:8].mean(), served[8:].mean()
    assert top > 200 and bottom < 50, (top, bottom)  # displayed upright: the white half is on top
