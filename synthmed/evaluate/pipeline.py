"""`evaluate(options, out_dir)`: load the sets, extract features once, compute every metric, return the record.

The record (written as evaluation.json by `report.py`) holds the metrics as a list of typed
results (`results.MetricResult`: name, feature space or definition, value, n_real, n_fake,
direction, bootstrap 95 % interval, reliability), pooled and — when fakes and reals share class
folders — per class; besides them the extractor (name, checkpoint/weights file and its sha256),
the sets (folders, counts per class), every setting a number depends on, and the copy audit.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from synthmed.evaluate import bootstrap, fidelity, manifold, perceptual, similarity
from synthmed.evaluate.copy_detector import copy_audit
from synthmed.evaluate.degenerate import degenerate_result
from synthmed.evaluate.extractors import FeatureExtractor, build_extractor, extract_features
from synthmed.evaluate.images import ImageSet, load_image_set
from synthmed.evaluate.results import SCHEMA_VERSION, MetricResult, not_computed
from synthmed.evaluate.runtime import single_thread


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
    bootstrap_rounds: int = bootstrap.DEFAULT_ROUNDS
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


def shared_classes(fake: ImageSet, real: ImageSet) -> list[str]:
    """Class names both sets have as folders (per-class rows need a class-conditional fake set)."""
    return [name for name in fake.class_names if name in real.class_names]


def _class_rows(image_set: ImageSet, name: str) -> torch.Tensor:
    label = image_set.class_names.index(name)
    return torch.tensor([i for i, lab in enumerate(image_set.labels) if lab == label], dtype=torch.long)


def _feature_metrics(space: str, real: torch.Tensor, fake: torch.Tensor, opts: EvaluateOptions,
                     class_name: str | None = None) -> list[MetricResult]:
    """FID, KID and the four k-NN metrics of one (real, fake) pair of feature sets."""
    n, m = real.shape[0], fake.shape[0]
    if min(n, m) < 2:
        reason = f"fewer than 2 images in a set (n_real {n}, n_fake {m})"
        return [not_computed(name, space, reason, n_real=n, n_fake=m, class_name=class_name, higher_is_better=hib)
                for name, hib in (("fid", False), ("kid", False))]
    rounds, seed = opts.bootstrap_rounds, opts.seed
    return [fidelity.fid_result(real, fake, space, rounds, seed, class_name),
            fidelity.kid_result(real, fake, space, rounds, seed, class_name),
            *manifold.prdc_results(real, fake, space, opts.k, rounds, seed, class_name)]


PIXEL_HIGHER = {"ssim": True, "ms_ssim": True, "psnr": True}


def _per_pair(name: str, definition: str, values: torch.Tensor, n_real: int, opts: EvaluateOptions, salt: int,
              text: str, higher: bool) -> MetricResult:
    """A mean over fakes of per-pair values, its interval resampling the fakes (the real set fixed)."""
    return MetricResult(name=name, space=definition, value=float(values.double().mean()), n_real=n_real,
                        n_fake=int(values.numel()), higher_is_better=higher,
                        interval=bootstrap.mean_interval(values, opts.bootstrap_rounds, opts.seed, salt),
                        definition=text + "; interval resamples the fakes, the real set fixed",
                        extra={"bootstrap_rounds": opts.bootstrap_rounds})


def _pixel_metrics(real: torch.Tensor, fake: torch.Tensor, opts: EvaluateOptions) -> tuple[list, dict, dict]:
    """SSIM / MS-SSIM / PSNR under both definitions; also returns the pairings (for LPIPS)."""
    nearest_idx, _ = similarity.nearest(fake, real)
    pairings = {"nearest_real": nearest_idx, "random_pairs": similarity.random_pairs(len(fake), len(real), opts.seed)}
    results: list[MetricResult] = []
    ms_cfg = similarity.ms_ssim_settings(fake.shape[-1])
    texts = {"ssim": "structural similarity, data_range 1", "ms_ssim": "multi-scale SSIM (settings below)",
             "psnr": "peak signal-to-noise ratio in dB, data_range 1, mean of per-pair values"}
    for d_i, (definition, index) in enumerate(pairings.items()):
        scores = similarity.paired_score_values(fake, real, index, batch_size=opts.batch_size)
        for s_i, (key, values) in enumerate(scores.items()):
            text = f"{texts[key]}; {similarity.DEFINITIONS[definition]}"
            if values is None:
                results.append(not_computed(key, definition, f"{fake.shape[-1]} px images are too small for MS-SSIM "
                                            "(needs > 8 px with kernel_size=3, 3 scales)", n_real=len(real),
                                            n_fake=len(fake), higher_is_better=True, definition=text))
            else:
                results.append(_per_pair(key, definition, values, len(real), opts, 30 + 3 * d_i + s_i, text,
                                         PIXEL_HIGHER[key]))
    settings = {"definitions": similarity.DEFINITIONS, "pixel_range": "[0, 1], data_range=1",
                "ssim": {"kernel": "gaussian 11, sigma 1.5 (torchmetrics defaults)"}, "ms_ssim": ms_cfg,
                "psnr": "per pair, then mean over pairs (identical pairs give inf)"}
    return results, settings, pairings


def _lpips(real: torch.Tensor, fake: torch.Tensor, pairings: dict, opts: EvaluateOptions) -> tuple[list, dict]:
    text = "learned perceptual distance (torchmetrics LPIPS)"
    if not opts.lpips_weights:
        return [not_computed("lpips", "", "no local weights (pass --lpips-weights)", higher_is_better=False,
                             definition=text)], {}
    metric = perceptual.build_lpips(opts.lpips_weights, opts.lpips_net)
    results = [_per_pair("lpips", d, perceptual.lpips_pairs(metric, fake, real, idx), len(real), opts, 40 + i,
                         f"{text}; {similarity.DEFINITIONS[d]}", False) for i, (d, idx) in enumerate(pairings.items())]
    return results, {"net": opts.lpips_net, "weights": str(opts.lpips_weights), "input": "[0, 1] RGB (gray repeated)"}


def _clip(fake_set: ImageSet, opts: EvaluateOptions) -> tuple[list, dict]:
    text = "torchmetrics CLIPScore: 100 x cosine(image, prompt), mean over fake images"
    if not opts.clip_model:
        return [not_computed("clip_score", "", "no local weights (pass --clip-model)", higher_is_better=True,
                             definition=text)], {}
    metric = perceptual.build_clip_score(opts.clip_model)
    prompts, source = perceptual.prompts_for(fake_set.paths, fake_set.labels, fake_set.class_names,
                                             fake_set.root, opts.clip_prompt)
    if prompts is None:
        return [not_computed("clip_score", "", source, higher_is_better=True, definition=text)], {}
    values = perceptual.clip_scores(metric, fake_set.images, prompts)
    result = MetricResult(name="clip_score", space="", value=max(float(values.mean()), 0.0), n_fake=len(fake_set),
                          higher_is_better=True, interval=bootstrap.mean_interval(values, opts.bootstrap_rounds,
                                                                                   opts.seed, 45),
                          definition=text + ", clamped at 0", extra={"bootstrap_rounds": opts.bootstrap_rounds})
    return [result], {"model": str(opts.clip_model), "prompts": source, "definition": text + ", clamped at 0"}


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
    classes = shared_classes(sets["fake"], sets["real"])
    with single_thread():
        metrics = _feature_metrics(name, feats["real"], feats["fake"], opts)
        for cls in classes:
            metrics += _feature_metrics(name, feats["real"][_class_rows(sets["real"], cls)],
                                        feats["fake"][_class_rows(sets["fake"], cls)], opts, cls)
        t = _timed(timings, "feature_metrics_s", t)
        real_px, fake_px = sets["real"].as_float(), sets["fake"].as_float()
        pixel, pixel_settings, pairings = _pixel_metrics(real_px, fake_px, opts)
        metrics += pixel
        metrics.append(degenerate_result(sets["fake"].images, sets["real"].images, opts.bootstrap_rounds, opts.seed))
        for cls in classes:
            metrics.append(degenerate_result(sets["fake"].images[_class_rows(sets["fake"], cls)],
                                             sets["real"].images[_class_rows(sets["real"], cls)],
                                             opts.bootstrap_rounds, opts.seed, cls))
    lpips, lpips_settings = _lpips(real_px, fake_px, pairings, opts)
    metrics += lpips
    clip, clip_settings = _clip(sets["fake"], opts)
    metrics += clip
    t = _timed(timings, "pixel_metrics_s", t)

    if "train" in sets:
        with single_thread():
            copies, audit = copy_audit(sets["fake"], sets["real"], sets["train"], feats, name, out_dir,
                                       opts.bootstrap_rounds, opts.seed,
                                       [c for c in classes if c in sets["train"].class_names] or None)
        metrics += copies
    else:
        audit = {"computed": False, "reason": "not computed: no --train set given (the generator's training images "
                 "are needed)"}
        metrics.append(not_computed("near_copy_fraction", "", audit["reason"], higher_is_better=False))
    _timed(timings, "copy_audit_s", t)

    return {
        "schema_version": SCHEMA_VERSION,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "extractor": {"name": name, **extractor.info},
        "image_size": size,
        "channels": extractor.channels,
        "device": str(device),
        "inputs": {k: s.describe() for k, s in sets.items()},
        "classes": classes,
        "metrics": [m.to_json() for m in metrics],
        "settings": {"feature_space": {"k_nearest_neighbours": opts.k}, "pixel": pixel_settings,
                     "lpips": lpips_settings, "clip_score": clip_settings, "resize_mode": opts.resize_mode,
                     "seed": opts.seed, "max_images": opts.max_images,
                     "bootstrap": {"rounds": opts.bootstrap_rounds, "level": bootstrap.LEVEL,
                                   "fid_max_rounds": fidelity.FID_MAX_ROUNDS,
                                   "method": "percentile interval over seeded resamplings of the images"}},
        "copy_audit": audit,
        "options": asdict(opts),
        "timings": timings,
    }
