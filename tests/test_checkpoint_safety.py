"""No code runs from user-supplied weight files, and bad checkpoint files get errors that say what they are
(issue 15 items 2 and 16): `export --ckpt`, `model.init_args.pretrained`, `model.init_args.autoencoder_ckpt`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lightning_modules.autoencoder import AutoencoderModule, load_autoencoder
from lightning_modules.checkpoint_io import CheckpointError, load_checkpoint
from lightning_modules.classifier import ClassifierModule
from lightning_modules.diffusion import LatentDiffusionModule
from lightning_modules.nets.backbones import build_backbone
from synthmed.export import main as export_main
from lightning_modules.callbacks.checkpoint import StepCheckpoint
from lightning_modules.callbacks.ema import EMA
from lightning_modules.optim import adamw, warmup
from test_gen_helpers import TINY_AE, TINY_UNET, loader, trainer


class WritesMarker:
    """Unpickling this object would create `path` (what a malicious weights file does)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mknod, (self.path,))


def crafted(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "hyper_parameters": {"latent_channels": 2},
                "payload": WritesMarker(marker)}, path)
    return path, marker


def test_crafted_file_runs_no_code_in_export_pretrained_or_autoencoder_ckpt(tmp_path, capsys):
    path, marker = crafted(tmp_path)
    assert export_main(["--ckpt", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "--ckpt" in capsys.readouterr().err and not marker.exists()
    with pytest.raises(CheckpointError, match="model.init_args.pretrained.*would run code"):
        build_backbone("resnet18", 3, 1, pretrained=str(path))
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="model.init_args.autoencoder_ckpt.*would run code"):
        LatentDiffusionModule(autoencoder_ckpt=str(path), conditioning="none")
    assert not marker.exists(), "torch.load(weights_only=False) would have created the marker"
    with pytest.raises(CheckpointError, match=str(path)):
        load_autoencoder(str(path))
    assert not marker.exists()


def test_the_crafted_file_would_run_code_when_unpickled(tmp_path):
    """The test above can fail: an unsafe load of the same file does run its payload."""
    path, marker = crafted(tmp_path)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_our_own_checkpoints_load_safely(tmp_path):
    """Real checkpoints of the modules (optimizer + LR scheduler state, EMA, hparams) need no extra safe globals."""
    module = AutoencoderModule(in_channels=1, image_size=16, **TINY_AE)
    t = trainer(tmp_path, max_steps=1)
    t.fit(module, loader())
    t.save_checkpoint(tmp_path / "ae.ckpt")
    checkpoint = load_checkpoint(tmp_path / "ae.ckpt", "--ckpt")
    assert "optimizer_states" in checkpoint and checkpoint["hyper_parameters"]["latent_channels"] == 2
    vae, hp = load_autoencoder(str(tmp_path / "ae.ckpt"))
    assert hp["in_channels"] == 1
    ldm = LatentDiffusionModule(autoencoder_ckpt=str(tmp_path / "ae.ckpt"), unet=TINY_UNET, conditioning="class",
                                num_classes=3, image_size=16, optimizer=adamw(lr=1e-3),
                                lr_scheduler=warmup(2, "cosine"))
    t = trainer(tmp_path, callbacks=[EMA(decay=0.5, update_starting_at_step=0),
                                     StepCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=1)],
                max_steps=2, enable_checkpointing=True)
    t.fit(ldm, loader())
    checkpoint = load_checkpoint(tmp_path / "ckpt" / "last.ckpt", "--ckpt")
    assert checkpoint["lr_schedulers"] and "current_model_state" in checkpoint


def test_text_file_given_to_export_says_what_it_is(tmp_path, capsys):
    text = tmp_path / "notes.ckpt"
    text.write_text("12 epochs\nlr 0.001\n")
    assert export_main(["--ckpt", str(text), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "is a text file (starts with '12 epochs')" in err and "not a checkpoint of a synthmed" in err
    assert "invalid literal" not in err


def test_truncated_checkpoint_says_truncated(tmp_path, capsys):
    module = ClassifierModule(arch="resnet18", num_classes=3, in_channels=1, image_size=16)
    full = tmp_path / "full.ckpt"
    torch.save({"state_dict": module.state_dict()}, full)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    assert export_main(["--ckpt", str(cut), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "truncated or damaged" in err and str(cut) in err
    with pytest.raises(CheckpointError, match="truncated"):
        build_backbone("resnet18", 3, 1, pretrained=str(cut))


def test_classifier_checkpoint_given_to_a_generator(tmp_path, capsys):
    module = ClassifierModule(arch="resnet18", num_classes=3, in_channels=1, image_size=16)
    t = trainer(tmp_path, max_steps=1)
    t.fit(module, loader())
    t.save_checkpoint(tmp_path / "clf.ckpt")
    assert export_main(["--ckpt", str(tmp_path / "clf.ckpt"), "--out", str(tmp_path / "out")]) == 2
    assert "is a ClassifierModule checkpoint, not a checkpoint of a synthmed" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="is a ClassifierModule checkpoint, not an AutoencoderModule"):
        LatentDiffusionModule(autoencoder_ckpt=str(tmp_path / "clf.ckpt"), conditioning="none")
