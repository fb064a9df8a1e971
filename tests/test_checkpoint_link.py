"""`save_last: link` on StepCheckpoint (issue 16 item 3): a generator run leaves one checkpoint file.

The generator configs save by step with `save_top_k: 1` and `save_last: link`, so `last.ckpt` is a
relative symlink to the newest top-k file instead of a second copy (the quickstart LDM's 82 MB and
autoencoder's 12 MB were stored twice). What must keep working: the final-step save, resuming with
`--ckpt_path last`, `runs.find_checkpoint`, a moved run folder, and `last.ckpt` being the latest
state when the newest top-k file is an older, better epoch.
"""

from __future__ import annotations

import os

import torch
from lightning.pytorch import Trainer
from test_checkpoint_last import WorseningModel, loader

from lightning_modules.callbacks.checkpoint import StepCheckpoint
from synthmed import runs


def fit(run, callback, max_steps=-1, max_epochs=4, ckpt_path=None) -> None:
    trainer = Trainer(max_steps=max_steps, max_epochs=max_epochs, accelerator="cpu", logger=False,
                      callbacks=[callback], enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=str(run))
    trainer.fit(WorseningModel(), loader(), loader(), ckpt_path=ckpt_path)


def generator_checkpoint(run) -> StepCheckpoint:
    return StepCheckpoint(dirpath=run / "checkpoints", save_last="link", save_top_k=1, every_n_train_steps=3)


def files(run) -> tuple[list[str], dict[str, str]]:
    """(regular checkpoint files, {symlink: its target}) in run/checkpoints."""
    ckpts = sorted((run / "checkpoints").iterdir())
    return ([p.name for p in ckpts if not p.is_symlink()],
            {p.name: os.readlink(p) for p in ckpts if p.is_symlink()})


def step(path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


def test_generator_run_leaves_one_checkpoint_file_and_resumes_from_the_link(tmp_path):
    run = tmp_path / "run"
    fit(run, generator_checkpoint(run), max_steps=8, max_epochs=100)  # saves at steps 3, 6 and the final 8
    assert files(run) == (["epoch=3-step=8.ckpt"], {"last.ckpt": "epoch=3-step=8.ckpt"})  # relative link
    assert step(run / "checkpoints" / "last.ckpt") == 8
    assert runs.find_checkpoint(run, last=True) == run / "checkpoints" / "last.ckpt"
    assert runs.find_checkpoint(run).name == "epoch=3-step=8.ckpt"

    fit(run, generator_checkpoint(run), max_steps=11, max_epochs=100, ckpt_path="last")  # `fit --ckpt_path last`
    assert files(run) == (["epoch=5-step=11.ckpt"], {"last.ckpt": "epoch=5-step=11.ckpt"})
    assert step(run / "checkpoints" / "last.ckpt") == 11

    moved = runs.move_aside(run)  # a run folder renamed (or copied with its links) still resolves its last.ckpt
    assert step(moved / "checkpoints" / "last.ckpt") == 11


def test_link_is_not_made_back_to_an_older_best_epoch(tmp_path):
    """val/loss gets worse every epoch: the newest top-k file is epoch 0, the last state epoch 3. Lightning
    would link last.ckpt to epoch 0; StepCheckpoint writes it as a file, and not through the old link."""
    run = tmp_path / "run"
    fit(run, StepCheckpoint(dirpath=run / "checkpoints", monitor="val/loss", mode="min", save_top_k=1,
                            save_last="link", filename="best-{epoch}"))
    assert files(run) == (["best-epoch=0.ckpt", "last.ckpt"], {})
    assert step(run / "checkpoints" / "last.ckpt") == 8
    assert step(run / "checkpoints" / "best-epoch=0.ckpt") == 2  # the best file was not overwritten via the link
