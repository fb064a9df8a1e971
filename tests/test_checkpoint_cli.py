"""`fit/predict --ckpt_path`: a truncated file, a text file, a file that would run code and another module's
checkpoint are refused before anything is built, with a message naming the file (issue 15 items 2, 16)."""

from __future__ import annotations

import os

import pytest
import torch

from lightning_modules.classifier import ClassifierModule
from synthmed.lightning_cli import run_trainer_verb

YAML = """
trainer: {accelerator: cpu, max_steps: 1, logger: false, enable_checkpointing: false}
model:
  class_path: lightning_modules.diffusion.PixelDiffusionModule
  init_args:
    conditioning: none
    unet: {type: unet2d, block_out_channels: [8, 16], down_block_types: [DownBlock2D, DownBlock2D],
           up_block_types: [UpBlock2D, UpBlock2D], layers_per_block: 1, norm_num_groups: 4}
data:
  class_path: datamodules.phantoms.PhantomDataModule
  init_args: {num_per_class: 2, image_size: 16, batch_size: 2}
"""


class Marker:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mknod, (self.path,))


def refused(tmp_path, ckpt) -> str:
    config = tmp_path / "gen.yaml"
    config.write_text(YAML)
    with pytest.raises(SystemExit) as exc:
        run_trainer_verb(["fit", "--config", str(config), "--ckpt_path", str(ckpt), "--logs_root", str(tmp_path)])
    return str(exc.value)


def test_truncated_and_text_checkpoints_are_named(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, good)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(good.read_bytes()[:2000])
    message = refused(tmp_path, cut)
    assert "cut.ckpt" in message and "truncated or damaged" in message
    text = tmp_path / "text.ckpt"
    text.write_text("not a checkpoint\n")
    assert "is a text file" in refused(tmp_path, text)


def test_crafted_checkpoint_runs_no_code(tmp_path):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": Marker(marker)}, evil)
    assert "would run code" in refused(tmp_path, evil)
    assert not marker.exists()


def test_classifier_checkpoint_given_to_a_generator_config(tmp_path):
    module = ClassifierModule(arch="resnet18", num_classes=3, in_channels=1, image_size=16)
    path = tmp_path / "clf.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    message = refused(tmp_path, path)
    assert "is a ClassifierModule checkpoint, but this config's model is PixelDiffusionModule" in message
    assert "remove the callback" not in message
