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
