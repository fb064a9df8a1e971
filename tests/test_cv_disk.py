"""cv's disk use (issue 16 item 3): a finished fold keeps a weights-only best checkpoint, no last.ckpt.

The quickstart left 1.7 GB, mostly best + last per fold with AdamW state; downstream readers
(runs.find_checkpoint -> pipeline best_ckpt / explain / evaluate's classifier extractor) must
still find and load the best checkpoint.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from lightning_modules.classifier import ClassifierModule
from synthmed import cv, runs
from synthmed.finished_run_checkpoints import slim_finished_run

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "experiments" / "quickstart" / "classifier.yaml"
TINY = ["--data.init_args.num_per_class", "6", "--data.init_args.image_size", "24", "--data.init_args.batch_size", "8",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.accelerator", "cpu", "--model.init_args.arch",
        "resnet18", "--test_after_fit", "false"]


def test_finished_folds_keep_weights_only_best_and_no_last(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cv.main(["--config", str(QUICKSTART), *TINY, "--experiment", "cvd", "--folds", "2", "--name", "c"]) == 0
    out = capsys.readouterr().out
    assert "removed last.ckpt" in out and "MB freed" in out
    best_fold = runs.best_fold_run("logs/cvd/c")  # the only fold left with a checkpoint (--keep-fold-checkpoints best)
    (other,) = [p for p in Path("logs/cvd/c").glob("fold_*") if p.resolve() != best_fold.resolve()]
    assert list(other.rglob("*.ckpt")) == [] and (other / "metrics.json").is_file()
    ckpts = best_fold / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("*.ckpt") if p.name.startswith("last")) == []
    best = runs.find_checkpoint(ckpts.parent)
    assert best.name.startswith("best-")
    saved = torch.load(best, weights_only=True, map_location="cpu")
    assert "optimizer_states" not in saved and "lr_schedulers" not in saved and "callbacks" not in saved
    # ResNet-18 weights ~45 MB; with AdamW's two moments the file was ~134 MB
    assert best.stat().st_size < 60e6
    model = ClassifierModule.load_from_checkpoint(best, map_location="cpu")
    assert model.hparams.num_classes == 3
    # the pipeline's cv kind reads the best fold's best checkpoint
    assert runs.find_checkpoint(runs.best_fold_run("logs/cvd/c")).is_file()


def test_keep_last_leaves_the_resumable_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    full = {"state_dict": {"w": torch.zeros(1000)}, "optimizer_states": [{"m": torch.zeros(1000)}],
            "lr_schedulers": [], "callbacks": {}, "epoch": 0, "global_step": 1}
    for name in ("best-epoch=0.ckpt", "last.ckpt"):
        torch.save(full, run / "checkpoints" / name)
    freed, done = slim_finished_run(run, keep_last=True)
    assert freed > 0 and done == ["weights only: best-epoch=0.ckpt"]
    assert "optimizer_states" in torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert set(torch.load(run / "checkpoints" / "best-epoch=0.ckpt", weights_only=True)) == {
        "state_dict", "epoch", "global_step"}
    # a run whose only checkpoint is last.ckpt keeps it (it is its best), stripped
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").mkdir()
    torch.save(full, run / "checkpoints" / "last.ckpt")
    assert slim_finished_run(run)[1] == ["weights only: last.ckpt"]
