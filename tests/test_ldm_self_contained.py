"""A LatentDiffusionModule checkpoint holds its autoencoder: with the autoencoder file deleted it still
loads, samples and exports (issue 11 item 3)."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import AutoencoderKL

from lightning_modules.autoencoder import AutoencoderModule
from lightning_modules.checkpoint_io import load_checkpoint
from lightning_modules.diffusion import LatentDiffusionModule
from lightning_modules.nets.schedules import NoiseSchedule
from synthmed.export import main as export_main
from test_gen_helpers import CLASS_NAMES, TINY_AE, TINY_UNET, loader, trainer


def test_ldm_loads_samples_and_exports_with_the_autoencoder_file_deleted(tmp_path):
    torch.manual_seed(0)
    ae = AutoencoderModule(in_channels=1, image_size=16, **TINY_AE)
    t = trainer(tmp_path / "ae", max_steps=2)
    t.fit(ae, loader())
    ae_path = tmp_path / "ae.ckpt"
    t.save_checkpoint(ae_path)
    ldm = LatentDiffusionModule(autoencoder_ckpt=str(ae_path), unet=TINY_UNET, conditioning="class", num_classes=3,
                                class_names=CLASS_NAMES, in_channels=1, image_size=16, num_inference_steps=3,
                                noise_schedule=NoiseSchedule(num_train_timesteps=50))
    t = trainer(tmp_path / "ldm", max_steps=2)
    t.fit(ldm, loader())
    ldm_path = tmp_path / "ldm.ckpt"
    t.save_checkpoint(ldm_path)
    before = ldm.sample(labels=[0, 2], seeds=[1, 2])
    ae_path.unlink()

    saved = load_checkpoint(ldm_path, "--ckpt")["hyper_parameters"]
    assert saved["autoencoder"]["latent_channels"] == 2 and saved["noise_schedule"]["num_train_timesteps"] == 50
    reloaded = LatentDiffusionModule.load_from_checkpoint(ldm_path)
    assert torch.equal(reloaded.vae.decoder.conv_out.weight, ldm.vae.decoder.conv_out.weight)
    assert torch.allclose(reloaded.sample(labels=[0, 2], seeds=[1, 2]), before, atol=1e-5)

    assert export_main(["--ckpt", str(ldm_path), "--out", str(tmp_path / "export")]) == 0
    vae = AutoencoderKL.from_pretrained(tmp_path / "export" / "vae")
    assert torch.equal(vae.decoder.conv_out.weight, ldm.vae.decoder.conv_out.weight)
    assert json.loads((tmp_path / "export" / "synthmed.json").read_text())["class_names"] == CLASS_NAMES


def test_ldm_without_autoencoder_says_which_option_starts_training():
    with pytest.raises(ValueError, match="needs model.init_args.autoencoder_ckpt"):
        LatentDiffusionModule(conditioning="none")
