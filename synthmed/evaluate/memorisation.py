"""Memorisation audit: how close is each generated image to the generator's training set?

For each fake image the distance to its nearest training image is compared with the same
distance for held-out real images (`--real`, which the generator never saw): a generator that
only generalises produces fakes about as far from the training set as new real images are; one
that copies produces fakes much closer. Done in two spaces:

* `feature[<extractor>]`: Euclidean distance between the extractor's features;
* `pixel`: RMS distance between the images in [0, 1] at the evaluation size.

Near-copy rule (documented in the report): a fake is a near-copy when its nearest-training
distance is <= the 5th percentile of the real-to-train nearest distances, i.e. closer to a
training image than 95% of genuinely new images are. Real images byte-identical to a training
image (a leaked split) are left out of that reference and counted in the report. The 8 closest
fake/train pairs of each space are drawn into a PNG.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

NEAR_COPY_PERCENTILE = 5.0
CLOSEST_PAIRS = 8
TILE = 96


def nearest_distances(query: torch.Tensor, reference: torch.Tensor, rms: bool,
                      chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance, index) of each query row's nearest reference row; rms divides by sqrt(dimensions)."""
    q, r = query.flatten(1).double(), reference.flatten(1).double()
    scale = math.sqrt(q.shape[1]) if rms else 1.0
    dists, idx = [], []
    for s in range(0, q.shape[0], chunk):
        values, where = torch.cdist(q[s:s + chunk], r).min(dim=1)
        dists.append(values / scale)
        idx.append(where)
    return torch.cat(dists), torch.cat(idx)


def summary(values: torch.Tensor) -> dict[str, float]:
    """min / percentiles / median / max / mean of a 1-d tensor."""
    v = values.double()
    q = torch.quantile(v, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64))
    return {"n": int(v.numel()), "min": float(v.min()), "p5": float(q[0]), "p25": float(q[1]), "median": float(q[2]),
            "p75": float(q[3]), "p95": float(q[4]), "max": float(v.max()), "mean": float(v.mean())}


def audit_space(fake: torch.Tensor, real: torch.Tensor, train: torch.Tensor, rms: bool,
                real_keep: torch.Tensor, percentile: float = NEAR_COPY_PERCENTILE) -> dict:
    """Near-copy statistics of one space. real_keep: bool mask of the real images used as the reference."""
    fake_d, fake_i = nearest_distances(fake, train, rms)
    real_d, _ = nearest_distances(real[real_keep], train, rms) if bool(real_keep.any()) else (None, None)
    out: dict = {"fake_to_train": summary(fake_d), "_fake_nn_distance": fake_d, "_fake_nn_index": fake_i}
    if real_d is None or real_d.numel() < 2:
        out["computed"] = False
        out["reason"] = ("not computed: fewer than 2 --real images differ from every --train file, so there is no "
                         "reference distribution; pass a held-out real set")
        return out
    threshold = float(torch.quantile(real_d.double(), percentile / 100.0))
    near = fake_d <= threshold
    median_real = float(real_d.median())
    out.update({
        "computed": True,
        "threshold": threshold,
        "near_copy_fraction": float(near.double().mean()),
        "near_copies": int(near.sum()),
        "real_to_train": summary(real_d),
        "fake_over_real_median_ratio": summary(fake_d / median_real) if median_real > 0 else None,
    })
    return out


def closest_pairs(fake_paths: list[str], train_paths: list[str], distances: torch.Tensor,
                  indices: torch.Tensor, n: int = CLOSEST_PAIRS) -> list[dict]:
    """The n fakes closest to the training set: file names and distance."""
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
    """A grid: top row the fakes, bottom row their nearest training images, distance under each column."""
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


def memorisation_audit(spaces: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]],
                       fake_set, real_set, train_set, out_dir: Path,
                       percentile: float = NEAR_COPY_PERCENTILE) -> dict:
    """Audit every space {name: (fake, real, train, rms)}; writes closest_pairs_<space>.png into out_dir.

    fake_set / real_set / train_set are `images.ImageSet`s (paths, hashes and pixels for the PNG).
    """
    train_hashes = set(train_set.sha256)
    real_keep = torch.tensor([h not in train_hashes for h in real_set.sha256], dtype=torch.bool)
    report: dict = {
        "rule": (f"a fake is a near-copy when its nearest-train distance <= the {percentile:g}th percentile of the "
                 f"--real (held-out) images' nearest-train distances; a generator that does not copy scores about "
                 f"{percentile / 100:g}, one that copies its training images scores up to 1"),
        "percentile": percentile,
        "fake_files_identical_to_train": sum(h in train_hashes for h in fake_set.sha256),
        "real_files_identical_to_train": int((~real_keep).sum()),
        "spaces": {},
    }
    for name, (fake, real, train, rms) in spaces.items():
        result = audit_space(fake, real, train, rms, real_keep, percentile)
        distances, indices = result.pop("_fake_nn_distance"), result.pop("_fake_nn_index")
        result["distance"] = "RMS over pixels in [0, 1]" if rms else "Euclidean between feature vectors"
        pairs = closest_pairs(fake_set.paths, train_set.paths, distances, indices)
        png = out_dir / f"closest_pairs_{name.split('[')[0]}.png"
        draw_pairs_png(pairs, fake_set.images, train_set.images, png, f"8 closest fake/train pairs, {name}")
        result["closest_pairs"] = [{k: v for k, v in p.items() if not k.endswith("_index")} for p in pairs]
        result["closest_pairs_png"] = png.name
        report["spaces"][name] = result
    return report
