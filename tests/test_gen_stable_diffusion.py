"""Stable Diffusion fine-tuning on a tiny random-weight SD written by the test (no downloads)."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.stable_diffusion import StableDiffusionFinetuneModule
from lightning_modules.optim import adamw
from test_gen_helpers import build_tiny_sd, loader, trainer


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("sd"))


def busi_loader(size: int = 16, n: int = 8):
    """A few BUSI images with their captions through ImageFolderDataModule (skips without the data)."""
    from conftest import shared_dataset
    from datamodules.image_folder import ImageFolderDataModule

    root = shared_dataset("busi")
    dm = ImageFolderDataModule(root=str(root), caption_file=str(root / "all_captions.csv"), image_size=size,
                               channels=1, batch_size=4, subsample_fraction=0.05)
    dm.setup("fit")
    return dm, dm.train_dataloader()


def test_finetune_tiny_sd_on_busi_captions_then_sample(tmp_path, tiny_sd):
    dm, data = busi_loader()
    batch = next(iter(data))
    assert "caption" in batch and "breast" in batch["caption"][0].lower()
    module = StableDiffusionFinetuneModule(pretrained_path=str(tiny_sd), in_channels=1, image_size=16,
                                           num_classes=dm.num_classes, class_names=dm.class_names,
                                           optimizer=adamw(lr=1e-3, weight_decay=0.0),
                                           num_inference_steps=3)
    assert module.noise_schedule.name == "scaled_linear" and module.noise_schedule.beta_end == pytest.approx(0.012)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    trainer(tmp_path, max_steps=3).fit(module, data)
    after = module.state_dict()
    changed = lambda prefix: any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))  # noqa: E731
    assert changed("unet."), "the U-Net is fine-tuned"
    assert not changed("vae.") and not changed("text_encoder."), "VAE and CLIP stay frozen"
    images = module.sample(captions=["An ultrasound image of breast with benign findings."] * 2, seeds=[0, 1])
    assert images.shape == (2, 1, 16, 16) and torch.isfinite(images).all()
    out = module.save_pipeline(tmp_path / "pipe")
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(out), safety_checker=None)
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"


def test_caption_template_and_checkpoint_reload(tmp_path, tiny_sd):
    module = StableDiffusionFinetuneModule(pretrained_path=str(tiny_sd), in_channels=1, image_size=16,
                                           num_classes=3, class_names=["benign", "malignant", "normal"],
                                           caption_template="a breast ultrasound, {class_name}",
                                           train_text_encoder=True, num_inference_steps=2)
    t = trainer(tmp_path, max_steps=2)
    t.fit(module, loader())  # batches without captions: the template names the class
    assert any(p.requires_grad for p in module.text_encoder.parameters())
    t.save_checkpoint(tmp_path / "sd.ckpt")
    reloaded = StableDiffusionFinetuneModule.load_from_checkpoint(tmp_path / "sd.ckpt")
    assert reloaded.noise_schedule == module.noise_schedule
    a = module.sample(labels=[0], seeds=[0])
    assert torch.allclose(a, reloaded.sample(labels=[0], seeds=[0]), atol=1e-4)


def test_missing_or_stub_folders_fail_loudly(tmp_path):
    with pytest.raises(FileNotFoundError, match="scheduler_config.json"):
        StableDiffusionFinetuneModule(pretrained_path=str(tmp_path))
    from lightning_modules.nets.text import check_tokenizer

    class Stub:
        vocab_size = 2

    with pytest.raises(ValueError, match="vocab_size=2"):
        check_tokenizer(Stub(), "x")
