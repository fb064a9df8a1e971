"""Two-process DDP on the CPU (gloo) through the `synthmed` CLI, compared with one process.

Lightning's `ddp` strategy re-launches the command line for rank 1, so every DDP run here is a
subprocess (`python -m synthmed.cli ...`); the one-process reference runs in-process. What is
checked: the run ends, one run directory, the same metrics.json keys as one process, metrics
synced over both ranks (the test confusion matrix counts every test image once), rank-zero-only
outputs (one confusion-matrix figure, one sample grid per epoch), the latent cache filled once
across ranks, and a DDP `predict` that writes every synthetic image index exactly once.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_gen_helpers import CLASS_LDM_YAML, QUIET_EMA_TRAINER_YAML, TINY_UNET_YAML

from synthmed.cli import main

ROOT = Path(__file__).resolve().parents[1]
DDP = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]

CLASSIFIER = """
seed_everything: 1
trainer:
  max_epochs: 1
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {monitor: val/loss, mode: min, save_last: true}
model:
  class_path: lightning_modules.classifier.ClassifierModule
  init_args: {arch: resnet18, optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 0.001}}}
data:
  class_path: datamodules.phantoms.PhantomDataModule
  init_args: {num_per_class: 12, image_size: 24, batch_size: 8}
"""

LDM = """
seed_everything: 3
test_after_fit: false
trainer:
  max_steps: 4
""" + QUIET_EMA_TRAINER_YAML + """    - class_path: lightning_modules.callbacks.sample_grid.SampleGridCallback
      init_args: {{every_n_epochs: 1, num_per_class: 2, num_inference_steps: 2}}
    - class_path: lightning_modules.callbacks.checkpoint.StepCheckpoint
      init_args: {{save_last: true, save_top_k: 1, every_n_train_steps: 2}}
""" + CLASS_LDM_YAML + """    num_inference_steps: 2
    noise_schedule: {{num_train_timesteps: 50}}
""" + TINY_UNET_YAML + """data:
  class_path: datamodules.phantoms.PhantomDataModule
  init_args: {{num_per_class: 8, image_size: 16, batch_size: 4}}
"""

GENERATE = """
data:
  class_path: datamodules.generation.GenerationDataModule
  init_args:
    num_per_class: {n}
    class_names: [benign, malignant, normal]
    output_dir: {out}
    image_size: 16
    batch_size: 2
    num_inference_steps: 2
"""


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "synthmed.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def only_run_dir(experiment_dir: Path, stdout: str) -> Path:
    printed = re.findall(r"^run_dir: (.+)$", stdout, flags=re.M)
    assert len(printed) == 1, f"one rank prints the run directory, got {printed}"
    assert sorted(p.name for p in experiment_dir.iterdir()) == ["version_0"], "rank 1 must not open a run directory"
    return experiment_dir / "version_0"


def metric_keys(run_dir: Path) -> set[str]:
    return {k for k in json.loads((run_dir / "metrics.json").read_text()) if not k.startswith("_")}


def image_events(log_dir: Path, tag: str) -> list[int]:
    """Steps of every TensorBoard image event with `tag` in all event files under `log_dir`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = []
    for event_file in sorted(log_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(event_file), size_guidance={"images": 0})
        acc.Reload()
        if tag in acc.Tags()["images"]:
            steps += [event.step for event in acc.Images(tag)]
    return steps


def test_ddp_classifier_fit_matches_one_process(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "classifier.yaml"
    config.write_text(CLASSIFIER)
    assert main(["fit", "--config", str(config), "--experiment", "single"]) == 0
    single = tmp_path / "logs" / "single" / "version_0"

    proc = run_cli(["fit", "--config", str(config), "--experiment", "ddp", *DDP], tmp_path)
    run_dir = only_run_dir(tmp_path / "logs" / "ddp", proc.stdout)
    assert metric_keys(run_dir) == metric_keys(single) and "test/f1_macro" in metric_keys(run_dir)
    # torchmetrics states are synced: the confusion matrix of rank 0 counts both ranks' test images
    manifest = pd.read_csv(run_dir / "split_manifest.csv")
    support = pd.read_csv(run_dir / "test_per_class.csv")["support"]
    assert support.sum() == (manifest.split == "test").sum() and (manifest.split == "test").sum() % 2 == 0
    predictions = pd.read_csv(run_dir / "test_predictions.csv")  # gathered from both ranks, one row per image
    assert sorted(predictions["index"]) == sorted(manifest["index"][manifest.split == "test"])
    assert len(image_events(tmp_path / "logs" / "ddp", "test/confusion_matrix")) == 1, "one figure, from rank zero"


@pytest.fixture(scope="module")
def ae_ckpt(tmp_path_factory) -> Path:
    from test_scale_resume import tiny_autoencoder

    return tiny_autoencoder(tmp_path_factory.mktemp("ae"))


@pytest.mark.slow
def test_ddp_latent_diffusion_fit_and_predict(tmp_path, monkeypatch, ae_ckpt):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "ldm.yaml"
    config.write_text(LDM.format(ae=ae_ckpt))
    assert main(["fit", "--config", str(config), "--experiment", "single"]) == 0
    single = tmp_path / "logs" / "single" / "version_0"

    proc = run_cli(["fit", "--config", str(config), "--experiment", "ddp", *DDP], tmp_path)
    run_dir = only_run_dir(tmp_path / "logs" / "ddp", proc.stdout)
    assert metric_keys(run_dir) == metric_keys(single)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    train_images = (pd.read_csv(run_dir / "split_manifest.csv").split == "train").sum()
    assert metrics["latent_cache/encoded"] == train_images, "each training image encoded once over both ranks"
    assert metrics["latent_cache/size"] == train_images, "and every rank holds the whole cache"
    # 4 steps of 2 batches per rank = 2 epochs: one grid per epoch, from rank zero only
    grids = sorted(p.name for p in (run_dir / "sample_grids").iterdir())
    assert grids == ["epoch_0000.png", "epoch_0001.png"]
    assert sorted(image_events(tmp_path / "logs" / "ddp", "samples/grid")) == [0, 1]

    n, out = 5, tmp_path / "synthetic"
    (tmp_path / "generate.yaml").write_text(GENERATE.format(n=n, out=out))
    proc = run_cli(["predict", "--config", str(config), "--config", str(tmp_path / "generate.yaml"),
                    "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt"), "--experiment", "generate",
                    "--trainer.callbacks+=lightning_modules.callbacks.synthetic_writer.SyntheticSetWriter", *DDP],
                   tmp_path)
    per_rank = json.loads(re.search(r"per rank: (\[[\d, ]+\])", proc.stdout + proc.stderr).group(1))
    assert len(per_rank) == 2 and min(per_rank) > 0 and sum(per_rank) == 3 * n, per_rank
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert files == sorted(f"{c}/{i:06d}.png" for c in ("benign", "malignant", "normal") for i in range(n))
    with open(out / "metadata.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["file_name"] for r in rows) == files, "one metadata row per image, no duplicates"
