"""`synthmed export --ckpt C --out DIR`: a diffusion checkpoint as a complete diffusers folder.

* Latent model, class-conditional or unconditional (a diffusers `UNet2DModel`, square latents,
  < 1000 classes: every model synthmed's configs build) -> a folder of diffusers' own
  `DiTPipeline` (`model_index.json`, `transformer/` = the U-Net with a 1001-row class embedding,
  `vae/` with the latent scale as `scaling_factor`, `scheduler/` = the model's sampler, `id2label`)
  that plain `DiffusionPipeline.from_pretrained(DIR)` loads offline; for the same seeds, labels,
  guidance and steps it gives the images `synthmed predict` writes (deterministic samplers; see
  synthmed/dit_export.py for the fit, step by step, and its limits).
* Unconditional pixel model -> a `DDPMPipeline` folder (`model_index.json`, `unet/`,
  `scheduler/`) that `DiffusionPipeline.from_pretrained(DIR)`, `DDPMPipeline` and `DDIMPipeline`
  load with diffusers' own classes; it gives the same image as synthmed's sampler for the same seed.
* Class-conditional pixel model (diffusers has no class-conditional pixel pipeline) and a latent
  model DiT cannot hold -> a `SynthmedDiffusionPipeline` folder: `model_index.json`, `unet/`,
  `vae/` (latent only), `scheduler/` and `synthmed_pipeline.py` (a verbatim copy of
  `synthmed/diffusers_pipeline.py`, which imports only torch and diffusers).
  `DiffusionPipeline.from_pretrained(DIR, trust_remote_code=True)` loads it offline with diffusers
  alone: diffusers runs a pipeline class of its own only, and code from a folder only with that
  flag (see synthmed/diffusers_pipeline.py). For the same seeds, labels and steps it gives the
  images `synthmed predict` writes.
* Text-conditional latent model -> the parts (`unet/`, `vae/`, `scheduler/`, the text encoder's
  weights) with a loading snippet; no pipeline class covers synthmed's text encoder yet.

Every folder gets `synthmed.json` (classes, conditioning, null class, latent scale, pipeline) and a
model card README.md (YAML metadata; data, steps and metrics from the checkpoint's run directory;
intended use; not for clinical use; how this folder loads). Only the checkpoint (and its run
directory's config.yaml / metrics.json, when there) is read: weights as saved (the EMA ones when
EMA was on); the training data and the autoencoder checkpoint are not needed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDPMPipeline

import synthmed.diffusers_pipeline as pipeline_source
from lightning_modules.checkpoint_io import load_checkpoint, require_module_checkpoint
from lightning_modules.diffusion_base import CHECKPOINT_KEY
from lightning_modules.nets.schedules import NoiseSchedule, build_scheduler
from lightning_modules.nets.unets import UNET_TYPES
from synthmed.diffusers_pipeline import SynthmedDiffusionPipeline
from synthmed.dit_export import DIT_NULL_CLASS, dit_notes, dit_snippet, dit_unfit_reason, write_dit_pipeline
from synthmed.model_card import model_card

EXPECTED = "a checkpoint of a synthmed Pixel/LatentDiffusionModule run (its checkpoints/*.ckpt)"
PIPELINE_FILE = "synthmed_pipeline"  # <out>/synthmed_pipeline.py, named in model_index.json's _class_name

PIPELINE_SNIPPET = """import torch
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained("{out}", trust_remote_code=True)  # runs {file}.py from this folder
labels = {labels}                      # class indices or names; None = unconditional (null class)
generator = [torch.Generator().manual_seed(s) for s in range(len(labels))]  # one seed per image
images = pipe(class_labels=labels, num_inference_steps={steps}, guidance_scale={guidance}, generator=generator).images
# another sampler on the same betas, e.g. DPM-Solver++:
# from diffusers import DPMSolverMultistepScheduler
# pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type="dpmsolver++")
"""

PIXEL_SNIPPET = """import torch
from diffusers import DDPMPipeline, DDIMPipeline
pipe = DDPMPipeline.from_pretrained("{out}")            # ancestral, all {T} steps
images = pipe(batch_size=4, generator=torch.Generator().manual_seed(0)).images
fast = DDIMPipeline.from_pretrained("{out}")            # DDIM
images = fast(batch_size=4, num_inference_steps=20, eta=0.0, generator=torch.Generator().manual_seed(0)).images
"""

TEXT_LATENT_SNIPPET = """import json, torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DModel
root = "{out}"
unet = UNet2DModel.from_pretrained(root, subfolder="unet")   # {unet_class} for this model
vae = AutoencoderKL.from_pretrained(root, subfolder="vae")
scheduler = DDIMScheduler.from_pretrained(root, subfolder="scheduler")
info = json.load(open(f"{{root}}/synthmed.json"))
labels = torch.tensor([0, 1, 2])                              # class indices; info["null_class"] = unconditional
scale = {guidance}                                            # classifier-free guidance
g = torch.Generator().manual_seed(0)
x = torch.randn((len(labels), *info["sample_shape"]), generator=g)
scheduler.set_timesteps(20)
with torch.no_grad():
    for t in scheduler.timesteps:
        both = unet(torch.cat([x, x]), t, class_labels=torch.cat([labels, torch.full_like(labels, info["null_class"])])).sample
        cond, uncond = both.chunk(2)
        x = scheduler.step(uncond + scale * (cond - uncond), t, x, generator=g).prev_sample
    images = vae.decode(x / vae.config.scaling_factor).sample   # in [-1, 1]
# {text_note}
"""


def _load(ckpt: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    checkpoint = load_checkpoint(ckpt, "--ckpt", expected=EXPECTED)
    checkpoint = require_module_checkpoint(checkpoint, ckpt, "--ckpt", CHECKPOINT_KEY, EXPECTED)
    meta = {k: checkpoint[k] for k in ("global_step", "epoch") if k in checkpoint}
    return checkpoint[CHECKPOINT_KEY], checkpoint["state_dict"], checkpoint.get("hyper_parameters", {}), meta


def _submodule(weights: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}


def _unet(state: dict[str, Any], weights: dict[str, torch.Tensor]):
    cls = UNET_TYPES[state["unet_type"]]
    config = {k: v for k, v in state["unet_config"].items() if not k.startswith("_")}
    unet = cls.from_config(config)
    unet.load_state_dict(_submodule(weights, "unet."))
    return unet


def _scheduler(state: dict[str, Any], sampler: str):
    return build_scheduler(sampler, NoiseSchedule.from_dict(state["noise_schedule"]),
                           prediction_type=state["prediction_type"], clip_sample=state["clip_sample"],
                           timestep_spacing=state["timestep_spacing"])


def _vae(state: dict[str, Any], weights: dict[str, torch.Tensor]) -> AutoencoderKL:
    vae = AutoencoderKL.from_config(state["vae_config"])
    vae.load_state_dict(_submodule(weights, "vae."))
    vae.register_to_config(scaling_factor=float(state["latent_scale"]))
    return vae


def _write_pipeline(out: Path, unet, scheduler, vae, info: dict[str, Any], steps: int) -> None:
    """Save a SynthmedDiffusionPipeline folder whose model_index.json points at the copied source."""
    pipe = SynthmedDiffusionPipeline(unet=unet, scheduler=scheduler, vae=vae, class_names=info["class_names"],
                                     null_class=info["null_class"], sample_shape=info["sample_shape"],
                                     guidance_scale=info["guidance_scale"], num_inference_steps=steps)
    pipe.save_pretrained(out)
    shutil.copyfile(pipeline_source.__file__, out / f"{PIPELINE_FILE}.py")
    index_path = out / "model_index.json"
    index = json.loads(index_path.read_text())
    index["_class_name"] = [PIPELINE_FILE, SynthmedDiffusionPipeline.__name__]
    index_path.write_text(json.dumps(index, indent=2) + "\n")


def export_checkpoint(ckpt: str | Path, out: str | Path, overwrite: bool = False, license: str = "other") -> Path:
    """Write the diffusers folder for `ckpt` into `out` (see the module docstring)."""
    ckpt, out = Path(ckpt), Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"--out {out} exists and is not empty; choose a new folder or pass --overwrite")
    state, weights, hparams, meta = _load(ckpt)
    if state["module"] not in ("PixelDiffusionModule", "LatentDiffusionModule"):
        raise ValueError(f"cannot export a {state['module']} checkpoint")
    out.mkdir(parents=True, exist_ok=True)
    unet = _unet(state, weights)
    schedule = NoiseSchedule.from_dict(state["noise_schedule"])
    classes = state.get("class_names") or []
    sampler = hparams.get("sampler", "ddim")
    steps = schedule.num_train_timesteps if sampler == "ddpm" else int(hparams.get("num_inference_steps", 20))
    guidance = float(hparams.get("guidance_scale", 1.0))
    info = {
        "module": state["module"], "conditioning": state["conditioning"], "class_names": classes,
        "null_class": state["num_classes"] if "class" in state["conditioning"] else None,
        "sample_shape": state["sample_shape"], "prediction_type": state["prediction_type"],
        "noise_schedule": schedule.to_dict(), "guidance_scale": guidance, "sampler": sampler,
        "num_inference_steps": steps, "latent_scale": state.get("latent_scale"), "source_checkpoint": str(ckpt),
    }
    latent = state["module"] == "LatentDiffusionModule"
    notes: list[str] = []
    unfit = dit_unfit_reason(state, unet)
    if unfit is None:
        pipeline = "DiTPipeline"
        write_dit_pipeline(out, unet, _vae(state, weights), _scheduler(state, sampler),
                           classes if info["null_class"] is not None else [], info["null_class"])
        info["diffusers_null_class"] = DIT_NULL_CLASS if info["null_class"] is not None else None
        snippet = dit_snippet(out, info)
        notes = dit_notes(info, eta=float(hparams.get("eta", 0.0)))
    elif not latent and state["conditioning"] == "none":
        pipeline = "DDPMPipeline"
        DDPMPipeline(unet=unet, scheduler=_scheduler(state, "ddpm")).save_pretrained(out)
        snippet = PIXEL_SNIPPET.format(out=out, T=schedule.num_train_timesteps)
    elif state["conditioning"] in ("none", "class"):
        pipeline = SynthmedDiffusionPipeline.__name__
        _write_pipeline(out, unet, _scheduler(state, sampler), _vae(state, weights) if latent else None, info, steps)
        labels = list(range(len(classes))) if classes else None
        snippet = PIPELINE_SNIPPET.format(out=out, file=PIPELINE_FILE, labels=labels if labels else "[None]",
                                          steps=steps, guidance=guidance)
        if labels is None:
            snippet = snippet.replace("class_labels=labels", "batch_size=4").replace("range(len(labels))", "range(4)")
        notes = [f"diffusers has no built-in pipeline for this model ({unfit}), so the folder ships its own "
                 f"class in `{PIPELINE_FILE}.py` (torch + diffusers only), which diffusers runs only with "
                 "`trust_remote_code=True`."]
    else:  # text conditioning: the parts and a hand loop (no pipeline class for synthmed's text encoder)
        pipeline = "parts (unet, vae, scheduler)"
        unet.save_pretrained(out / "unet")
        _vae(state, weights).save_pretrained(out / "vae")
        _scheduler(state, "ddpm").save_pretrained(out / "scheduler")
        torch.save(_submodule(weights, "text_encoder."), out / "synthmed_text_encoder.pt")
        info["text_encoder"] = hparams.get("text_encoder")
        text_note = ("Text conditioning: encoder_hidden_states come from synthmed's text encoder "
                     "(lightning_modules.nets.text.build_text_encoder(**info['text_encoder']), weights in "
                     "synthmed_text_encoder.pt); pass them to the UNet2DConditionModel instead of class_labels.")
        snippet = TEXT_LATENT_SNIPPET.format(out=out, unet_class=type(unet).__name__, guidance=guidance, text_note=text_note)
    info["pipeline"] = pipeline
    (out / "synthmed.json").write_text(json.dumps(info, indent=2))
    (out / "README.md").write_text(model_card(name=out.name, info=info, ckpt=ckpt, checkpoint_meta=meta,
                                              hparams=hparams, pipeline=pipeline, load_snippet=snippet,
                                              license=license, loading_notes=notes))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="synthmed export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint of a Pixel/LatentDiffusionModule run")
    parser.add_argument("--out", required=True, help="new folder for the diffusers files")
    parser.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out")
    parser.add_argument("--license", default="other",
                        help="the model card's license (a Hub license id; default 'other': the data's terms apply)")
    args = parser.parse_args(argv)
    try:
        out = export_checkpoint(args.ckpt, args.out, overwrite=args.overwrite, license=args.license)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"synthmed export: {err}", file=sys.stderr)
        return 2
    print(f"out: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
