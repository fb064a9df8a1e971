"""Closest-pair strips: the fakes nearest to the training set above their nearest training image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

CLOSEST_PAIRS = 8
TILE = 96


def closest_pairs(fake_paths: list[str], train_paths: list[str], distances: torch.Tensor,
                  indices: torch.Tensor, n: int = CLOSEST_PAIRS) -> list[dict]:
    """The n fakes closest to the training set: file names, distance and row indices."""
    order = torch.argsort(distances)[:n].tolist()
    return [{"fake": fake_paths[i], "train": train_paths[int(indices[i])], "distance": float(distances[i]),
             "fake_index": i, "train_index": int(indices[i])} for i in order]


def _tile(image: torch.Tensor) -> Image.Image:
    arr = image.numpy()
    arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
    tile = Image.fromarray(np.ascontiguousarray(arr)).convert("RGB")
    return tile.resize((TILE, TILE), Image.NEAREST)


def draw_pairs_png(pairs: list[dict], fake_images: torch.Tensor, train_images: torch.Tensor, path: Path,
                   title: str) -> Path:
    """A grid of uint8 images: top row the fakes, bottom row their nearest training images, distance below."""
    cols, pad, text_h = max(1, len(pairs)), 4, 14
    width = cols * (TILE + pad) + pad
    height = text_h + 2 * (TILE + pad) + text_h + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 1), f"{title}  (top: fake, bottom: nearest train)", fill="black")
    for col, pair in enumerate(pairs):
        x = pad + col * (TILE + pad)
        canvas.paste(_tile(fake_images[pair["fake_index"]]), (x, text_h))
        canvas.paste(_tile(train_images[pair["train_index"]]), (x, text_h + TILE + pad))
        draw.text((x, text_h + 2 * (TILE + pad)), f"d={pair['distance']:.4g}", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
