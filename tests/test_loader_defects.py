"""Bad inputs the image loader must catch (issue 15 items 11-14): a re-saved copy of a training image
in the test tree, near-duplicates, a header claiming 20000 x 20000 pixels, a float TIFF with a NaN
pixel, and EXIF orientation."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from datamodules.image_folder import ImageFolderDataModule
from datamodules.image_io import CorruptImageError, read_image
from datamodules.splits import SplitError


def smooth_image(seed: int, size: int = 48) -> np.ndarray:
    """A smooth random picture (low-frequency blobs), as unlike its siblings as two scans are."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.BICUBIC))


def smooth_tree(root: Path, per_class: int = 6, offset: int = 0) -> Path:
    for c, cls in enumerate(("a", "b")):
        for i in range(per_class):
            path = root / cls / f"{cls}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(smooth_image(offset + 100 * c + i)).save(path)
    return root


def dm(root: Path, **kwargs) -> ImageFolderDataModule:
    kwargs.setdefault("val_fraction", 0.0)
    return ImageFolderDataModule(root=str(root), image_size=16, batch_size=4, **kwargs)


# ---- item 11: the audit compares pixels, and reports near-duplicates --------------------------------
def test_a_training_image_resaved_as_png_and_bmp_in_test_root_is_caught(tmp_path):
    train = smooth_tree(tmp_path / "train")
    test = smooth_tree(tmp_path / "test", per_class=3, offset=1000)
    with Image.open(train / "a" / "a_0.png") as img:
        img.save(test / "a" / "resaved.bmp")
        img.convert("RGB").save(test / "a" / "resaved_rgb.png", compress_level=0)  # other bytes, same picture
    assert (test / "a" / "resaved_rgb.png").read_bytes() != (train / "a" / "a_0.png").read_bytes()
    with pytest.raises(SplitError, match=r"(?s)2 pairs.*test_root/a/resaved.bmp  ==  a/a_0.png"):
        dm(train, test_root=str(test)).prepare_manifest()
    m = dm(train, test_root=str(test), on_overlap="drop_test").prepare_manifest()
    assert sorted(m.loc[m.note == "overlap_dropped", "key"]) == ["test_root/a/resaved.bmp", "test_root/a/resaved_rgb.png"]
    # the manifest keeps both hashes, each named for what it hashes
    assert m["file_sha256"].nunique() == len(m) and m["pixel_sha256"].nunique() == len(m) - 2


def test_near_duplicate_jpeg_is_warned_and_distinct_images_are_not(tmp_path, caplog):
    train = smooth_tree(tmp_path / "train")
    test = smooth_tree(tmp_path / "test", per_class=3, offset=1000)
    Image.fromarray(smooth_image(101)).save(test / "b" / "b_1_copy.jpg", quality=70)  # train b/b_1, lossy
    module = dm(train, test_root=str(test))
    with caplog.at_level("WARNING"):
        module.prepare_manifest()
    near = [line for line in module.audit_report if "  ~  " in line]
    assert len(near) == 1 and near[0].strip().startswith("test_root/b/b_1_copy.jpg  ~  b/b_1.png")
    assert "1 near-duplicate pairs" in caplog.text


def test_audit_report_goes_to_data_audit_txt(tmp_path, monkeypatch, capsys):
    from synthmed.cli import main

    train = smooth_tree(tmp_path / "train", per_class=8)
    test = smooth_tree(tmp_path / "test", per_class=3, offset=1000)
    Image.fromarray(smooth_image(101)).save(test / "b" / "b_1_copy.jpg", quality=70)
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--model", "lightning_modules.classifier.ClassifierModule", "--model.arch", "resnet18",
                 "--data", "datamodules.image_folder.ImageFolderDataModule", "--data.root", str(train),
                 "--data.test_root", str(test), "--data.image_size", "16", "--data.batch_size", "8",
                 "--trainer.max_steps", "1", "--trainer.enable_progress_bar", "false",
                 "--test_after_fit", "false"]) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1].split("run_dir: ")[1])
    assert "test_root/b/b_1_copy.jpg  ~  b/b_1.png" in (run_dir / "data_audit.txt").read_text()


# ---- item 12: a header claiming 20000 x 20000 pixels -----------------------------------------------
def png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose IHDR claims `width` x `height` (valid CRC; the pixel data is a few bytes)."""
    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = data[12:29]  # type + 13 bytes of IHDR
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def test_decompression_bomb_header_names_the_file_and_skip_corrupt_skips_it(tmp_path):
    root = smooth_tree(tmp_path / "tree")
    bomb = png_claiming(root / "a" / "huge.png", 20000, 20000)
    with pytest.raises(CorruptImageError, match=r"huge.png claims more pixels than Pillow will decode"):
        read_image(bomb)
    with pytest.raises(CorruptImageError, match=r"a/huge.png"):
        dm(root, test_fraction=0.0).setup("fit")
    tolerant = dm(root, test_fraction=0.0, skip_corrupt=True)
    with pytest.warns(UserWarning, match=r"dropping .*huge.png"):
        tolerant.setup("fit")
    assert len(tolerant.dataset("train")) == 12


# ---- item 13: a float TIFF with a NaN pixel ----------------------------------------------------------
def test_float_tiff_with_a_nan_pixel_is_refused_naming_the_file(tmp_path):
    root = smooth_tree(tmp_path / "tree")
    arr = smooth_image(7).astype(np.float32) / 255.0
    arr[3, 5] = np.nan
    path = root / "b" / "nan.tif"
    Image.fromarray(arr, mode="F").save(path)
    with pytest.raises(CorruptImageError, match=r"nan.tif has 1 NaN or infinite pixel"):
        read_image(path)
    fine = root / "b" / "fine.tif"
    Image.fromarray(np.nan_to_num(arr), mode="F").save(fine)
    assert read_image(fine).max() == 255  # a finite float TIFF still loads, min..max scaled
    tolerant = dm(root, test_fraction=0.0, skip_corrupt=True)
    with pytest.warns(UserWarning, match=r"dropping .*nan.tif"):
        tolerant.setup("fit")
    assert len(tolerant.dataset("train")) == 13


# ---- item 14: EXIF orientation ------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_exif_orientation_is_applied_as_the_reader_study_shows_it(tmp_path, ext):
    arr = np.zeros((10, 30), dtype=np.uint8)  # wide, with a bright top-left block
    arr[:4, :6] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / f"rotated{ext}"
    Image.fromarray(arr).save(path, exif=exif.tobytes(), **({"quality": 95} if ext == ".jpg" else {}))
    decoded = read_image(path)
    with Image.open(path) as img:
        shown = np.asarray(ImageOps.exif_transpose(img).convert("L"))
    assert decoded.shape == (30, 10) == shown.shape  # upright: tall, not wide
    assert np.abs(decoded.astype(int) - shown).max() <= 1
    assert decoded[:6, -4:].mean() > 200  # the block is now top-right
