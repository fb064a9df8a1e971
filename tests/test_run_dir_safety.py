"""A run directory never mixes two runs (issue 15 item 8): rerunning a YAML with a fixed `run_version`
replaced config.yaml and metrics.json while checkpoints/last.ckpt stayed the first run's model (the
second went to last-v1.ckpt)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from synthmed.cli import main
from synthmed.lightning_cli import RunDirectoryInUse

ROOT = Path(__file__).resolve().parents[1]
AUTOENCODER = ["fit", "--config", str(ROOT / "experiments/quickstart/autoencoder.yaml"),
               "--data.init_args.num_per_class", "10", "--data.init_args.batch_size", "8",
               "--trainer.max_steps", "1", "--trainer.enable_progress_bar", "false",
               "--trainer.enable_model_summary", "false"]
RUN_DIR = Path("logs/quickstart/autoencoder")  # experiment: quickstart, run_version: autoencoder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_fit_into_a_fixed_run_version_is_refused_and_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(AUTOENCODER) == 0
    before = snapshot(RUN_DIR)
    assert "checkpoints/last.ckpt" in before and "metrics.json" in before
    with pytest.raises(RunDirectoryInUse) as err:
        main([*AUTOENCODER, "--model.init_args.kl_weight", "0.5"])
    message = str(err.value)
    for part in (f"run directory {RUN_DIR} already holds a run", "checkpoints/last.ckpt", "config.yaml",
                 "--ckpt_path last", "--run_version <new name>", "--run_version null", "nothing in it was changed"):
        assert part in message, part
    assert snapshot(RUN_DIR) == before  # no last-v1.ckpt, config.yaml and metrics.json are the first run's


def test_resume_and_a_new_version_are_the_ways_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(AUTOENCODER) == 0
    assert main([*AUTOENCODER, "--trainer.max_steps", "2", "--ckpt_path", "last"]) == 0
    assert (RUN_DIR / "config_resume_1.yaml").is_file() and not list(RUN_DIR.glob("checkpoints/last-v*.ckpt"))
    assert torch.load(RUN_DIR / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2
    assert main([*AUTOENCODER, "--ckpt_path", str(RUN_DIR / "checkpoints" / "last.ckpt"),
                 "--trainer.max_steps", "3"]) == 0  # a checkpoint inside the run is a resume too
    assert main([*AUTOENCODER, "--model.init_args.kl_weight", "0.5", "--run_version", "kl05"]) == 0
    assert json.loads((Path("logs/quickstart/kl05") / "metrics.json").read_text())


def test_files_a_sweep_writes_before_its_run_do_not_count(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    RUN_DIR.mkdir(parents=True)
    (RUN_DIR / "overrides.json").write_text("{}\n")
    (RUN_DIR / "sweep.log").write_text("synthmed fit ...\n")
    assert main(AUTOENCODER) == 0
    assert (RUN_DIR / "checkpoints" / "last.ckpt").is_file()


def test_an_identical_test_rerun_is_allowed_and_another_config_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*AUTOENCODER, "--test_after_fit", "false"]) == 0
    ckpt = str(RUN_DIR / "checkpoints" / "last.ckpt")
    test = ["test", *AUTOENCODER[1:], "--ckpt_path", ckpt, "--run_version", "tested"]
    assert main(test) == 0
    assert main(test) == 0  # the same request again (e.g. after a kill) reuses its directory
    with pytest.raises(RunDirectoryInUse, match=r"this test has another config than its config.yaml"):
        main([*test, "--data.init_args.seed", "3"])
