"""Numbers must not move: fixed-seed tiny fits give the per-step losses recorded on the code before the
optimizer / LR scheduler / noise schedule / conditioning refactor (commit 68be272, same inputs)."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Callback, seed_everything

from lightning_modules.autoencoder import AutoencoderModule
from lightning_modules.classifier import ClassifierModule
from lightning_modules.diffusion import LatentDiffusionModule, PixelDiffusionModule
from lightning_modules.nets.schedules import NoiseSchedule
from lightning_modules.optim import adamw, warmup
from test_gen_helpers import CLASS_NAMES, TINY_AE, TINY_UNET, loader, trainer

# recorded with lr=2e-3, warmup_steps=2, lr_schedule="cosine", weight_decay=0.01 and a
# NoiseScheduleCallback(name="cosine", num_train_timesteps=100) on 68be272
PIXEL_COSINE = [0.2157142460346222, 0.1862632781267166, 0.19419729709625244, 0.168418288230896,
                0.21073664724826813, 0.14007502794265747]
AE = [0.9634145498275757, 0.88905930519104, 0.8289675116539001, 0.7644802927970886]        # lr=3e-3
LDM = [1.0293720960617065, 1.0956788063049316, 1.052788257598877, 0.9902644753456116,      # lr=1e-3, warmup 3
       0.9503053426742554]
CLASSIFIER = [1.1888656616210938, 1.1354999542236328, 1.0724765062332153, 0.9729856252670288]  # defaults


class Losses(Callback):
    def __init__(self):
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.values.append(float(outputs["loss"]))


def fit_losses(tmp_path, module, steps: int) -> list[float]:
    losses = Losses()
    trainer(tmp_path, callbacks=[losses], max_steps=steps).fit(module, loader())
    return losses.values


def test_pixel_diffusion_with_warmup_cosine_and_cosine_schedule(tmp_path):
    seed_everything(0)
    module = PixelDiffusionModule(unet=TINY_UNET, conditioning="class", num_classes=3, class_names=CLASS_NAMES,
                                  in_channels=1, image_size=16, optimizer=adamw(lr=2e-3, weight_decay=0.01),
                                  lr_scheduler=warmup(2, "cosine"), prediction_type="v_prediction", snr_gamma=5.0,
                                  noise_schedule=NoiseSchedule("cosine", 100))
    assert fit_losses(tmp_path, module, 6) == pytest.approx(PIXEL_COSINE, abs=1e-6)


def test_autoencoder_and_latent_diffusion(tmp_path):
    seed_everything(0)
    ae = AutoencoderModule(in_channels=1, image_size=16, **TINY_AE, optimizer=adamw(lr=3e-3, weight_decay=0.0))
    assert fit_losses(tmp_path, ae, 4) == pytest.approx(AE, abs=1e-6)
    t = trainer(tmp_path, max_steps=1)
    t.fit(ae, loader())
    t.save_checkpoint(tmp_path / "ae.ckpt")
    seed_everything(0)
    ldm = LatentDiffusionModule(autoencoder_ckpt=str(tmp_path / "ae.ckpt"), unet=TINY_UNET, conditioning="class",
                                num_classes=3, class_names=CLASS_NAMES, in_channels=1, image_size=16,
                                optimizer=adamw(lr=1e-3, weight_decay=0.0), lr_scheduler=warmup(3))
    assert fit_losses(tmp_path, ldm, 5) == pytest.approx(LDM, abs=1e-6)


def test_classifier_default_optimizer(tmp_path):
    seed_everything(0)
    module = ClassifierModule(arch="resnet18", num_classes=3, in_channels=1, image_size=16)
    optimizer = module.configure_optimizers()
    assert type(optimizer) is torch.optim.AdamW
    group = optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["weight_decay"], group["eps"]) == (1e-3, (0.9, 0.999), 1e-2, 1e-8)
    assert fit_losses(tmp_path, module, 4) == pytest.approx(CLASSIFIER, abs=1e-6)


@pytest.mark.parametrize("make, lr, weight_decay", [
    (lambda: PixelDiffusionModule(unet=TINY_UNET, conditioning="none", image_size=16), 2e-4, 0.0),
    (lambda: AutoencoderModule(in_channels=1, image_size=16, **TINY_AE), 1e-3, 0.0),
])
def test_generator_default_optimizers_are_the_former_adamw(make, lr, weight_decay):
    optimizer = make().configure_optimizers()
    group = optimizer.param_groups[0]
    assert type(optimizer) is torch.optim.AdamW
    assert (group["lr"], group["betas"], group["weight_decay"]) == (lr, (0.9, 0.999), weight_decay)
