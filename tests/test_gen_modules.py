"""AutoencoderModule, Pixel/LatentDiffusionModule and their callbacks, trained for a few steps."""

from __future__ import annotations

import time

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_modules.autoencoder import AutoencoderModule, load_autoencoder
from lightning_modules.callbacks.ema import EMA
from lightning_modules.callbacks.noise_schedule import NoiseScheduleCallback
from lightning_modules.callbacks.sample_grid import SampleGridCallback
from lightning_modules.diffusion import LatentDiffusionModule, PixelDiffusionModule
from lightning_modules.nets.schedules import NoiseSchedule
from lightning_modules.optim import adamw, warmup
from test_gen_helpers import CLASS_NAMES, TINY_AE, TINY_TEXT_UNET, TINY_UNET, loader, tensorboard_tags, trainer


def pixel_module(**overrides) -> PixelDiffusionModule:
    kwargs = dict(unet=TINY_UNET, conditioning="class", num_classes=3, class_names=CLASS_NAMES, in_channels=1,
                  image_size=16, num_inference_steps=4, guidance_scale=2.0)
    kwargs.update(overrides)
    return PixelDiffusionModule(**kwargs)


@pytest.fixture(scope="module")
def ae_ckpt(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ae")
    torch.manual_seed(0)
    module = AutoencoderModule(in_channels=1, image_size=16, **TINY_AE, optimizer=adamw(lr=3e-3, weight_decay=0.0))
    t = trainer(tmp, max_steps=30, max_epochs=-1, limit_val_batches=1, check_val_every_n_epoch=5)
    t.fit(module, loader(), loader(n=8))
    path = tmp / "ae.ckpt"
    t.save_checkpoint(path)
    return path, t, module


def test_autoencoder_learns_logs_and_reloads(ae_ckpt):
    path, t, module = ae_ckpt
    metrics = t.callback_metrics
    assert "val/psnr" in metrics and "val/ssim" in metrics
    assert float(metrics["val/psnr"]) > 12.0, "30 steps on bright squares must beat a blank guess"
    tags = tensorboard_tags(t.logger.log_dir)
    assert "reconstructions/input|output" in tags["images"]
    vae, hp = load_autoencoder(str(path))
    x = next(iter(loader(n=4)))["image"]
    module.eval()
    with torch.no_grad():
        assert torch.allclose(vae.decode(vae.encode(x).latent_dist.mode()).sample, module(x), atol=1e-5)
    assert module.encode(x).shape == (4, 2, 8, 8)  # 2 blocks -> one down-sampling stage
    assert hp["latent_channels"] == 2


def test_autoencoder_default_is_three_stage_and_rejects_bad_sizes(tmp_path):
    module = AutoencoderModule(in_channels=3, image_size=32, norm_num_groups=8, block_out_channels=(8, 8, 8, 8))
    assert module.downsample_factor == 8
    assert module.encode(torch.randn(1, 3, 32, 32)).shape == (1, 4, 4, 4)
    with pytest.raises(ValueError, match="divisible"):
        AutoencoderModule(image_size=36, norm_num_groups=8, block_out_channels=(8, 8, 8, 8))
    with pytest.raises(FileNotFoundError, match="LPIPS"):
        AutoencoderModule(perceptual_weight=0.1, norm_num_groups=8, block_out_channels=(8, 8))
    with pytest.raises(FileNotFoundError, match="train one first"):
        load_autoencoder(str(tmp_path / "missing.ckpt"))


def test_noise_schedule_is_saved_and_reload_samples_with_it(tmp_path):
    torch.manual_seed(0)
    module = pixel_module(noise_schedule=NoiseSchedule("cosine", 60))
    assert module.hparams.noise_schedule == NoiseSchedule("cosine", 60).to_dict(), "saved with the hparams"
    t = trainer(tmp_path, callbacks=[NoiseScheduleCallback()], max_steps=2)
    t.fit(module, loader())
    assert module.noise_schedule == NoiseSchedule("cosine", 60)
    assert "noise_schedule/log_snr" in tensorboard_tags(t.logger.log_dir)["scalars"]
    path = tmp_path / "pixel.ckpt"
    t.save_checkpoint(path)
    before = module.sample(labels=[0, 2], seeds=[5, 6])

    fresh = PixelDiffusionModule.load_from_checkpoint(path)  # built with the default linear T=1000
    assert fresh.noise_schedule == NoiseSchedule("cosine", 60)
    assert torch.equal(fresh.make_scheduler("ddim").betas, NoiseSchedule("cosine", 60).betas())
    after = fresh.sample(labels=[0, 2], seeds=[5, 6])
    assert torch.allclose(before, after, atol=1e-5)
    default = PixelDiffusionModule(**{k: v for k, v in fresh.hparams.items() if k != "noise_schedule"})
    default.load_state_dict(fresh.state_dict())
    assert not torch.allclose(default.sample(labels=[0, 2], seeds=[5, 6]), after, atol=1e-3), \
        "the linear default schedule would give different images: the test must be able to fail"


def test_noise_schedule_callback_rejects_non_diffusion_modules(tmp_path):
    module = AutoencoderModule(in_channels=1, image_size=16, **TINY_AE)
    with pytest.raises(TypeError, match="AutoencoderModule: this YAML configures a generator"):
        trainer(tmp_path, callbacks=[NoiseScheduleCallback()], max_steps=1).fit(module, loader())


def test_class_conditioning_and_guidance_change_samples():
    torch.manual_seed(0)
    module = pixel_module()
    a = module.sample(labels=[0], seeds=[1])
    assert a.shape == (1, 1, 16, 16) and a.min() >= -1 and a.max() <= 1
    assert not torch.allclose(a, module.sample(labels=[1], seeds=[1]))
    assert not torch.allclose(a, module.sample(labels=[0], seeds=[1], guidance_scale=1.0))
    assert torch.allclose(a, module.sample(labels=[0], seeds=[1]))  # seeded
    batch = module.sample(labels=[2, 0, 1], seeds=[9, 1, 4])
    assert torch.allclose(batch[1], a[0], atol=1e-3), "an image depends on its seed and label, not its batch"


def test_ddpm_and_ddim_sample_from_one_checkpoint(tmp_path):
    module = pixel_module(noise_schedule=NoiseSchedule(num_train_timesteps=100))
    t = trainer(tmp_path, callbacks=[NoiseScheduleCallback()], max_steps=1)
    t.fit(module, loader())
    start = time.perf_counter()
    ddim = module.sample(labels=[0, 1], seeds=[0, 1], sampler="ddim", num_inference_steps=10)
    ddim_s = time.perf_counter() - start
    start = time.perf_counter()
    ddpm = module.sample(labels=[0, 1], seeds=[0, 1], sampler="ddpm")
    ddpm_s = time.perf_counter() - start
    assert ddim.shape == ddpm.shape
    assert ddpm_s > 3 * ddim_s, f"100 DDPM steps ({ddpm_s:.2f}s) vs 10 DDIM steps ({ddim_s:.2f}s)"


def test_training_options_validate():
    with pytest.raises(ValueError, match="num_classes"):
        pixel_module(num_classes=0, class_names=None)
    with pytest.raises(ValueError, match="loss"):
        pixel_module(loss="huber")
    with pytest.raises(ValueError, match="conditioning"):
        pixel_module(conditioning="mask")


@pytest.mark.parametrize("prediction_type,loss,gamma", [("epsilon", "l1", None), ("v_prediction", "l2", 5.0)])
def test_pixel_training_reduces_loss(tmp_path, prediction_type, loss, gamma):
    torch.manual_seed(0)
    module = pixel_module(prediction_type=prediction_type, loss=loss, snr_gamma=gamma,
                          optimizer=adamw(lr=2e-3, weight_decay=0.0), lr_scheduler=warmup(2))
    x0 = next(iter(loader()))["image"]
    cond = module.condition_inputs(torch.tensor([0] * 8), None)
    fixed = lambda: module.diffusion_loss(x0, cond, generator=torch.Generator().manual_seed(0)).item()  # noqa: E731
    before = fixed()
    trainer(tmp_path, max_steps=25).fit(module, loader())
    assert fixed() < 0.8 * before


def test_ema_weights_are_checkpointed_and_used_by_the_sample_grid(tmp_path):
    torch.manual_seed(0)
    module = pixel_module(optimizer=adamw(lr=1e-2, weight_decay=0.0), noise_schedule=NoiseSchedule(num_train_timesteps=50))
    grid = SampleGridCallback(every_n_epochs=1, num_per_class=2)
    ema = EMA(decay=0.5, update_starting_at_step=0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    t = trainer(tmp_path, callbacks=[ema, grid, NoiseScheduleCallback(), checkpoint],
                max_steps=6, max_epochs=2, limit_train_batches=3, enable_checkpointing=True)
    t.fit(module, loader())
    path = tmp_path / "ckpt" / "last.ckpt"  # written during training, before the final copy
    ckpt = torch.load(path, weights_only=False)
    assert "current_model_state" in ckpt
    key = "unet.conv_in.weight"
    assert not torch.equal(ckpt["state_dict"][key], ckpt["current_model_state"][key])
    reloaded = PixelDiffusionModule.load_from_checkpoint(path)
    assert torch.equal(reloaded.state_dict()[key], ckpt["state_dict"][key]), "reload must give the EMA weights"
    assert torch.equal(module.state_dict()[key], ckpt["state_dict"][key]), "training ends on the EMA weights"
    assert [p.name for p in grid.saved] == ["epoch_0000.png", "epoch_0001.png"]
    assert "samples/grid" in tensorboard_tags(t.logger.log_dir)["images"]


def test_latent_module_scale_cache_and_checkpoint(tmp_path, ae_ckpt):
    path, _, _ = ae_ckpt
    torch.manual_seed(0)
    module = LatentDiffusionModule(autoencoder_ckpt=str(path), cache_latents="memory", unet=TINY_UNET,
                                   conditioning="class", num_classes=3, class_names=CLASS_NAMES, in_channels=1,
                                   image_size=16, num_inference_steps=3)
    assert module.sample_shape == (2, 8, 8)
    calls = {"n": 0}
    encode = module.vae.encode

    def counting_encode(x):
        calls["n"] += 1
        return encode(x)

    module.vae.encode = counting_encode
    t = trainer(tmp_path, max_steps=9, max_epochs=3)  # 3 batches per epoch
    t.fit(module, loader())
    assert calls["n"] == 3, "latents are encoded in the first epoch only"
    assert module.latent_scale is not None and 0.05 < module.latent_scale < 50
    assert all(not p.requires_grad for p in module.vae.parameters())
    ckpt_path = tmp_path / "ldm.ckpt"
    t.save_checkpoint(ckpt_path)
    images = module.sample(labels=[0, 1], seeds=[0, 1])
    assert images.shape == (2, 1, 16, 16)
    reloaded = LatentDiffusionModule.load_from_checkpoint(ckpt_path)
    assert reloaded.latent_scale == pytest.approx(module.latent_scale)
    assert torch.allclose(reloaded.sample(labels=[0, 1], seeds=[0, 1]), images, atol=1e-5)


def test_latent_disk_cache_survives_runs_and_notices_changed_images(tmp_path, ae_ckpt):
    path, _, _ = ae_ckpt
    kwargs = dict(autoencoder_ckpt=str(path), cache_latents="disk", cache_dir=str(tmp_path / "cache"),
                  unet=TINY_UNET, conditioning="none", num_classes=3, in_channels=1, image_size=16)
    first = LatentDiffusionModule(**kwargs)
    trainer(tmp_path, max_steps=3, max_epochs=1).fit(first, loader())
    assert list((tmp_path / "cache").glob("latents-*.pt"))
    second = LatentDiffusionModule(**kwargs)
    calls = {"n": 0}
    encode = second.vae.encode
    second.vae.encode = lambda x: (calls.__setitem__("n", calls["n"] + 1), encode(x))[1]
    trainer(tmp_path, max_steps=3, max_epochs=1).fit(second, loader())
    assert calls["n"] == 0, "a second run reuses the disk cache"
    trainer(tmp_path, max_steps=3, max_epochs=1).fit(second, loader(seed=1))  # different noise, same indices
    assert calls["n"] == 3, "changed images are re-encoded"


def test_text_conditioned_latent_model(tmp_path, ae_ckpt):
    path, _, _ = ae_ckpt
    module = LatentDiffusionModule(autoencoder_ckpt=str(path), unet=TINY_TEXT_UNET, conditioning="text",
                                   text_encoder={"kind": "small", "output_dim": 16, "num_layers": 1, "num_heads": 2},
                                   num_classes=3, in_channels=1, image_size=16, num_inference_steps=3,
                                   guidance_scale=3.0)
    trainer(tmp_path, max_steps=2).fit(module, loader(captions=True))
    a = module.sample(captions=["a benign square", "a normal square"], seeds=[0, 0])
    assert a.shape == (2, 1, 16, 16)
    assert not torch.allclose(a[0], a[1]), "the caption must change the sample"
    assert any(p.requires_grad for p in module.text_encoder.parameters())


def test_mask_weight_raises_the_loss_where_the_lesion_is():
    module = pixel_module(mask_weight=4.0)
    x0 = torch.zeros(2, 1, 16, 16)
    mask = torch.zeros(2, 1, 16, 16)
    mask[0, :, 4:6, 4:6] = 1
    w = module.loss_weight_map({"mask": mask}, x0)
    assert w[0].max() == 5.0 and w[1].max() == 1.0
    assert int((w[0] > 1).sum()) == 16, "the 2x2 lesion is dilated by one cell to 4x4"
    cond = module.condition_inputs(torch.tensor([0, 0]), None)
    plain = module.diffusion_loss(x0, cond, generator=torch.Generator().manual_seed(0))
    weighted = module.diffusion_loss(x0, cond, generator=torch.Generator().manual_seed(0), weight_map=w)
    assert weighted > plain
    assert pixel_module().loss_weight_map({"mask": mask}, x0) is None
