"""TensorBoard (issue 16 item 6): HParams with the final metrics, a learning-rate curve, named grid rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from lightning_modules.callbacks.sample_grid import with_row_names
from synthmed.lightning_cli import run_trainer_verb

REPO = Path(__file__).resolve().parents[1]
TINY_FIT = ["fit", "--config", str(REPO / "experiments" / "quickstart" / "classifier.yaml"),
            "--data.init_args.num_per_class", "12", "--data.init_args.image_size", "24",
            "--data.init_args.batch_size", "8", "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "1",
            "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.accelerator", "cpu",
            "--model.init_args.arch", "resnet18", "--experiment", "tb"]


def events(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return acc


def test_hparams_tab_has_final_metrics_and_lr_is_logged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = run_trainer_verb(TINY_FIT)
    acc = events(cli.recorder.run_dir)
    scalars = acc.Tags()["scalars"]
    assert any(tag.startswith("lr-AdamW") for tag in scalars), scalars  # LearningRateMonitor by default
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["model/arch"].string_value == "resnet18"
    assert hparams["data/image_size"].number_value == 24
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    metric_tags = {m.name.tag for m in experiment.metric_infos}
    assert {"final/test/acc", "final/val/loss"} <= metric_tags
    final = acc.Scalars("final/test/acc")[-1].value
    assert abs(final - cli.recorder.metrics["test/acc"]) < 1e-6


def test_sample_grid_rows_carry_class_names():
    grid = torch.full((1, 2 + 2 * 18, 2 + 2 * 18), 0.5)  # 2 rows of 16-px images with make_grid's padding
    named = with_row_names(grid, ["benign", "malignant"])
    assert named.shape[0] == 3 and named.shape[1] == grid.shape[1] and named.shape[2] > grid.shape[2] + 30
    margin = named[:, :, : named.shape[2] - grid.shape[2]]
    top, bottom = margin[:, : grid.shape[1] // 2], margin[:, grid.shape[1] // 2:]
    assert top.max() > 0.9 and bottom.max() > 0.9  # white text in each row's margin
    assert not torch.equal(top, bottom)  # different names
    assert torch.allclose(named[0, :, -grid.shape[2]:], grid[0])  # the images themselves unchanged
    Image.fromarray((named.permute(1, 2, 0).numpy() * 255).astype(np.uint8))  # a valid picture
