"""Checkpoints written before the optimizer / LR scheduler / noise schedule became arguments still load."""

from __future__ import annotations

import torch

from lightning_modules.classifier import ClassifierModule
from lightning_modules.diffusion import PixelDiffusionModule
from lightning_modules.nets.schedules import NoiseSchedule
from lightning_modules.optim import WarmupCosineLR, upgrade_legacy_hparams
from test_gen_helpers import TINY_UNET, loader, trainer


def test_old_hyper_parameters_are_upgraded_on_load(tmp_path):
    module = PixelDiffusionModule(unet=TINY_UNET, conditioning="none", image_size=16,
                                  noise_schedule=NoiseSchedule("cosine", 30))
    t = trainer(tmp_path, max_steps=1)
    t.fit(module, loader())
    path = tmp_path / "new.ckpt"
    t.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    hparams.pop("noise_schedule")
    hparams.update(lr=3e-3, weight_decay=0.0, warmup_steps=5, lr_schedule="cosine")  # as 68be272 saved them
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)

    reloaded = PixelDiffusionModule.load_from_checkpoint(old)
    assert reloaded.noise_schedule == NoiseSchedule("cosine", 30)
    config = reloaded.configure_optimizers()
    assert config["optimizer"].param_groups[0]["initial_lr"] == 3e-3
    scheduler = config["lr_scheduler"]["scheduler"]
    assert isinstance(scheduler, WarmupCosineLR) and (scheduler.warmup_steps, scheduler.decay) == (5, "cosine")
    assert not upgrade_legacy_hparams(torch.load(path, weights_only=True)), "new checkpoints are left alone"


def test_old_classifier_checkpoint_loads(tmp_path):
    module = ClassifierModule(arch="resnet18", num_classes=3, in_channels=1, image_size=16)
    hparams = dict(module.hparams)
    hparams.update(lr=1e-4, weight_decay=0.05)
    path = tmp_path / "clf.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hparams,
                "pytorch-lightning_version": "2.6.6"}, path)
    reloaded = ClassifierModule.load_from_checkpoint(path)
    group = reloaded.configure_optimizers().param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (1e-4, 0.05)
