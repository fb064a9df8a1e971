"""StableDiffusionFinetuneModule: fine-tune a local Stable Diffusion folder on image + caption data (seed 001).

The folder is a diffusers Stable Diffusion layout (`unet/`, `vae/`, `text_encoder/`,
`tokenizer/`, `scheduler/`), read from disk only. The U-Net is trained (optionally the text
encoder too); the VAE is frozen. Training, classifier-free guidance, DDIM/DDPM sampling,
checkpointing of the noise schedule and `predict` come from `DiffusionModule`; the schedule and
prediction type default to the folder's own scheduler config. Grayscale data is repeated to RGB
for the VAE and generated images are averaged back to one channel.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from lightning_modules.diffusion_base import DiffusionModule, PredictionType
from lightning_modules.nets.schedules import NoiseSchedule

# diffusers beta_schedule -> our schedule names
_FROM_DIFFUSERS = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine",
                   "sigmoid": "sigmoid"}


def read_scheduler_config(path: Path) -> dict[str, Any]:
    config_file = path / "scheduler" / "scheduler_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} is not a Stable Diffusion folder: {config_file} is missing "
                                "(expected unet/, vae/, text_encoder/, tokenizer/, scheduler/)")
    return json.loads(config_file.read_text())


class StableDiffusionFinetuneModule(DiffusionModule):
    """Fine-tunes UNet2DConditionModel (+ optionally the CLIP text encoder) of a local SD folder.

    Args:
        pretrained_path: local diffusers Stable Diffusion folder (nothing is downloaded).
        train_text_encoder: also train the CLIP text encoder (default: frozen).
        caption_template: used when a batch has no `caption`, e.g. "a brain MRI scan, {class_name}".
        in_channels / image_size / num_classes / class_names: linked from the data.
        prediction_type / noise_schedule: null = the folder's scheduler config.
        optimizer: null = AdamW(lr 1e-5, no weight decay).
        Other arguments: see DiffusionModule. `conditioning`, `text_encoder` and `unet` come from
        the folder (text conditioning, its CLIP text encoder and U-Net); setting them is an error.
    """

    default_clip_sample = False
    default_optimizer = {"lr": 1e-5, "weight_decay": 0.0}

    def __init__(self, pretrained_path: str, train_text_encoder: bool = False, caption_template: str | None = None,
                 in_channels: int = 3, image_size: int = 256, num_classes: int = 0,
                 class_names: list[str] | None = None, prediction_type: PredictionType | None = None,
                 noise_schedule: NoiseSchedule | None = None, guidance_scale: float = 7.5,
                 num_inference_steps: int = 30, conditioning: Literal["text"] = "text",
                 text_encoder: dict[str, Any] | None = None, unet: dict[str, Any] | None = None, **kwargs: Any):
        root = Path(pretrained_path)
        clip = {"kind": "clip", "path": str(root)}
        # the folder fixes these: refuse a config that sets them otherwise (they used to be dropped silently);
        # named in this signature so the CLI validates them and a checkpoint's saved values pass
        for key, given, fixed in (("conditioning", conditioning, "text"), ("text_encoder", text_encoder, clip),
                                  ("unet", unet, None)):
            if given is not None and given != fixed:
                raise ValueError(f"StableDiffusionFinetuneModule: model.init_args.{key}={given!r} cannot be set; "
                                 f"the Stable Diffusion folder {root} gives the U-Net and the CLIP text encoder, and "
                                 "conditioning is always 'text' (captions, or caption_template for class labels). "
                                 f"Remove `{key}:` from the YAML")
        scheduler_config = read_scheduler_config(root)
        # null = the folder's own scheduler config; resolved here and saved as the values in use
        prediction_type = prediction_type or scheduler_config.get("prediction_type", "epsilon")
        if isinstance(noise_schedule, dict):
            noise_schedule = NoiseSchedule.from_dict(noise_schedule)
        noise_schedule = noise_schedule or NoiseSchedule(
            _FROM_DIFFUSERS.get(scheduler_config.get("beta_schedule", "linear"), "linear"),
            int(scheduler_config.get("num_train_timesteps", 1000)),
            float(scheduler_config.get("beta_start", 1e-4)), float(scheduler_config.get("beta_end", 0.02)))
        super().__init__(conditioning="text", text_encoder=clip,
                         in_channels=in_channels, image_size=image_size, num_classes=num_classes,
                         class_names=class_names, prediction_type=prediction_type, noise_schedule=noise_schedule,
                         guidance_scale=guidance_scale, num_inference_steps=num_inference_steps, **kwargs)
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels={in_channels}: Stable Diffusion takes RGB (3) or grayscale (1) data")
        self.unet = UNet2DConditionModel.from_pretrained(str(root), subfolder="unet", local_files_only=True)
        self.vae = AutoencoderKL.from_pretrained(str(root), subfolder="vae", local_files_only=True)
        self.vae.requires_grad_(False).eval()
        if train_text_encoder:
            self.text_encoder.model.requires_grad_(True)
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        if image_size % factor:
            raise ValueError(f"image_size={image_size} is not divisible by the VAE factor {factor}")
        self._latent_shape = (self.unet.config.in_channels, image_size // factor, image_size // factor)
        self.latent_scale = float(self.vae.config.scaling_factor)

    def train(self, mode: bool = True):
        super().train(mode)
        self.vae.eval()
        if not self.hparams.train_text_encoder:
            self.text_encoder.eval()
        else:
            self.text_encoder.model.train(mode)
        return self

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return self._latent_shape

    def condition_inputs(self, labels, captions, drop=None):
        if captions is None and self.hparams.caption_template and labels is not None:
            names = self.hparams.class_names or []
            captions = [self.hparams.caption_template.format(class_name=names[int(i)] if 0 <= int(i) < len(names)
                                                             else "") for i in labels]
        if self.hparams.train_text_encoder and captions is not None:
            captions = ["" if drop is not None and bool(drop[i]) else c for i, c in enumerate(captions)]
            enc = self.text_encoder
            tokens = enc.tokenizer(list(captions), padding="max_length", truncation=True,
                                   max_length=enc.max_length, return_tensors="pt")
            return {"encoder_hidden_states": enc.model(tokens.input_ids.to(self.device))[0]}
        return super().condition_inputs(labels, captions, drop)

    def encode_images(self, batch: dict[str, Any]) -> torch.Tensor:
        images = batch["image"]
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        with torch.no_grad():
            latents = self.vae.encode(images).latent_dist.sample()
        # float32 even under bf16/16-mixed autocast: the noising arithmetic needs the precision
        return latents.float() * self.latent_scale

    def decode_samples(self, x: torch.Tensor) -> torch.Tensor:
        images = self.vae.decode(x / self.latent_scale).sample
        return images.mean(1, keepdim=True) if self.hparams.in_channels == 1 else images

    def export_state(self) -> dict[str, Any]:
        state = super().export_state()
        state.update(latent_scale=self.latent_scale, vae_config=dict(self.vae.config),
                     pretrained_path=self.hparams.pretrained_path)
        return state

    def save_pipeline(self, out: str | Path) -> Path:
        """Write the fine-tuned model as a diffusers StableDiffusionPipeline folder."""
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        scheduler = DDIMScheduler.from_config(self.make_scheduler("ddim").config)
        pipe = StableDiffusionPipeline(vae=self.vae, text_encoder=self.text_encoder.model,
                                       tokenizer=self.text_encoder.tokenizer, unet=self.unet, scheduler=scheduler,
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.save_pretrained(str(out))
        return Path(out)
