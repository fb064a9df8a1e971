"""Tiny demo trees for trying the reader study (and for its tests) without any data set.

``make_demo_trees`` writes a ``real/`` and a ``fake/`` ImageFolder tree with head-phantom
images (ellipses, like a brain slice) in classes ``MRI`` and ``CT``. On purpose the two trees
differ in every way blinding must hide: the real images are JPEGs of varying size with EXIF
tags, the fake ones RGB PNGs with generator text chunks.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, PngImagePlugin

CLASSES = ("MRI", "CT")


def phantom(rng: random.Random, size: int, modality: str) -> Image.Image:
    """A greyscale head phantom: skull ring, brain, a few inner structures and mild noise."""
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    cx, cy = size / 2 + rng.uniform(-3, 3), size / 2 + rng.uniform(-3, 3)
    rx, ry = size * rng.uniform(.34, .38), size * rng.uniform(.42, .46)
    skull, brain = (235, 90) if modality == "CT" else (70, 150)
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=skull)
    draw.ellipse([cx - rx * .9, cy - ry * .92, cx + rx * .9, cy + ry * .92], fill=brain)
    for _ in range(rng.randint(3, 6)):
        ex, ey = cx + rng.uniform(-.4, .4) * rx, cy + rng.uniform(-.5, .5) * ry
        ax, ay = rx * rng.uniform(.06, .22), ry * rng.uniform(.05, .2)
        draw.ellipse([ex - ax, ey - ay, ex + ax, ey + ay], fill=rng.randint(30, 220))
    img = img.filter(ImageFilter.GaussianBlur(size / 160))
    noise = np.random.default_rng(rng.randint(0, 2**31)).normal(0, 6, (size, size))
    return Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8))


def make_demo_trees(root: str | Path, per_class: int = 5, seed: int = 0,
                    classes: tuple[str, ...] = CLASSES) -> tuple[Path, Path]:
    """Write ``root/real/<class>/*.jpg`` and ``root/fake/<class>/*.png``; return both roots.

    A class name containing "CT" gets CT-like intensities, any other MRI-like ones.
    """
    root, rng = Path(root), random.Random(seed)
    real, fake = root / "real", root / "fake"
    for name in classes:
        look = "CT" if "CT" in name.upper() else "MRI"
        (real / name).mkdir(parents=True, exist_ok=True)
        (fake / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            exif = Image.Exif()
            exif[0x010F] = "ScannerMaker"           # Make
            exif[0x010E] = f"real {name} scan {i}"  # ImageDescription
            side = rng.choice((256, 288, 320))
            phantom(rng, side, look).save(real / name / f"scan_{i:03d}.jpg", quality=92,
                                          exif=exif)
            info = PngImagePlugin.PngInfo()
            info.add_text("parameters", f"stable diffusion, {name}, seed {i}")
            phantom(rng, 256, look).convert("RGB").save(fake / name / f"sample_{i:03d}.png",
                                                        pnginfo=info)
    return real, fake
