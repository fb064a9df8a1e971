"""The model card (README.md with Hugging Face YAML metadata) of an exported diffusion model.

What it states comes from the checkpoint (module, classes, schedule, sampler, optimizer steps)
and, when the checkpoint lies in a run directory, from that run (`config.yaml`: the training data;
`metrics.json`: the run's final metrics). Nothing is invented: a fact that is not recorded is
written as "not recorded".
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from synthmed.runs import read_config, read_metrics, run_dir_of_checkpoint, is_finished

NOT_RECORDED = "not recorded"


def _yaml_list(values: list[str]) -> str:
    return "\n".join(f"- {v}" for v in values)


def _data_lines(config: dict[str, Any]) -> list[str]:
    data = config.get("data") or {}
    if not data:
        return [f"- training data: {NOT_RECORDED} (the checkpoint was not in a run directory with config.yaml)"]
    args = data.get("init_args", data) if isinstance(data, dict) else {}
    lines = [f"- DataModule: `{data.get('class_path', NOT_RECORDED)}`"]
    for key in ("root", "dataset", "data_dir", "name", "image_size", "channels", "val_fraction", "test_fraction"):
        if isinstance(args, dict) and args.get(key) is not None:
            lines.append(f"- {key}: `{args[key]}`")
    return lines


def _metric_lines(run_dir: Path | None) -> list[str]:
    if run_dir is None or not is_finished(run_dir):
        return [f"- {NOT_RECORDED} (no finished run directory with metrics.json next to the checkpoint)"]
    rows = []
    for key, value in read_metrics(run_dir).items():
        if key.startswith("_"):
            continue
        if isinstance(value, float) and math.isfinite(value):
            rows.append(f"| `{key}` | {value:.4g} |")
        elif isinstance(value, (int, str)):
            rows.append(f"| `{key}` | {value} |")
    if not rows:
        return ["- metrics.json holds no scalar metrics"]
    return ["| metric | value |", "|---|---|", *rows,
            "", f"From `{run_dir / 'metrics.json'}`. Image-quality metrics (KID, FID, precision/recall, copy "
                "audit) come from `synthmed evaluate` on a synthetic set, not from this training run."]


def model_card(*, name: str, info: dict[str, Any], ckpt: Path, checkpoint_meta: dict[str, Any],
               hparams: dict[str, Any], pipeline: str, load_snippet: str, license: str = "other",
               loading_notes: list[str] | None = None) -> str:
    """The README.md text for an export folder (see the module docstring).

    `loading_notes`: what a user of this folder's pipeline class must know (how it loads, the
    warnings diffusers prints, where its images equal synthmed's), listed under the snippet.
    """
    run_dir = run_dir_of_checkpoint(ckpt)
    config = read_config(run_dir) if run_dir is not None else {}
    latent = info["module"] == "LatentDiffusionModule"
    classes = info.get("class_names") or []
    tags = ["synthmed", "diffusion", "medical-imaging", "synthetic-data",
            "latent-diffusion" if latent else "pixel-diffusion",
            "class-conditional" if info["conditioning"] != "none" else "unconditional"]
    front = "\n".join([
        "---", "library_name: diffusers", f"license: {license}",
        "pipeline_tag: unconditional-image-generation",  # the Hub has no class-conditional task; DiT uses this one
        "tags:", _yaml_list(tags), "---",
    ])
    schedule = info["noise_schedule"]
    lines = [
        front, "",
        f"# {name}", "",
        f"A {'latent' if latent else 'pixel'}-space diffusion model trained with "
        f"synthmed ({info['module']}, {info['conditioning']} conditioning), exported as a "
        f"diffusers `{pipeline}` folder.", "",
        "**Not for clinical use.** The images are synthetic. They must not be used to diagnose, treat or "
        "make any decision about a patient, nor be presented as real patient images.", "",
        "## Use", "", "```python", load_snippet.strip(), "```", "",
        *[f"- {note}" for note in loading_notes or []], *([""] if loading_notes else []),
        "## Intended use", "",
        "Research on synthetic training data for medical image classifiers (train on synthetic, test on "
        "real; augmentation), method development and teaching. Out of scope: clinical use of any kind, "
        "claims about real patients, and re-identification. A model trained on few images can reproduce "
        "training images: audit a synthetic set (`synthmed evaluate`'s copy detector) before sharing it.", "",
        "## Model", "",
        f"- classes ({len(classes)}): {', '.join(f'`{c}`' for c in classes) or 'none'}"
        + (f"; null (unconditional) class index {info['null_class']}" if info.get("null_class") is not None else "")
        + (f" ({info['diffusers_null_class']} in this folder's {pipeline})"
           if info.get("diffusers_null_class") not in (None, info.get("null_class")) else ""),
        f"- sample shape (C, H, W) of the denoised space: {tuple(info['sample_shape'])}"
        + (f", latent scale {info['latent_scale']:.6g}" if latent and info.get("latent_scale") else ""),
        f"- noise schedule: {schedule['name']}, T={schedule['num_train_timesteps']}, "
        f"beta {schedule['beta_start']:g}..{schedule['beta_end']:g}; prediction type {info['prediction_type']}",
        f"- default sampler: {hparams.get('sampler', NOT_RECORDED)}, {info.get('num_inference_steps')} steps, "
        f"guidance scale {info.get('guidance_scale')}",
        "",
        "## Training", "",
        f"- optimizer steps: {checkpoint_meta.get('global_step', NOT_RECORDED)}, "
        f"epochs completed: {checkpoint_meta.get('epoch', NOT_RECORDED)}",
        f"- loss: {hparams.get('loss', NOT_RECORDED)}; conditioning dropout (CFG) {hparams.get('uncond_prob', NOT_RECORDED)}",
        f"- source checkpoint: `{ckpt}`" + (f" (run directory `{run_dir}`)" if run_dir is not None else ""),
        *_data_lines(config), "",
        "## Metrics", "", *_metric_lines(run_dir), "",
        "## Files", "",
        "`model_index.json` and one folder per component (diffusers layout); `synthmed.json` holds what "
        "synthmed knows about the model (classes, null class, schedule, latent scale).", "",
    ]
    return "\n".join(lines)
