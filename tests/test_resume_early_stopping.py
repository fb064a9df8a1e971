"""EarlyStopping survives a fit that stops mid-epoch (`max_steps`) and a resume from a checkpoint
written during validation (issue 14: both crashed with "Early stopping conditioned on metric
`val/loss` which is not available", leaving no checkpoint and no metrics)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torch.utils.data import DataLoader, TensorDataset

from lightning_modules.callbacks.early_stopping import ResumableEarlyStopping
from synthmed.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--data.init_args.num_per_class", "12", "--data.init_args.image_size", "16",
         "--data.init_args.batch_size", "4", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false"]


def run_dir_from(out: str) -> Path:
    return Path([line for line in out.splitlines() if line.startswith("run_dir: ")][-1].split(": ", 1)[1])


def test_quickstart_classifier_with_max_steps_ends_with_checkpoint_and_metrics(tmp_path, monkeypatch, capsys):
    """`fit --config experiments/quickstart/classifier.yaml --trainer.max_steps 3`: 26 training images in
    batches of 4 are 7 steps per epoch, so the fit stops mid-epoch 0, before any validation."""
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", str(ROOT / "experiments/quickstart/classifier.yaml"),
                 "--trainer.max_steps", "3", *SMALL]) == 0
    run_dir = run_dir_from(capsys.readouterr().out)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 3


class SaveDuringValidation(Callback):
    """Test helper: writes a checkpoint in the middle of epoch 0's validation, as Lightning's SIGUSR1
    (SLURM preemption) handler may at any moment."""

    def __init__(self, path: str):
        self.path = path

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking and trainer.current_epoch == 0 and batch_idx == 0:
            trainer.save_checkpoint(self.path)


def test_resume_from_a_checkpoint_written_during_validation(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = ["--config", str(ROOT / "experiments/quickstart/classifier.yaml"), *SMALL]
    ckpt = tmp_path / "in_validation.ckpt"
    saver = json.dumps({"class_path": "test_resume_early_stopping.SaveDuringValidation",
                        "init_args": {"path": str(ckpt)}})
    assert main(["fit", *config, "--trainer.max_epochs", "1", "--test_after_fit", "false",
                 f"--trainer.callbacks+={saver}"]) == 0
    assert ckpt.is_file()
    capsys.readouterr()
    assert main(["fit", *config, "--trainer.max_epochs", "2", "--ckpt_path", str(ckpt)]) == 0
    run_dir = run_dir_from(capsys.readouterr().out)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "val/loss" in metrics and "test/acc" in metrics  # epoch 1 validated, the fit finished and tested
    assert json.loads((run_dir / "metrics.json").read_text())["_info"]["resumed_from"] == str(ckpt)


# ---- the callback alone: same decisions as EarlyStopping when every epoch validates ------------------
class ScriptedLoss(LightningModule):
    """Logs a scripted `val/loss` per epoch (so the stopping epoch is known in advance)."""

    def __init__(self, losses: list[float]):
        super().__init__()
        self.losses, self.layer = losses, torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", torch.tensor(self.losses[self.current_epoch]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _stop(callback: EarlyStopping, tmp_path: Path, **trainer_args) -> tuple[int, int, float]:
    data = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=2)
    trainer = Trainer(max_epochs=8, callbacks=[callback], logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                      **trainer_args)
    trainer.fit(ScriptedLoss([1.0, 0.8, 0.9, 0.85, 0.95, 0.7, 0.6, 0.5]), data, data)
    return trainer.current_epoch, callback.wait_count, float(callback.best_score)


@pytest.mark.parametrize("on_train_epoch_end", [None, False])
def test_decisions_equal_plain_early_stopping_when_every_epoch_validates(tmp_path, on_train_epoch_end):
    args = dict(monitor="val/loss", mode="min", patience=3, check_on_train_epoch_end=on_train_epoch_end)
    plain = _stop(EarlyStopping(**args), tmp_path)
    ours = _stop(ResumableEarlyStopping(**args), tmp_path)
    assert ours == plain == (5, 3, pytest.approx(0.8))  # stops after 0.9, 0.85, 0.95 fail to beat 0.8


def test_stale_metric_is_not_counted_again_and_a_misspelt_monitor_still_fails(tmp_path):
    # max_steps inside epoch 2: epochs 0 and 1 validated, epoch 2 did not, and was not judged on epoch 1's value
    callback = ResumableEarlyStopping(monitor="val/loss", mode="min", patience=3)
    assert _stop(callback, tmp_path, max_steps=10) == (3, 0, pytest.approx(0.8))  # 4 steps per epoch
    plain = EarlyStopping(monitor="val/loss", mode="min", patience=3)
    assert _stop(plain, tmp_path, max_steps=10)[1] == 1  # Lightning's counts epoch 1's 0.8 a second time
    with pytest.raises(RuntimeError, match="val/lsos"):
        _stop(ResumableEarlyStopping(monitor="val/lsos", mode="min"), tmp_path)
