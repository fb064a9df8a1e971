"""`evaluate(options, out_dir)`: load the sets, extract features once, compute every metric, return the record.

The record (written as evaluation.json by `report.py`) holds, besides the numbers, the extractor
(name, checkpoint/weights file and its sha256), the sets (folders, counts per class), every
setting a number depends on, and for each metric that could not be computed the reason.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from synthmed.evaluate import fidelity, manifold, perceptual, similarity
from synthmed.evaluate.extractors import FeatureExtractor, build_extractor, extract_features
from synthmed.evaluate.images import ImageSet, load_image_set
from synthmed.evaluate.memorisation import NEAR_COPY_PERCENTILE, memorisation_audit
from synthmed.evaluate.runtime import single_thread

SCHEMA_VERSION = 1


@dataclass
class EvaluateOptions:
    """Everything `synthmed evaluate` takes (see cli.py for the meaning of each option)."""

    real: str
    fake: str
    train: str | None = None
    extractor: str | None = None
    inception_weights: str | None = None
    lpips_weights: str | None = None
    lpips_net: str = "alex"
    clip_model: str | None = None
    clip_prompt: str = "a medical image of {class}"
    image_size: int | None = None
    max_images: int | None = None
    seed: int = 0
    k: int = manifold.DEFAULT_K
    near_copy_percentile: float = NEAR_COPY_PERCENTILE
    resize_mode: str = "pad"
    batch_size: int = 64
    device: str = "auto"


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _timed(timings: dict, key: str, start: float) -> float:
    now = time.perf_counter()
    timings[key] = round(now - start, 3)
    return now


def _load_sets(opts: EvaluateOptions, extractor: FeatureExtractor, size: int) -> dict[str, ImageSet]:
    sets = {}
    for name, folder in (("real", opts.real), ("fake", opts.fake), ("train", opts.train)):
        if folder:  # one seed for all: the same folder given twice gives the same subset
            sets[name] = load_image_set(folder, size, extractor.channels, option=f"--{name}",
                                        max_images=opts.max_images, seed=opts.seed, resize_mode=opts.resize_mode)
    return sets


def _feature_metrics(name: str, real: torch.Tensor, fake: torch.Tensor, opts: EvaluateOptions) -> tuple[dict, dict]:
    metrics = {f"fid[{name}]": fidelity.fid_from_features(real, fake)}
    kid_mean, kid_std, kid_settings = fidelity.kid_from_features(real, fake, seed=opts.seed)
    metrics[f"kid_mean[{name}]"], metrics[f"kid_std[{name}]"] = kid_mean, kid_std
    for key, value in manifold.precision_recall_density_coverage(real, fake, k=opts.k).items():
        metrics[f"{key}[{name}]"] = value
    return metrics, {"kid": kid_settings, "k_nearest_neighbours": opts.k}


def _pixel_metrics(real: torch.Tensor, fake: torch.Tensor, opts: EvaluateOptions) -> tuple[dict, dict, dict]:
    """SSIM / MS-SSIM / PSNR under both definitions; also returns the pairings (for LPIPS)."""
    nearest_idx, _ = similarity.nearest(fake, real)
    pairings = {"nearest_real": nearest_idx, "random_pairs": similarity.random_pairs(len(fake), len(real), opts.seed)}
    metrics: dict = {}
    ms_cfg = similarity.ms_ssim_settings(fake.shape[-1])
    for definition, index in pairings.items():
        scores = similarity.paired_scores(fake, real, index, batch_size=opts.batch_size)
        for key, value in scores.items():
            metrics[f"{key}[{definition}]"] = value if value is not None else perceptual.not_computed(
                f"{fake.shape[-1]} px images are too small for MS-SSIM (needs > 8 px with kernel_size=3, 3 scales)")
    settings = {"definitions": similarity.DEFINITIONS, "pixel_range": "[0, 1], data_range=1",
                "ssim": {"kernel": "gaussian 11, sigma 1.5 (torchmetrics defaults)"}, "ms_ssim": ms_cfg,
                "psnr": "per pair, then mean over pairs (identical pairs give inf)"}
    return metrics, settings, pairings


def _lpips(real: torch.Tensor, fake: torch.Tensor, pairings: dict, opts: EvaluateOptions) -> tuple[dict, dict]:
    if not opts.lpips_weights:
        return {"lpips": perceptual.not_computed("no local weights (pass --lpips-weights)")}, {}
    metric = perceptual.build_lpips(opts.lpips_weights, opts.lpips_net)
    metrics = {f"lpips[{d}]": perceptual.lpips_pairs(metric, fake, real, idx) for d, idx in pairings.items()}
    return metrics, {"net": opts.lpips_net, "weights": str(opts.lpips_weights), "input": "[0, 1] RGB (gray repeated)"}


def _clip(fake_set: ImageSet, opts: EvaluateOptions) -> tuple[dict, dict]:
    if not opts.clip_model:
        return {"clip_score": perceptual.not_computed("no local weights (pass --clip-model)")}, {}
    metric = perceptual.build_clip_score(opts.clip_model)
    prompts, source = perceptual.prompts_for(fake_set.paths, fake_set.labels, fake_set.class_names,
                                             fake_set.root, opts.clip_prompt)
    if prompts is None:
        return {"clip_score": perceptual.not_computed(source)}, {}
    value = perceptual.clip_score(metric, fake_set.images, prompts)
    return {"clip_score": value}, {"model": str(opts.clip_model), "prompts": source,
                                   "definition": "torchmetrics CLIPScore: 100 x cosine(image, prompt), mean over "
                                                 "fake images, clamped at 0"}


def evaluate(opts: EvaluateOptions, out_dir: Path, extractor: FeatureExtractor | None = None) -> dict:
    """Run every metric; writes the closest-pairs PNGs into out_dir; returns the JSON-able record.

    extractor: an already built one (else built from opts.extractor / opts.inception_weights).
    """
    timings: dict[str, float] = {}
    t = time.perf_counter()
    extractor = extractor or build_extractor(opts.extractor, opts.inception_weights)
    size = int(opts.image_size or extractor.default_image_size)
    if size < 16:
        raise ValueError(f"--image-size {size} is too small; pass >= 16")
    sets = _load_sets(opts, extractor, size)
    t = _timed(timings, "load_s", t)

    device = _device(opts.device)
    feats = {name: extract_features(extractor, s.images, opts.batch_size, device) for name, s in sets.items()}
    t = _timed(timings, "features_s", t)

    name = extractor.name
    with single_thread():
        metrics, feature_settings = _feature_metrics(name, feats["real"], feats["fake"], opts)
        t = _timed(timings, "feature_metrics_s", t)
        real_px, fake_px = sets["real"].as_float(), sets["fake"].as_float()
        pixel, pixel_settings, pairings = _pixel_metrics(real_px, fake_px, opts)
    metrics.update(pixel)
    lpips, lpips_settings = _lpips(real_px, fake_px, pairings, opts)
    metrics.update(lpips)
    clip, clip_settings = _clip(sets["fake"], opts)
    metrics.update(clip)
    t = _timed(timings, "pixel_metrics_s", t)

    if "train" in sets:
        spaces = {f"feature[{name}]": (feats["fake"], feats["real"], feats["train"], False),
                  "pixel": (fake_px, real_px, sets["train"].as_float(), True)}
        with single_thread():
            memo = memorisation_audit(spaces, sets["fake"], sets["real"], sets["train"], out_dir,
                                      opts.near_copy_percentile)
        for space, result in memo["spaces"].items():
            key = f"near_copy_fraction[{space.removeprefix('feature[').removesuffix(']')}]"
            metrics[key] = result["near_copy_fraction"] if result.get("computed") else perceptual.not_computed(
                result["reason"].removeprefix("not computed: "))
    else:
        memo = perceptual.not_computed("no --train set given (the generator's training images are needed)")
        metrics["near_copy_fraction"] = memo
    _timed(timings, "memorisation_s", t)

    return {
        "schema_version": SCHEMA_VERSION,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "extractor": {"name": name, **extractor.info},
        "image_size": size,
        "channels": extractor.channels,
        "device": str(device),
        "inputs": {k: s.describe() for k, s in sets.items()},
        "metrics": metrics,
        "settings": {"feature_space": feature_settings, "pixel": pixel_settings, "lpips": lpips_settings,
                     "clip_score": clip_settings, "resize_mode": opts.resize_mode, "seed": opts.seed,
                     "max_images": opts.max_images},
        "memorisation": memo,
        "options": asdict(opts),
        "timings": timings,
    }
