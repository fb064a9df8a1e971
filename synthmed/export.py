"""`synthmed export --ckpt C --out DIR`: a diffusion checkpoint as diffusers folders.

* Pixel model -> a `DDPMPipeline` folder (`model_index.json`, `unet/`, `scheduler/`) that
  `diffusers.DDPMPipeline.from_pretrained(DIR)` and `DDIMPipeline.from_pretrained(DIR)` load;
  an unconditional model gives the same image there as `synthmed`'s sampler for the same seed.
* Latent model -> `unet/`, `vae/` (its `scaling_factor` is the latent scale), `scheduler/`.

Both get `synthmed.json` (classes, conditioning, null class, latent scale) and a README.md with
a loading snippet. Only the checkpoint is read (weights as saved: the EMA ones when EMA was
on); the training data and the autoencoder checkpoint are not needed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDPMPipeline

from lightning_modules.checkpoint_io import load_checkpoint, require_module_checkpoint
from lightning_modules.diffusion_base import CHECKPOINT_KEY
from lightning_modules.nets.schedules import NoiseSchedule, build_scheduler
from lightning_modules.nets.unets import UNET_TYPES

EXPECTED = "a checkpoint of a synthmed Pixel/LatentDiffusionModule run (its checkpoints/*.ckpt)"

PIXEL_README = """# {name}: synthmed pixel diffusion model ({module})

```python
import torch
from diffusers import DDPMPipeline, DDIMPipeline
pipe = DDPMPipeline.from_pretrained("{out}")            # ancestral, all {T} steps
images = pipe(batch_size=4, generator=torch.Generator().manual_seed(0)).images
fast = DDIMPipeline.from_pretrained("{out}")            # DDIM
images = fast(batch_size=4, num_inference_steps=20, eta=0.0, generator=torch.Generator().manual_seed(0)).images
```
{conditioning_note}
Noise schedule: {schedule}. Prediction type: {prediction_type}. Classes: {classes}.
"""

LATENT_README = """# {name}: synthmed latent diffusion model ({module})

```python
import json, torch
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
```
Conditioning: {conditioning}. Classes: {classes}. Noise schedule: {schedule}. Latent scale {latent_scale}.
{text_note}
"""


def _load(ckpt: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    checkpoint = load_checkpoint(ckpt, "--ckpt", expected=EXPECTED)
    checkpoint = require_module_checkpoint(checkpoint, ckpt, "--ckpt", CHECKPOINT_KEY, EXPECTED)
    return checkpoint[CHECKPOINT_KEY], checkpoint["state_dict"], checkpoint.get("hyper_parameters", {})


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


def export_checkpoint(ckpt: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write the diffusers folder for `ckpt` into `out` (see the module docstring)."""
    ckpt, out = Path(ckpt), Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"--out {out} exists and is not empty; choose a new folder or pass --overwrite")
    state, weights, hparams = _load(ckpt)
    out.mkdir(parents=True, exist_ok=True)
    unet = _unet(state, weights)
    schedule = NoiseSchedule.from_dict(state["noise_schedule"])
    classes = state.get("class_names") or []
    info = {
        "module": state["module"], "conditioning": state["conditioning"], "class_names": classes,
        "null_class": state["num_classes"] if state["conditioning"] == "class" else None,
        "sample_shape": state["sample_shape"], "prediction_type": state["prediction_type"],
        "noise_schedule": schedule.to_dict(), "guidance_scale": hparams.get("guidance_scale"),
        "latent_scale": state.get("latent_scale"), "source_checkpoint": str(ckpt),
    }
    if state["module"] == "PixelDiffusionModule":
        DDPMPipeline(unet=unet, scheduler=_scheduler(state, "ddpm")).save_pretrained(out)
        note = ("" if state["conditioning"] == "none" else
                f"\nThis model is {state['conditioning']}-conditional: diffusers' DDPMPipeline cannot pass "
                "class labels, so call the U-Net yourself as in the latent snippet of synthmed's README.\n")
        readme = PIXEL_README.format(name=out.name, module=state["module"], out=out,
                                     T=schedule.num_train_timesteps, conditioning_note=note, schedule=schedule,
                                     prediction_type=state["prediction_type"], classes=classes)
    elif state["module"] == "LatentDiffusionModule":
        unet.save_pretrained(out / "unet")
        vae = AutoencoderKL.from_config(state["vae_config"])
        vae.load_state_dict(_submodule(weights, "vae."))
        vae.register_to_config(scaling_factor=float(state["latent_scale"]))
        vae.save_pretrained(out / "vae")
        _scheduler(state, "ddpm").save_pretrained(out / "scheduler")
        text_note = ""
        if state["conditioning"] == "text":
            text_weights = _submodule(weights, "text_encoder.")
            torch.save(text_weights, out / "synthmed_text_encoder.pt")
            info["text_encoder"] = hparams.get("text_encoder")
            text_note = ("Text conditioning: encoder_hidden_states come from synthmed's text encoder "
                         "(`lightning_modules.nets.text.build_text_encoder(**info['text_encoder'])`, weights in "
                         "synthmed_text_encoder.pt); pass them to the UNet2DConditionModel instead of class_labels.")
        readme = LATENT_README.format(name=out.name, module=state["module"], out=out,
                                      unet_class=type(unet).__name__, guidance=hparams.get("guidance_scale", 1.0),
                                      conditioning=state["conditioning"], classes=classes, schedule=schedule,
                                      latent_scale=state["latent_scale"], text_note=text_note)
    else:
        raise ValueError(f"cannot export a {state['module']} checkpoint")
    (out / "synthmed.json").write_text(json.dumps(info, indent=2))
    (out / "README.md").write_text(readme)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="synthmed export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint of a Pixel/LatentDiffusionModule run")
    parser.add_argument("--out", required=True, help="new folder for the diffusers files")
    parser.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out")
    args = parser.parse_args(argv)
    try:
        out = export_checkpoint(args.ckpt, args.out, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"synthmed export: {err}", file=sys.stderr)
        return 2
    print(f"out: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
