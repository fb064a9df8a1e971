"""Write an evaluation record as evaluation.json + evaluation.md and format its metric table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

DESCRIPTIONS = {
    "fid": "Fréchet distance between Gaussian fits of real and fake features (lower = closer)",
    "kid_mean": "kernel inception distance, mean over subsets (lower = closer)",
    "kid_std": "kernel inception distance, std over subsets",
    "precision": "share of fakes inside the real k-NN manifold (fidelity; Kynkäänniemi 2019)",
    "recall": "share of reals inside the fake k-NN manifold (diversity; Kynkäänniemi 2019)",
    "density": "mean number of real k-NN balls holding a fake, / k (Naeem 2020)",
    "coverage": "share of reals whose k-NN ball holds a fake (Naeem 2020)",
    "ssim": "structural similarity, data_range 1",
    "ms_ssim": "multi-scale SSIM (settings below)",
    "psnr": "peak signal-to-noise ratio in dB, data_range 1",
    "lpips": "learned perceptual distance (lower = more similar)",
    "clip_score": "CLIP image-prompt agreement",
    "near_copy_fraction": ("share of fakes at most as far from the training set as the closest {pct:g}% of held-out "
                           "real images (about {frac:g} for a generator that does not copy; see Memorisation)"),
}


def json_safe(value: Any) -> Any:
    """Replace non-finite floats by the strings 'inf' / '-inf' / 'nan' (strict JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def format_value(value: Any) -> str:
    if isinstance(value, dict) and value.get("computed") is False:
        return value["reason"]
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _describe(key: str, record: dict) -> str:
    base, _, qualifier = key.partition("[")
    qualifier = qualifier.rstrip("]")
    text = DESCRIPTIONS.get(base, "")
    if base == "near_copy_fraction":
        pct = record["memorisation"].get("percentile", 5.0)
        text = text.format(pct=pct, frac=pct / 100)
    pixel = record["settings"]["pixel"]["definitions"]
    if qualifier in pixel:
        text += f"; {pixel[qualifier]}"
    elif qualifier == "pixel":
        text += "; RMS pixel distance"
    elif qualifier:
        text += f"; features: {qualifier}"
    return text


def metric_rows(record: dict) -> list[tuple[str, str, str]]:
    return [(key, format_value(value), _describe(key, record)) for key, value in record["metrics"].items()]


def metrics_table(record: dict) -> str:
    rows = metric_rows(record)
    lines = ["| metric | value | definition |", "| --- | --- | --- |"]
    lines += [f"| `{k}` | {v} | {d} |" for k, v, d in rows]
    return "\n".join(lines)


def _memorisation_md(memo: dict) -> list[str]:
    if memo.get("computed") is False:
        return [f"Memorisation: {memo['reason']}."]
    lines = [f"Rule: {memo['rule']}.", "",
             f"Fake files byte-identical to a training file: {memo['fake_files_identical_to_train']}; "
             f"real files byte-identical to a training file (left out of the reference): "
             f"{memo['real_files_identical_to_train']}.", "",
             "| space | distance | threshold | near-copies | fake-to-train median | real-to-train median | pairs |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for space, r in memo["spaces"].items():
        if r.get("computed"):
            lines.append(f"| `{space}` | {r['distance']} | {r['threshold']:.4g} | {r['near_copies']} "
                         f"({r['near_copy_fraction']:.1%}) | {r['fake_to_train']['median']:.4g} | "
                         f"{r['real_to_train']['median']:.4g} | ![]({r['closest_pairs_png']}) |")
        else:
            lines.append(f"| `{space}` | {r['distance']} | - | {r['reason']} | {r['fake_to_train']['median']:.4g} "
                         f"| - | ![]({r['closest_pairs_png']}) |")
    return lines


def _ms_ssim_text(cfg: dict | None) -> str:
    if not cfg:
        return "not computed (images too small)"
    return (f"kernel_size={cfg['kernel_size']}, betas={tuple(cfg['betas'])} ({cfg['scales']} scales), "
            f"data_range={cfg['data_range']}, normalize={cfg['normalize']}")


def markdown(record: dict) -> str:
    ex = record["extractor"]
    source = ex.get("checkpoint") or ex.get("weights") or ""
    lines = ["# Generative evaluation", "",
             f"Created {record['created_utc']} at {record['image_size']} px, {record['channels']} channel(s), "
             f"device {record['device']}.", "",
             f"Feature extractor: `{ex['name']}` ({ex.get('features', '')}; {source}, sha256 "
             f"{ex.get('sha256', '-')}).", "",
             "| set | folder | images | classes |", "| --- | --- | --- | --- |"]
    for name, info in record["inputs"].items():
        classes = ", ".join(f"{c} {n}" for c, n in info["class_counts"].items()) or "flat"
        lines.append(f"| {name} | `{info['dir']}` | {info['n_images']} | {classes} |")
    settings = record["settings"]
    kid = settings["feature_space"]["kid"]
    lines += ["", "## Metrics", "", metrics_table(record), "",
              f"k-NN metrics use k={settings['feature_space']['k_nearest_neighbours']}; KID uses "
              f"{kid['subsets']} subsets of {kid['subset_size']} ({kid['kernel']}).",
              f"MS-SSIM settings: {_ms_ssim_text(settings['pixel']['ms_ssim'])}.",
              f"Resize mode: {settings['resize_mode']}; seed {settings['seed']}; max images per set "
              f"{settings['max_images']}.", "", "## Memorisation", ""]
    lines += _memorisation_md(record["memorisation"])
    return "\n".join(lines) + "\n"


def write_reports(record: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "evaluation.json", out_dir / "evaluation.md"
    json_path.write_text(json.dumps(json_safe(record), indent=2, allow_nan=False) + "\n")
    md_path.write_text(markdown(record))
    return json_path, md_path
