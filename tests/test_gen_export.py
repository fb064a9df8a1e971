"""`synthmed export`: diffusers folders that reload and reproduce synthmed's own samples."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDIMPipeline, DDIMScheduler, DDPMPipeline, UNet2DModel

from lightning_modules.callbacks.noise_schedule import NoiseScheduleCallback
from lightning_modules.diffusion import LatentDiffusionModule, PixelDiffusionModule
from lightning_modules.nets.schedules import NoiseSchedule
from synthmed.export import export_checkpoint, main
from test_gen_helpers import CLASS_NAMES, TINY_UNET, loader, trainer


def to_numpy(images: torch.Tensor) -> np.ndarray:
    return ((images + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def pixel_export(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    module = PixelDiffusionModule(unet=TINY_UNET, conditioning="none", num_classes=3, in_channels=1, image_size=16,
                                  noise_schedule=NoiseSchedule("cosine", 40))
    t = trainer(tmp, callbacks=[NoiseScheduleCallback()], max_steps=2)
    t.fit(module, loader())
    ckpt = tmp / "pixel.ckpt"
    t.save_checkpoint(ckpt)
    return module, export_checkpoint(ckpt, tmp / "diffusers")


def test_pixel_export_reloads_in_ddpm_pipeline_and_matches(pixel_export):
    module, out = pixel_export
    pipe = DDPMPipeline.from_pretrained(out)
    assert pipe.scheduler.config.beta_schedule == "squaredcos_cap_v2" and pipe.scheduler.config.num_train_timesteps == 40
    theirs = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=40,
                  output_type="np").images
    ours = to_numpy(module.sample(num_images=2, seeds=0, sampler="ddpm"))
    assert np.abs(theirs - ours).max() < 1e-4
    other_seed = to_numpy(module.sample(num_images=2, seeds=1, sampler="ddpm"))
    assert np.abs(theirs - other_seed).max() > 0.05, "a different seed must differ (the test can fail)"


def test_pixel_export_reloads_in_ddim_pipeline_and_matches(pixel_export):
    module, out = pixel_export
    pipe = DDIMPipeline.from_pretrained(out)
    assert isinstance(pipe.scheduler, DDIMScheduler)
    theirs = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), num_inference_steps=8, eta=0.0,
                  output_type="np").images
    ours = to_numpy(module.sample(num_images=2, seeds=3, sampler="ddim", num_inference_steps=8, eta=0.0))
    assert np.abs(theirs - ours).max() < 1e-4
    info = json.loads((out / "synthmed.json").read_text())
    assert info["conditioning"] == "none" and info["noise_schedule"]["name"] == "cosine"
    assert "DDPMPipeline.from_pretrained" in (out / "README.md").read_text()


def test_latent_export_writes_unet_vae_scheduler(tmp_path):
    from lightning_modules.autoencoder import AutoencoderModule
    from test_gen_helpers import TINY_AE

    ae = AutoencoderModule(in_channels=1, image_size=16, **TINY_AE)
    t = trainer(tmp_path, max_steps=1)
    t.fit(ae, loader())
    t.save_checkpoint(tmp_path / "ae.ckpt")
    ldm = LatentDiffusionModule(autoencoder_ckpt=str(tmp_path / "ae.ckpt"), unet=TINY_UNET, conditioning="class",
                                num_classes=3, class_names=CLASS_NAMES, in_channels=1, image_size=16)
    t = trainer(tmp_path, max_steps=1)
    t.fit(ldm, loader())
    t.save_checkpoint(tmp_path / "ldm.ckpt")
    out = export_checkpoint(tmp_path / "ldm.ckpt", tmp_path / "ldm_diffusers")
    unet = UNet2DModel.from_pretrained(out, subfolder="transformer")  # a DiTPipeline folder (synthmed/dit_export.py)
    vae = AutoencoderKL.from_pretrained(out, subfolder="vae")
    assert vae.config.scaling_factor == pytest.approx(ldm.latent_scale)
    assert unet.config.num_class_embeds == 1001  # 3 classes, then synthmed's null class up to DiT's null label 1000
    info = json.loads((out / "synthmed.json").read_text())
    assert info["class_names"] == CLASS_NAMES and info["null_class"] == 3
    x = torch.randn(1, *info["sample_shape"])
    with torch.no_grad():
        ours = ldm.unet(x, torch.tensor(5), class_labels=torch.tensor([1])).sample
        theirs = unet(x, torch.tensor(5), class_labels=torch.tensor([1])).sample
        assert torch.allclose(ours, theirs, atol=1e-6)
        assert vae.decode(x / vae.config.scaling_factor).sample.shape == (1, 1, 16, 16)
    assert (out / "scheduler" / "scheduler_config.json").is_file()


def test_export_cli_refuses_to_overwrite_and_names_bad_checkpoints(tmp_path, pixel_export, capsys):
    _, out = pixel_export
    assert main(["--ckpt", str(tmp_path / "nope.ckpt"), "--out", str(tmp_path / "x")]) == 2
    assert "no such file" in capsys.readouterr().err
    ckpt = out.parent / "pixel.ckpt"
    assert main(["--ckpt", str(ckpt), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["--ckpt", str(ckpt), "--out", str(tmp_path / "fresh")]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"out: {tmp_path / 'fresh'}"
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    assert main(["--ckpt", str(tmp_path / "other.ckpt"), "--out", str(tmp_path / "y")]) == 2
    assert "not a checkpoint of a synthmed Pixel/LatentDiffusionModule run" in capsys.readouterr().err


def test_ablation_unet_export_loads_in_ddpm_pipeline_when_synthmed_is_installed(tmp_path):
    module = PixelDiffusionModule(unet={"type": "ablation", "block_out_channels": [8, 16]}, conditioning="none",
                                  num_classes=3, in_channels=1, image_size=16,
                                  noise_schedule=NoiseSchedule(num_train_timesteps=20))
    t = trainer(tmp_path, callbacks=[NoiseScheduleCallback()], max_steps=1)
    t.fit(module, loader())
    t.save_checkpoint(tmp_path / "a.ckpt")
    out = export_checkpoint(tmp_path / "a.ckpt", tmp_path / "exp")
    index = json.loads((out / "model_index.json").read_text())
    assert index["unet"] == ["lightning_modules.nets.ablation_unet", "AblationUNet"]
    theirs = DDPMPipeline.from_pretrained(out)(batch_size=1, generator=torch.Generator().manual_seed(0),
                                               num_inference_steps=20, output_type="np").images
    ours = to_numpy(module.sample(num_images=1, seeds=0, sampler="ddpm"))
    assert np.abs(theirs - ours).max() < 1e-4
