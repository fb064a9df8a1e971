"""Re-encode any input image into one uniform, metadata-free PNG.

Real and synthetic images usually differ in container (JPEG vs PNG), mode (L vs RGB,
16-bit), size, aspect ratio and metadata (EXIF, PNG text chunks written by generators, ICC
profiles). Any of these would tell a reader the source, so every image goes through the same
steps: EXIF orientation applied, converted to 8-bit ``mode``, centre-cropped to a square,
resized to ``size`` x ``size``, contrast-stretched to exactly 0..255 and written as a PNG from
a fresh pixel buffer (so no ``info`` dictionary, ICC profile or text chunk can travel along).
The PNG holds only IHDR, IDAT and IEND chunks.

Two steps exist only to hide the source from the served bytes themselves:

* **the same intensity normalisation for every image**: a 16-bit scan has to be scaled to
  8 bits by its own minimum and maximum, so it spans 0..255; were 8-bit images left alone,
  "spans exactly 0..255" would mark the 16-bit source. Every image is therefore stretched by
  its own minimum and maximum after resizing, whatever its bit depth.
* **no compression** (zlib level 0, stored blocks): a compressed PNG's length follows the
  image content (noise, JPEG artefacts, smoothness of upsampled images) and separated the
  demo's real from synthetic images; stored, every image of a study has the same length
  (``size * (size * channels + 1)`` bytes of pixels plus a fixed overhead), and so the same
  IDAT chunk layout. The cost is size: 66 kB per 256 px greyscale image.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

MODES = ("L", "RGB")


def _to_8bit(img: Image.Image, mode: str) -> Image.Image:
    """Convert to 8-bit L or RGB; high-bit-depth images are min-max scaled, not clipped."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.round().astype(np.uint8))  # 2-D uint8 -> L
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # transparent pixels on black, as a viewer would show a scan
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert(mode)


def stretch(arr: np.ndarray) -> np.ndarray:
    """Scale uint8 pixels linearly so that their minimum is 0 and maximum 255 (all channels
    together, so colours keep their hue); a flat image stays as it is."""
    lo, hi = int(arr.min()), int(arr.max())
    if hi == lo:
        return arr
    scaled = (arr.astype(np.float64) - lo) * (255.0 / (hi - lo))
    return scaled.round().astype(np.uint8)


def blind_png(path: Path, size: int, mode: str = "L") -> bytes:
    """Read ``path`` and return its uniform, metadata-free PNG encoding.

    Raises ValueError naming the file when it cannot be read as an image.
    """
    if mode not in MODES:
        raise ValueError(f"--mode must be one of {MODES}, got {mode!r}")
    # The loaders' decoder: EXIF orientation, min-max scaling of 16-bit/float images, and errors that
    # name the file for undecodable bytes, decompression-bomb headers and NaN pixels.
    from datamodules.image_io import CorruptImageError, read_image

    try:
        img = Image.fromarray(read_image(path))
    except (CorruptImageError, OSError) as err:
        raise ValueError(f"cannot read image {path}: {err}; remove it or convert it") from err
    img = _to_8bit(img, mode)
    side = min(img.size)
    img = ImageOps.fit(img, (side, side), method=Image.Resampling.BICUBIC)  # centre crop
    img = img.resize((size, size), Image.Resampling.LANCZOS)
    # a fresh image from the raw pixels: carries no info dict, ICC profile, EXIF or text
    clean = Image.fromarray(stretch(np.asarray(img)))  # uint8 HxW -> L, HxWx3 -> RGB
    buf = io.BytesIO()
    # level 0: stored, not deflated, so the byte length does not depend on the content
    clean.save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


def png_chunk_types(data: bytes) -> list[str]:
    """The chunk types of a PNG file in order (used by tests and by the create self-check)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    types, pos = [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        types.append(data[pos + 4:pos + 8].decode("ascii", "replace"))
        pos += 12 + length
    return types
