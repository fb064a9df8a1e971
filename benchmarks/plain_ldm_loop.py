"""The reference side of the LDM benchmark: a plain PyTorch + diffusers training loop (no Lightning).

It does, per step, the same work as `LatentDiffusionModule` with the quickstart settings:
sample z from the cached posterior (mean, std) of the frozen autoencoder, scale it, replace 15 %
of the class labels by the null class (classifier-free guidance), noise at a random t, predict
v with the same diffusers `UNet2DModel`, min-SNR-gamma weighted L2, AdamW with linear LR
warm-up, and from step `ema_start` an EMA of the U-Net weights with diffusers' `EMAModel` (as
diffusers' own train_unconditional.py does). The latents are computed once before the loop
and held in memory; nothing here is timed but the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_constant_schedule_with_warmup
from diffusers.training_utils import EMAModel

from benchmarks.common import autocast
from benchmarks.timing import StepLog


@dataclass
class PlainLoopSettings:
    """What the loop needs from the experiment YAML (see `from_ldm_yaml`)."""

    unet: dict[str, Any]
    num_classes: int
    batch_size: int
    lr: float
    warmup_steps: int
    uncond_prob: float
    snr_gamma: float | None
    prediction_type: str
    ema_decay: float
    ema_start: int
    schedule: dict[str, Any]  # the model's noise_schedule init_args

    @classmethod
    def from_ldm_yaml(cls, model: dict[str, Any], schedule: dict[str, Any], ema: dict[str, Any],
                      num_classes: int, batch_size: int) -> "PlainLoopSettings":
        if model.get("prediction_type") not in ("epsilon", "v_prediction"):
            raise SystemExit(f"the plain loop mirrors epsilon / v_prediction, not {model.get('prediction_type')!r}")
        return cls(unet={k: v for k, v in model["unet"].items() if k != "type"}, num_classes=num_classes,
                   batch_size=batch_size,
                   lr=float(((model.get("optimizer") or {}).get("init_args") or {}).get("lr", 2e-4)),
                   warmup_steps=int(((model.get("lr_scheduler") or {}).get("init_args") or {}).get("warmup_steps", 0)), uncond_prob=float(model.get("uncond_prob", 0.1)),
                   snr_gamma=model.get("snr_gamma"), prediction_type=model["prediction_type"],
                   ema_decay=float(ema.get("decay", 0.999)), ema_start=int(ema.get("update_starting_at_step", 100)),
                   schedule=schedule)


@torch.no_grad()
def encode_posteriors(vae, images_uint8, device: torch.device, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of the autoencoder posterior of every image (uint8 N x C x H x W): the latent cache."""
    vae = vae.to(device).eval()
    means, stds = [], []
    for start in range(0, len(images_uint8), chunk):
        x = torch.from_numpy(images_uint8[start:start + chunk]).to(device).float().div(127.5).sub(1.0)
        dist = vae.encode(x).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def build_unet(settings: PlainLoopSettings, latent_channels: int, latent_size: int) -> UNet2DModel:
    config = dict(settings.unet)
    for key in ("block_out_channels", "down_block_types", "up_block_types"):
        config[key] = tuple(config[key])
    return UNet2DModel(in_channels=latent_channels, out_channels=latent_channels, sample_size=latent_size,
                       num_class_embeds=settings.num_classes + 1, **config)  # + the null class


def run_plain_loop(settings: PlainLoopSettings, mean: torch.Tensor, std: torch.Tensor, labels: torch.Tensor,
                   total_steps: int, device: torch.device, precision: str, seed: int) -> StepLog:
    """Train for `total_steps` optimizer steps; return the step clock."""
    torch.manual_seed(seed)
    unet = build_unet(settings, mean.shape[1], mean.shape[2]).to(device).train()
    s = settings.schedule
    scheduler = DDPMScheduler(num_train_timesteps=int(s.get("num_train_timesteps", 1000)),
                              beta_start=float(s.get("beta_start", 1e-4)), beta_end=float(s.get("beta_end", 0.02)),
                              beta_schedule={"cosine": "squaredcos_cap_v2"}.get(s.get("name", "linear"),
                                                                                 s.get("name", "linear")),
                              prediction_type=settings.prediction_type)
    alphas_cumprod = scheduler.alphas_cumprod.to(device)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=settings.lr, weight_decay=0.0)
    lr_schedule = get_constant_schedule_with_warmup(optimizer, num_warmup_steps=settings.warmup_steps)
    ema = EMAModel(unet.parameters(), decay=settings.ema_decay)
    ema.to(device)
    mean, std, labels = mean.to(device), std.to(device), labels.to(device)
    scale = float(1.0 / (mean + std * torch.randn_like(mean)).std())  # synthmed: 1 / std of the latents
    num_timesteps, null_class, n = scheduler.config.num_train_timesteps, settings.num_classes, len(mean)
    clock = StepLog(device=device)
    step = 0
    while step < total_steps:
        order = torch.randperm(n, device=device)
        for start in range(0, n, settings.batch_size):
            if step >= total_steps:
                break
            idx = order[start:start + settings.batch_size]
            b = len(idx)
            with autocast(device, precision):
                z = (mean[idx] + std[idx] * torch.randn_like(mean[idx])) * scale
                drop = torch.rand(b, device=device) < settings.uncond_prob
                class_labels = torch.where(drop, torch.full_like(labels[idx], null_class), labels[idx])
                noise = torch.randn_like(z)
                t = torch.randint(0, num_timesteps, (b,), device=device)
                x_t = scheduler.add_noise(z, noise, t)
                target = scheduler.get_velocity(z, noise, t) if settings.prediction_type == "v_prediction" else noise
                pred = unet(x_t, t, class_labels=class_labels).sample
                per_sample = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
                snr = alphas_cumprod[t] / (1.0 - alphas_cumprod[t])
                if settings.snr_gamma is None:
                    weight = torch.ones_like(snr)
                else:
                    clipped = snr.clamp(max=float(settings.snr_gamma))
                    weight = clipped / (snr + 1.0) if settings.prediction_type == "v_prediction" else clipped / snr
                loss = (weight * per_sample).mean()
            loss.backward()
            optimizer.step()
            lr_schedule.step()
            optimizer.zero_grad(set_to_none=True)
            if step >= settings.ema_start:
                ema.step(unet.parameters())
            step += 1
            clock.step_done(b)
    return clock
