"""The `synthmed` CLI end to end on tiny phantom runs: run directory, metrics, links, cv."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from synthmed.cli import main
from synthmed.cv import summarise

TINY = """
experiment: {experiment}
seed_everything: 1
trainer:
  max_epochs: 1
  limit_train_batches: 3
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{monitor: val/loss, mode: min, save_last: true}}
model:
  class_path: lightning_modules.classifier.ClassifierModule
  init_args: {{arch: resnet18}}  # default optimizer: AdamW lr 1e-3
data:
  class_path: datamodules.phantoms.PhantomDataModule
  init_args: {{num_per_class: 16, image_size: 24, batch_size: 8}}
"""


@pytest.fixture
def tiny_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.format(experiment="tiny_${model.init_args.arch}"))
    return path


def last_run_dir(out: str) -> Path:
    lines = [line for line in out.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("run_dir: "), lines[-3:]
    return Path(lines[-1].split("run_dir: ", 1)[1])


def test_fit_writes_a_complete_run_directory(tiny_config, capsys):
    assert main(["fit", "--config", str(tiny_config), "--data.image_size", "20"]) == 0
    run_dir = last_run_dir(capsys.readouterr().out)
    assert run_dir == Path("logs/tiny_resnet18/version_0")  # ${...} interpolation resolved
    for name in ("config.yaml", "env.json", "metrics.json", "split_manifest.csv", "test_per_class.csv"):
        assert (run_dir / name).is_file(), name
    assert list(run_dir.glob("events.out.tfevents.*")) and list((run_dir / "checkpoints").glob("*.ckpt"))
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    init = config["model"]["init_args"]
    # data -> model links: the YAML never stated these
    assert (init["num_classes"], init["in_channels"], init["image_size"]) == (3, 1, 20)
    assert init["class_names"] == ["benign", "malignant", "normal"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("test/acc", "test/loss", "test/f1_macro", "test/precision", "test/recall", "val/loss", "train/loss"):
        assert 0.0 <= metrics[key] < 10.0, key
    assert "best" in metrics["_info"]["tested_checkpoint"] or "epoch" in metrics["_info"]["tested_checkpoint"]
    env = json.loads((run_dir / "env.json").read_text())
    assert env["packages"]["lightning"] and "commit" in env["git"]
    manifest = pd.read_csv(run_dir / "split_manifest.csv")
    assert set(manifest.split) == {"train", "val", "test"} and len(manifest) == 48


def test_fast_dev_run_writes_no_checkpoint(tiny_config, tmp_path):
    """Lightning 2.6.6 writes last.ckpt to ./checkpoints at train end even under fast_dev_run
    (a 1.8 GB file per smoke run of the seed-003 YAML filled CI's disk); the CLI stops it."""
    assert main(["fit", "--config", str(tiny_config), "--trainer.fast_dev_run", "true"]) == 0
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.ckpt")) == []


def test_stacked_configs_and_test_verb(tiny_config, tmp_path, capsys):
    extra = tmp_path / "more.yaml"
    extra.write_text("experiment: stacked\ntest_after_fit: false\n")
    main(["fit", "--config", str(tiny_config), "--config", str(extra)])
    run_dir = last_run_dir(capsys.readouterr().out)
    assert run_dir.parent.name == "stacked"
    assert not any(k.startswith("test/") for k in json.loads((run_dir / "metrics.json").read_text()))
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    main(["test", "--config", str(tiny_config), "--ckpt_path", str(ckpt), "--experiment", "tested"])
    test_dir = last_run_dir(capsys.readouterr().out)
    assert "test/acc" in json.loads((test_dir / "metrics.json").read_text())


def test_cv_summary_and_resume(tiny_config, capsys):
    args = ["cv", "--config", str(tiny_config), "--folds", "2", "--name", "cv_a"]
    assert main(args) == 0
    out = capsys.readouterr().out
    cv_dir = last_run_dir(out)
    summary = pd.read_csv(cv_dir / "cv_summary.csv")
    assert summary["fold"].astype(str).tolist() == ["0", "1", "mean", "sd"]
    assert summary.loc[2, "test/acc"] == pytest.approx(summary.loc[:1, "test/acc"].mean())
    assert "mean ± sd" in out
    # the two folds validated on disjoint images and tested on the same ones
    m0 = pd.read_csv(cv_dir / "fold_0" / "split_manifest.csv")
    m1 = pd.read_csv(cv_dir / "fold_1" / "split_manifest.csv")
    assert set(m0[m0.split == "val"].key).isdisjoint(m1[m1.split == "val"].key)
    assert set(m0[m0.split == "test"].key) == set(m1[m1.split == "test"].key)
    assert main(args) == 0  # rerun: both folds reused
    assert capsys.readouterr().out.count("already finished") == 2


def test_summarise_mean_sd():
    table = summarise([{"fold": 0, "test/acc": 0.5}, {"fold": 1, "test/acc": 0.7}])
    assert table.loc[2, "test/acc"] == pytest.approx(0.6)
    assert table.loc[3, "test/acc"] == pytest.approx(0.1414, abs=1e-3)


def test_unknown_option_and_console_script(tiny_config):
    result = subprocess.run([sys.executable, "-m", "synthmed.cli", "fit", "--config", str(tiny_config),
                             "--data.no_such_option", "1"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "no_such_option" in result.stderr


def test_ckpt_path_disables_initial_pretrained_weights():
    from jsonargparse import Namespace

    from synthmed.lightning_cli import SynthmedCLI

    config = Namespace(ckpt_path="last.ckpt", model=Namespace(class_path="x.Y", init_args=Namespace(pretrained="/gone.pth")))
    SynthmedCLI._skip_initial_weights_when_resuming(config)
    assert config.model.init_args.pretrained is False
    fresh = Namespace(ckpt_path=None, model=Namespace(class_path="x.Y", init_args=Namespace(pretrained="/w.pth")))
    SynthmedCLI._skip_initial_weights_when_resuming(fresh)
    assert fresh.model.init_args.pretrained == "/w.pth"


def test_cv_finds_run_location_like_the_cli(tiny_config, tmp_path):
    from synthmed.trainer_run import TrainerRun  # the real CLI parser, nothing instantiated

    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("experiment: first\nlogs_root: runs\n")
    b.write_text("experiment: second\n")
    base = TrainerRun.from_configs("fit", [str(tiny_config), str(a)])
    config = base.with_args(["--config", str(b)]).resolve()
    assert (config.logs_root, config.experiment) == ("runs", "second")
    assert base.with_args(["--experiment=third"]).resolve().experiment == "third"
    assert str(base.with_options({"trainer.devices": 2}).resolve().trainer.devices) == "2"
