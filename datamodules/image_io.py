"""Decoding image files of any common mode and resizing them to the model's square input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class CorruptImageError(ValueError):
    """An image file could not be decoded; the message names the file."""


def read_image(path: str | Path) -> np.ndarray:
    """Decode `path` to uint8 H x W (grayscale) or H x W x 3 (colour), as it is meant to be seen.

    Handles L, LA, P, RGB, RGBA, CMYK and 16-bit / 32-bit integer and float grayscale: high bit
    depths are rescaled by their own min..max to 0..255 (a 12-bit CT stored in 16 bits would look
    black if simply truncated). Alpha is dropped. The EXIF orientation tag is applied (a phone
    photo or a scanner JPEG is shown upright, as the reader study shows it).

    Every failure is a `CorruptImageError` naming the file: undecodable bytes, a header claiming
    more pixels than Pillow's decompression-bomb limit (`Image.MAX_IMAGE_PIXELS` x 2, e.g.
    20000 x 20000; Pillow raises a bare `DecompressionBombError` that names no file), and
    float images with NaN or infinite pixels (min..max scaling would turn them all black).
    """
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            mode = img.mode
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = np.asarray(img, dtype=np.float64)
                bad = int(np.size(arr) - np.isfinite(arr).sum())
                if bad:
                    raise CorruptImageError(f"image file {path} has {bad} NaN or infinite pixel values "
                                            f"(mode {mode}); fix or remove it (data.skip_corrupt: true skips it)")
                lo, hi = float(arr.min()), float(arr.max())
                arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
                return arr.round().astype(np.uint8)
            if mode in ("L", "1"):
                return np.asarray(img.convert("L"), dtype=np.uint8)
            if mode == "LA":
                return np.asarray(img.convert("L"), dtype=np.uint8)
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except CorruptImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise CorruptImageError(f"image file {path} claims more pixels than Pillow will decode ({exc}); "
                                "a damaged or hostile header, or a huge scan to downsize first") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CorruptImageError(f"cannot decode image file {path}: {exc}") from exc


def _to_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    if arr.ndim == 2:
        return arr[..., None] if channels == 1 else np.repeat(arr[..., None], 3, axis=2)
    if channels == 3:
        return arr[..., :3]
    # ITU-R 601-2 luma, as PIL's convert("L")
    gray = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
    return gray.round().clip(0, 255).astype(np.uint8)[..., None]


def to_model_array(arr: np.ndarray, size: int, channels: int, resize_mode: str = "pad",
                   nearest: bool = False) -> np.ndarray:
    """uint8 H x W [x C] of any size -> uint8 C x size x size.

    resize_mode: "pad" scales the longer side to `size` and centres it on black (aspect kept),
    "stretch" resizes both sides to `size`, "crop" scales the shorter side and centre-crops.
    """
    arr = _to_channels(arr, channels)
    h, w = arr.shape[:2]
    resample = Image.NEAREST if nearest else Image.BILINEAR
    img = Image.fromarray(arr[..., 0] if channels == 1 else arr)
    if resize_mode == "stretch" or h == w:
        out = img.resize((size, size), resample)
    else:
        scale = size / max(h, w) if resize_mode == "pad" else size / min(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        scaled = img.resize((nw, nh), resample)
        out = Image.new(img.mode, (size, size))
        out.paste(scaled, ((size - nw) // 2, (size - nh) // 2))
    res = np.asarray(out, dtype=np.uint8)
    return res[None] if res.ndim == 2 else res.transpose(2, 0, 1)
