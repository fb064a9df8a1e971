"""`synthmed cv --name N` reruns: refused when the resolved configuration changed (issue 15 item 10).

The folds here are faked (a metrics.json per fold): what is tested is which folder cv looks in and
whether it reuses or refuses, not training.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from synthmed import cv

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "experiments" / "quickstart" / "classifier.yaml"
TINY = ["--data.init_args.num_per_class", "8", "--data.init_args.image_size", "24", "--data.init_args.batch_size", "8",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.accelerator", "cpu"]

CONFIG = """
experiment: {experiment}
trainer:
  max_epochs: 1
  enable_progress_bar: false
model:
  class_path: lightning_modules.classifier.ClassifierModule
  init_args: {{arch: resnet18}}
data:
  class_path: datamodules.image_folder.ImageFolderDataModule
  init_args: {{root: tree_a, image_size: 24, batch_size: 8}}
"""


def fake_folds(cv_dir: Path, folds: int) -> None:
    for fold in range(folds):
        run = cv_dir / f"fold_{fold}"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({"test/acc": 0.5 + 0.1 * fold, "val/loss": 1.0 - 0.1 * fold}))


def test_rerun_with_another_arch_root_or_folds_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cv.yaml").write_text(CONFIG.format(experiment="cvx"))
    config, cv_dir = tmp_path / "cv.yaml", Path("logs/cvx/cvA")
    fake_folds(cv_dir, 2)
    base = ["--config", str(config), "--folds", "2", "--name", "cvA"]
    assert cv.main(base) == 0  # first run: folds reused, configuration recorded
    assert capsys.readouterr().out.count("already finished") == 2
    assert (cv_dir / "cv_config.json").is_file() and (cv_dir / "cv_summary.csv").is_file()
    for extra, key in ((["--model.init_args.arch", "mobilenet_v2"], "model.init_args.arch"),
                       (["--data.init_args.root", "tree_b"], "data.init_args.root"),
                       (["--folds", "3"], "folds")):
        assert cv.main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert str(cv_dir) in err and key in err and "--name" in err and "delete" in err, err
    # the refused runs touched nothing
    assert pd.read_csv(cv_dir / "cv_summary.csv")["test/acc"].tolist()[:2] == [0.5, 0.6]
    # keys that do not change what is trained (see cv.HARMLESS_KEYS) may differ
    assert cv.main([*base, "--trainer.devices", "1", "--data.init_args.num_workers", "0"]) == 0
    assert capsys.readouterr().out.count("already finished") == 2


def test_config_changes_lists_keys_and_ignores_harmless_ones():
    old = {"folds": 5, "config": {"model": {"init_args": {"arch": "a"}}, "trainer": {"devices": 1}}}
    new = {"folds": 5, "config": {"model": {"init_args": {"arch": "b"}}, "trainer": {"devices": 4}}}
    assert cv.config_changes(old, new) == {"model.init_args.arch": ("a", "b")}


def test_interrupted_fold_continues_or_restarts(tmp_path, monkeypatch, capsys):
    """A fold killed before its first checkpoint restarts (leftovers moved aside); one killed after it
    continues from its last.ckpt. Both reruns used to be refused: a fixed run_version holding files."""
    monkeypatch.chdir(tmp_path)
    cv_dir = Path("logs/cvr/cvR")
    fake_folds(cv_dir, 1)  # fold 0 finished
    leftover = cv_dir / "fold_1"
    leftover.mkdir()
    (leftover / "config.yaml").write_text("{}\n")  # a run that died before writing a checkpoint
    args = ["--config", str(QUICKSTART), *TINY, "--experiment", "cvr", "--folds", "2", "--name", "cvR",
            "--keep-last"]  # keep the finished fold's last.ckpt: this test resumes from it
    assert cv.main(args) == 0
    assert "left no checkpoint; moved it to" in capsys.readouterr().out
    assert [p.name.split("-")[0] for p in cv_dir.glob("fold_1.incomplete-*")] == ["fold_1.incomplete"]
    assert (leftover / "metrics.json").is_file() and (leftover / "checkpoints" / "last.ckpt").is_file()
    (leftover / "metrics.json").unlink()  # killed after training, before the end of the run
    assert cv.main(args) == 0
    assert f"continuing the interrupted run from {leftover / 'checkpoints' / 'last.ckpt'}" in capsys.readouterr().out
    assert (leftover / "metrics.json").is_file()
    assert len(pd.read_csv(cv_dir / "cv_summary.csv")) == 4  # 2 folds + mean + sd
