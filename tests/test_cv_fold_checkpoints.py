"""A finished cv keeps the best fold's checkpoint only (issue 16 item 3), unless asked to keep all.

The folds are faked (metrics.json + checkpoint files per fold; cv reuses finished folds), so what is
tested is which checkpoints cv leaves after writing cv_summary.csv, not training.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthmed import cv, runs

CONFIG = """
experiment: cvk
trainer:
  max_epochs: 1
  enable_progress_bar: false
model:
  class_path: lightning_modules.classifier.ClassifierModule
  init_args: {arch: resnet18}
data:
  class_path: datamodules.image_folder.ImageFolderDataModule
  init_args: {root: tree_a, image_size: 24, batch_size: 8}
"""
VAL_LOSS = (0.9, 0.4, 0.7)  # fold 1 is the best fold (lowest val/loss)


def finished_folds(cv_dir: Path) -> None:
    """Three finished folds, each with a best checkpoint, a last.ckpt and a Lightning SLURM save."""
    for fold, loss in enumerate(VAL_LOSS):
        run = cv_dir / f"fold_{fold}"
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "best-epoch=3.ckpt").write_bytes(b"w" * 1000)
        (run / "checkpoints" / "last.ckpt").write_bytes(b"l" * 1000)
        (run / "hpc_ckpt_1.ckpt").write_bytes(b"h" * 1000)
        (run / "test_predictions.csv").write_text("index,label,pred\n0,0,0\n")
        (run / "metrics.json").write_text(json.dumps({"test/acc": 0.5, "val/loss": loss, "_info": {
            "tested_checkpoint": str(run / "checkpoints" / "best-epoch=3.ckpt")}}))


def ckpt_names(cv_dir: Path) -> dict[str, list[str]]:
    return {f"fold_{k}": sorted(p.name for p in (cv_dir / f"fold_{k}").rglob("*.ckpt")) for k in range(3)}


@pytest.fixture
def cv_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cv.yaml").write_text(CONFIG)
    cv_dir = Path("logs/cvk/c")
    finished_folds(cv_dir)
    return cv_dir, ["--config", str(tmp_path / "cv.yaml"), "--folds", "3", "--name", "c"]


def test_finished_cv_keeps_only_the_best_folds_checkpoints(cv_folder, capsys):
    cv_dir, args = cv_folder
    assert cv.main(args) == 0
    printed = capsys.readouterr().out
    assert "fold_1 (lowest val/loss) keeps its checkpoint; removed those of fold_0, fold_2 (0 MB;" in printed
    all_three = ["best-epoch=3.ckpt", "hpc_ckpt_1.ckpt", "last.ckpt"]
    assert ckpt_names(cv_dir) == {"fold_0": [], "fold_1": all_three, "fold_2": []}
    for fold in (0, 2):  # what the report and a rerun read stays
        assert (cv_dir / f"fold_{fold}" / "metrics.json").is_file()
        assert (cv_dir / f"fold_{fold}" / "test_predictions.csv").is_file()
    # what a pipeline's ${stages.<cv>.best_ckpt} names (CvKind.checkpoint_run -> find_checkpoint) is still there
    best = runs.find_checkpoint(runs.best_fold_run(cv_dir))
    assert best.resolve() == (cv_dir / "fold_1" / "checkpoints" / "best-epoch=3.ckpt").resolve()
    assert cv.main(args) == 0  # a rerun reuses the folds and removes nothing more
    assert ckpt_names(cv_dir)["fold_1"] == all_three


@pytest.mark.parametrize("option", [["--keep-fold-checkpoints", "all"], ["--keep-last"]])
def test_keep_fold_checkpoints_all_or_keep_last_keeps_every_fold(cv_folder, capsys, option):
    cv_dir, args = cv_folder
    assert cv.main([*args, *option]) == 0
    assert "keeps its checkpoint; removed" not in capsys.readouterr().out
    assert all(len(names) == 3 for names in ckpt_names(cv_dir).values())
