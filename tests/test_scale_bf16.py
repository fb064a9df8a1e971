"""One `precision="bf16-mixed"` training step (and one validation batch) of every LightningModule on the CPU.

Diffusion modules run with their EMA and noise-schedule callbacks, so dtype mix-ups between
autocast outputs, the EMA copy and the schedulers' float32 tables surface here.
"""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lightning_modules.callbacks.ema import EMA
from lightning_modules.callbacks.noise_schedule import NoiseScheduleCallback
from test_gen_helpers import CLASS_NAMES, TINY_UNET, build_tiny_sd, loader, trainer
from test_scale_resume import tiny_autoencoder


class LossRecorder(Callback):
    def __init__(self):
        self.losses: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].detach())


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("bf16")
    return {"ae": tiny_autoencoder(tmp), "sd": build_tiny_sd(tmp)}


def build(name: str, folders: dict):
    from lightning_modules.autoencoder import AutoencoderModule
    from lightning_modules.classifier import ClassifierModule
    from lightning_modules.diffusion import LatentDiffusionModule, PixelDiffusionModule
    from lightning_modules.stable_diffusion import StableDiffusionFinetuneModule
    from lightning_modules.nets.schedules import NoiseSchedule
    from lightning_modules.optim import adamw
    from test_gen_helpers import TINY_AE

    diffusion = dict(conditioning="class", num_classes=3, class_names=CLASS_NAMES, in_channels=1, image_size=16,
                     num_inference_steps=2, optimizer=adamw(lr=1e-3, weight_decay=0.0),
                     noise_schedule=NoiseSchedule(num_train_timesteps=50))
    if name == "classifier":
        return ClassifierModule(arch="resnet18", num_classes=3, in_channels=1, image_size=16, class_names=CLASS_NAMES)
    if name == "autoencoder":
        return AutoencoderModule(in_channels=1, image_size=16, **TINY_AE)
    if name == "latent_diffusion":
        return LatentDiffusionModule(autoencoder_ckpt=str(folders["ae"]), cache_latents="memory", unet=TINY_UNET,
                                     snr_gamma=5.0, prediction_type="v_prediction", **diffusion)
    if name == "pixel_diffusion":
        return PixelDiffusionModule(unet=TINY_UNET, **diffusion)
    if name == "pixel_ablation_unet":
        return PixelDiffusionModule(unet={"type": "ablation", "block_out_channels": [8, 16], "time_embedding": "once",
                                          "norm_num_groups": 4}, **diffusion)
    if name == "stable_diffusion":
        return StableDiffusionFinetuneModule(pretrained_path=str(folders["sd"]), in_channels=1, image_size=16,
                                             num_classes=3, class_names=CLASS_NAMES, optimizer=adamw(lr=1e-3, weight_decay=0.0),
                                             noise_schedule=NoiseSchedule(num_train_timesteps=50), num_inference_steps=2,
                                             caption_template="a breast ultrasound, {class_name}")
    raise ValueError(name)


MODULES = ["classifier", "autoencoder", "latent_diffusion", "pixel_diffusion", "pixel_ablation_unet",
           "stable_diffusion"]


@pytest.mark.parametrize("name", MODULES)
def test_one_bf16_mixed_step(name, folders, tmp_path):
    torch.manual_seed(0)
    module = build(name, folders)
    before = {k: p.detach().clone() for k, p in module.named_parameters() if p.requires_grad}
    recorder = LossRecorder()
    callbacks = [recorder]
    if "diffusion" in name:
        callbacks += [NoiseScheduleCallback(), EMA(decay=0.5, update_starting_at_step=0)]
    t = trainer(tmp_path, callbacks=callbacks, max_steps=1, precision="bf16-mixed", limit_val_batches=1)
    t.fit(module, loader(n=8, size=16), loader(n=4, size=16))
    assert t.precision == "bf16-mixed" and t.global_step == 1
    assert len(recorder.losses) == 1 and math.isfinite(recorder.losses[0].float().item())
    changed = [k for k, p in module.named_parameters() if k in before and not torch.equal(before[k], p.detach())]
    assert len(changed) > len(before) // 2, f"{name}: only {len(changed)} of {len(before)} tensors changed"
    assert all(p.dtype == torch.float32 for p in module.parameters()), "bf16-mixed keeps float32 weights"
    if "diffusion" in name:
        images = module.sample(labels=[0, 2], seeds=[0, 1])
        assert images.shape == (2, 1, 16, 16) and torch.isfinite(images).all()
