"""Tiny data, nets and trainers shared by the tests/test_gen_*.py files (helpers only, no tests here)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, Dataset

TINY_UNET = {
    "type": "unet2d", "block_out_channels": [16, 32], "down_block_types": ["DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D"], "layers_per_block": 1, "norm_num_groups": 8,
}
TINY_TEXT_UNET = dict(TINY_UNET, type="unet2d_condition", down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                      up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], attention_head_dim=4)
TINY_AE = {"block_out_channels": [8, 16], "latent_channels": 2, "norm_num_groups": 8, "layers_per_block": 1}
CLASS_NAMES = ["benign", "malignant", "normal"]

# YAML pieces of the step-based tiny-LDM CLI runs (test_scale_ddp, test_scale_resume), with braces
# doubled for str.format: a quiet step-budget trainer with the schedule logger and EMA, and the U-Net.
QUIET_EMA_TRAINER_YAML = """  max_epochs: -1
  limit_val_batches: 1
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: lightning_modules.callbacks.noise_schedule.NoiseScheduleCallback
    - class_path: lightning_modules.callbacks.ema.EMA
      init_args: {{decay: 0.9, update_starting_at_step: 0}}
"""
CLASS_LDM_YAML = """model:
  class_path: lightning_modules.diffusion.LatentDiffusionModule
  init_args:
    autoencoder_ckpt: {ae}
    cache_latents: memory
    conditioning: class
"""  # then more init_args, then TINY_UNET_YAML
TINY_UNET_YAML = """    unet: {{type: unet2d, block_out_channels: [16, 32], down_block_types: [DownBlock2D, DownBlock2D],
            up_block_types: [UpBlock2D, UpBlock2D], layers_per_block: 1, norm_num_groups: 8}}
"""


class SquaresDataset(Dataset):
    """Contract dicts: a bright square whose position says the class, on a dark noisy background."""

    def __init__(self, n: int = 24, size: int = 16, channels: int = 1, captions: bool = False, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(n):
            label = i % 3
            img = torch.full((channels, size, size), -0.8) + 0.05 * torch.randn(channels, size, size, generator=g)
            q = size // 4
            x0 = [0, q, 2 * q][label]
            img[:, q:2 * q, x0:x0 + q] = 0.8
            item = {"image": img.clamp(-1, 1), "label": torch.tensor(label), "index": torch.tensor(i)}
            if captions:
                item["caption"] = f"an image with a {CLASS_NAMES[label]} square"
            self.items.append(item)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def loader(n: int = 24, size: int = 16, batch_size: int = 8, **kwargs) -> DataLoader:
    return DataLoader(SquaresDataset(n, size, **kwargs), batch_size=batch_size, shuffle=False)


def trainer(tmp_path: Path, callbacks=(), max_steps: int = 2, max_epochs: int = -1, **kwargs) -> Trainer:
    options = dict(accelerator="cpu", devices=1, max_steps=max_steps, max_epochs=max_epochs,
                   logger=TensorBoardLogger(str(tmp_path), name="tb"), callbacks=list(callbacks),
                   enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
                   num_sanity_val_steps=0, enable_checkpointing=False, default_root_dir=str(tmp_path))
    options.update(kwargs)
    return Trainer(**options)


def tensorboard_tags(log_dir: str | Path) -> dict[str, set[str]]:
    """{'images': {...}, 'scalars': {...}} found in the event files under `log_dir`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = {"images": set(), "scalars": set()}
    for event_file in Path(log_dir).rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(event_file), size_guidance={"images": 0, "scalars": 0})
        acc.Reload()
        tags["images"] |= set(acc.Tags()["images"])
        tags["scalars"] |= set(acc.Tags()["scalars"])
    return tags


def write_tiny_tokenizer(folder) -> None:
    """A character-level CLIP BPE vocabulary (no merges) with CLIP's special tokens."""
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,-'()")
    tokens = ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def build_tiny_sd(root):
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    write_tiny_tokenizer(root / "tok_src")
    tokenizer = CLIPTokenizer(str(root / "tok_src" / "vocab.json"), str(root / "tok_src" / "merges.txt"),
                              model_max_length=77)
    assert tokenizer.vocab_size > 2
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                layers_per_block=1, cross_attention_dim=32, attention_head_dim=4,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(32, 64), latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                            safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(str(root / "tiny_sd"))
    return root / "tiny_sd"
