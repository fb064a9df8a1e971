"""A synthmed latent diffusion model as a folder of diffusers' own `DiTPipeline`.

`DiTPipeline` (diffusers' class-conditional latent pipeline; components `transformer`, `vae`,
`scheduler`, plus `id2label`) loads with plain `DiffusionPipeline.from_pretrained(folder)`, no
`trust_remote_code`, and its loop is synthmed's sampler (`reverse_diffusion` +
`DiffusionModule.sample`) step for step, so a folder of it reproduces `synthmed predict`:

* initial noise: `randn_tensor((n, C, S, S), generator)` with one generator per image, as
  synthmed draws it (`init_noise_sigma` is 1.0 for DDIM, DDPM and DPM-Solver++);
* the denoiser call `transformer(x, timestep=t, class_labels=y).sample` is `UNet2DModel`'s
  forward, so our U-Net sits in the `transformer` slot (diffusers checks the slot's type
  annotation and logs "Expected types for transformer: (DiTTransformer2DModel,), got UNet2DModel":
  an annotation check only, nothing is converted);
* classifier-free guidance when `guidance_scale > 1`: `uncond + g * (cond - uncond)` on a
  [cond, null] batch, the null label hard-coded as 1000. The exported U-Net therefore gets a class
  embedding of 1001 rows: rows 0..K-1 are the K classes, every other row (K..1000) is synthmed's
  null row, so label 1000, like any label >= K in synthmed, draws unconditionally. An
  unconditional model gets an all-zero embedding: adding 0 to the time embedding changes nothing;
* `scheduler.step(out, t, x)` gets no generator and no eta: exact for the deterministic samplers
  (DDIM with eta = 0, DPM-Solver++(2M)); a DDPM sampler's step noise (and DDIM eta > 0) then
  comes from torch's global RNG, not the per-image seeds (the model card says so);
* decode: `vae.decode(1 / scaling_factor * x)` (the AutoencoderKL's `scaling_factor` is the latent
  scale; synthmed's `LatentDiffusionModule.decode_samples` multiplies by the same reciprocal) and
  `(x / 2 + 0.5).clamp(0, 1)`, bit-equal to synthmed's `(x.clamp(-1, 1) + 1) / 2`.

Differences a caller must know: `guidance_scale` and `num_inference_steps` have DiT's defaults
(4.0, 50), not the model's, so pass them; a scale below 1 means "no guidance" to DiT, while
synthmed extrapolates towards the null class.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
from diffusers import DiTPipeline, UNet2DModel

DIT_NULL_CLASS = 1000  # DiTPipeline.__call__'s hard-coded null label (ImageNet's 1000 classes)

DIT_SNIPPET = """import torch
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained("{out}")  # a DiTPipeline; no trust_remote_code needed
labels = {labels}              # class indices; pipe.get_label_ids({names}) maps names; 1000 = unconditional
generator = [torch.Generator().manual_seed(s) for s in range(len(labels))]  # one seed per image
# pass the model's guidance and steps: DiTPipeline's own defaults (4.0, 50) are not this model's
images = pipe(class_labels=labels, guidance_scale={guidance}, num_inference_steps={steps}, generator=generator).images
# another sampler on the same betas, e.g. DPM-Solver++:
# from diffusers import DPMSolverMultistepScheduler
# pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type="dpmsolver++")
"""

DIT_UNCONDITIONAL_SNIPPET = """import torch
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained("{out}")  # a DiTPipeline; no trust_remote_code needed
n = 4                          # an unconditional model: any labels (its class embedding is zero), no guidance
generator = [torch.Generator().manual_seed(s) for s in range(n)]  # one seed per image
images = pipe(class_labels=[0] * n, guidance_scale=1.0, num_inference_steps={steps}, generator=generator).images
"""


def dit_snippet(out: Path, info: dict[str, Any]) -> str:
    """The model card's loading code for a DiTPipeline folder."""
    if info["null_class"] is None:
        return DIT_UNCONDITIONAL_SNIPPET.format(out=out, steps=info["num_inference_steps"])
    names = info["class_names"]
    return DIT_SNIPPET.format(out=out, labels=list(range(len(names))), names=list(names[:2]),
                              guidance=info["guidance_scale"], steps=info["num_inference_steps"])


def dit_unfit_reason(state: dict[str, Any], unet: torch.nn.Module) -> str | None:
    """Why this model cannot be a DiTPipeline folder, or None when it can."""
    if state["module"] != "LatentDiffusionModule":
        return "DiTPipeline decodes with a VAE; a pixel model has none"
    if state["conditioning"] not in ("none", "class"):
        return f"DiTPipeline conditions on class labels only, not {state['conditioning']!r}"
    if type(unet) is not UNet2DModel:
        return f"DiTPipeline's slot needs a diffusers model; {type(unet).__name__} is synthmed's own"
    channels, height, width = state["sample_shape"]
    if not (height == width == unet.config.sample_size):
        return f"DiTPipeline draws square {unet.config.sample_size}-px latents; this model's are {height}x{width}"
    if state["conditioning"] == "class" and state["num_classes"] >= DIT_NULL_CLASS:
        return f"DiTPipeline's null label is {DIT_NULL_CLASS}; this model has {state['num_classes']} classes"
    return None


def dit_denoiser(unet: UNet2DModel, num_classes: int | None) -> UNet2DModel:
    """`unet` with a 1001-row class embedding: the K classes, then synthmed's null row (zeros if unconditional)."""
    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    weights = dict(unet.state_dict())
    old = weights.get("class_embedding.weight")
    dim = unet.time_embedding.linear_2.out_features
    if old is None:  # unconditional: a zero embedding, so emb + class_emb == emb bit for bit
        table = torch.zeros(DIT_NULL_CLASS + 1, dim, dtype=unet.dtype)
    else:  # old has num_classes + 1 rows, the last one the null class
        table = old[num_classes].repeat(DIT_NULL_CLASS + 1, 1)
        table[:num_classes] = old[:num_classes]
    weights["class_embedding.weight"] = table
    config.update(num_class_embeds=DIT_NULL_CLASS + 1, class_embed_type=None)
    out = UNet2DModel.from_config(config)
    out.load_state_dict(weights)
    return out


def write_dit_pipeline(out: Path, unet: UNet2DModel, vae, scheduler, class_names: Sequence[str],
                       num_classes: int | None) -> None:
    """Save a DiTPipeline folder; `id2label` goes into model_index.json (DiTPipeline does not record it).

    JSON keys are strings, so diffusers logs "Expected types for id2label" on load (as for the Hub's
    DiT folders); DiTPipeline converts them with int(). An unconditional model gets no id2label.
    """
    DiTPipeline(transformer=dit_denoiser(unet, num_classes), vae=vae, scheduler=scheduler).save_pretrained(out)
    if class_names:
        index_path = out / "model_index.json"
        index = json.loads(index_path.read_text())
        index["id2label"] = {str(i): name for i, name in enumerate(class_names)}
        index_path.write_text(json.dumps(index, indent=2) + "\n")


def dit_notes(info: dict[str, Any], eta: float) -> list[str]:
    """Model-card lines on how this DiTPipeline folder relates to synthmed's sampler."""
    conditional = info["null_class"] is not None
    notes = [
        "This folder is diffusers' own `DiTPipeline`: `DiffusionPipeline.from_pretrained(folder)` loads it "
        "offline with diffusers alone. Its `transformer` is synthmed's `UNet2DModel` (DiTPipeline only calls "
        "`transformer(x, timestep=t, class_labels=y).sample`, which UNet2DModel's forward accepts), so diffusers "
        "logs `Expected types for transformer: (DiTTransformer2DModel,), got UNet2DModel`: a check of the type "
        "annotation only, harmless here. It also logs `Expected types for id2label: (dict[int, str], ...), got "
        "typing.Dict[str, str]`: JSON keys are strings, DiTPipeline turns them into ints (`pipe.labels`, "
        "`pipe.get_label_ids`), as for every DiT folder on the Hub. Without the `accelerate` package diffusers "
        "also says it falls back to `low_cpu_mem_usage=False`; harmless.",
        f"The class embedding has {DIT_NULL_CLASS + 1} rows because DiTPipeline's null label is {DIT_NULL_CLASS}: "
        + (f"rows 0..{info['null_class'] - 1} are the classes and rows {info['null_class']}..{DIT_NULL_CLASS} all "
           f"hold synthmed's null class (index {info['null_class']} in `synthmed.json`)." if conditional else
           "all zero, since the model is unconditional (pass any labels, e.g. `[0] * n`, and guidance 1.0)."),
        "Pass `guidance_scale` and `num_inference_steps`: DiTPipeline's defaults (4.0, 50) are not this "
        "model's. DiTPipeline guides only when `guidance_scale > 1` (`uncond + g * (cond - uncond)`, as synthmed).",
    ]
    if info["sampler"] == "ddpm" or eta != 0.0:
        notes.append(
            f"This model samples with {info['sampler']}{f' (eta {eta:g})' if eta else ''} in synthmed. DiTPipeline "
            "passes no generator (and no eta) to `scheduler.step`, so the step noise comes from torch's global RNG "
            "and the images are not `synthmed predict`'s for the same seeds; with a deterministic scheduler (DDIM, "
            "eta 0, or DPM-Solver++) they are.")
    else:
        notes.append("For the same seeds (one generator per image), labels, guidance and steps it gives the images "
                     "`synthmed predict` writes, pixel for pixel (`synthmed predict` seeds image i of class c with "
                     "`datamodules.generation.request_seed(seed, c, i)`).")
    if conditional and info["guidance_scale"] < 1.0:
        notes.append(f"This model's guidance scale {info['guidance_scale']:g} is below 1: synthmed extrapolates towards "
                     "the null class there, DiTPipeline does not guide at all, so their images differ.")
    return notes
