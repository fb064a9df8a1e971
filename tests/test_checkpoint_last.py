"""`StepCheckpoint` keeps `last.ckpt` the latest state when the monitored metric stops improving.

Lightning 2.6 writes `last.ckpt` only together with a new top-k file, so with `save_top_k: 1` it
is the best epoch, and `fit --ckpt_path last` would go back in time. The module below logs a
validation loss that gets worse every epoch, so the best epoch is 0 and the last one is 3.
"""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from lightning_modules.callbacks.checkpoint import StepCheckpoint


class WorseningModel(LightningModule):
    """A linear layer whose logged val/loss is the epoch number (best at epoch 0)."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", float(self.current_epoch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def loader() -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)


def fit(tmp_path, callback) -> None:
    trainer = Trainer(max_epochs=4, accelerator="cpu", logger=False, callbacks=[callback], enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(WorseningModel(), loader(), loader())


def test_last_ckpt_is_the_last_epoch_not_the_best(tmp_path):
    callback = StepCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/loss", mode="min", save_top_k=1, save_last=True,
                              filename="best-{epoch}")
    fit(tmp_path, callback)
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["best-epoch=0.ckpt", "last.ckpt"]
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (3, 8)
    assert callback.best_model_path.endswith("best-epoch=0.ckpt")


def test_step_checkpoints_get_no_extra_epoch_saves(tmp_path):
    """Generators save by step (every_n_epochs is then 0): validation adds no last.ckpt writes."""
    saved_steps = []

    class Recording(StepCheckpoint):
        def _save_checkpoint(self, trainer, filepath):
            saved_steps.append((trainer.global_step, filepath.rsplit("/", 1)[-1]))
            super()._save_checkpoint(trainer, filepath)

    fit(tmp_path, Recording(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=3))
    assert saved_steps == [(3, "epoch=1-step=3.ckpt"), (3, "last.ckpt"), (6, "epoch=2-step=6.ckpt"),
                           (6, "last.ckpt"), (8, "epoch=3-step=8.ckpt"), (8, "last.ckpt")]
