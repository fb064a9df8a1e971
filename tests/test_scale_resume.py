"""Exact resume: a generator `fit` killed mid-epoch and rerun with `--ckpt_path last` ends where an
uninterrupted run of the same seed ends.

What is compared after both runs reach the same step: the EMA weights (the checkpoint's
`state_dict`) and the live weights, the AdamW moments, the LR scheduler, the noise schedule, the
latent scale and the exact batches trained on at every step (data order across the kill and
across two epoch boundaries). What makes it exact, and what it rests on:

- Lightning restores weights, optimizer, LR scheduler, loop counters, EMA
  (`EMAWeightAveraging`) and the noise-schedule callback from the checkpoint by itself.
- `last.ckpt` every N steps and at the final step (`StepCheckpoint`; MAX_STEPS is off the grid).
- Data order: `datamodules.base.ResumableDataLoader` (order a function of seed and epoch; its
  position in the epoch is saved and the batches already trained on are skipped). Lightning on
  its own would restart the epoch's loader from the beginning with a new shuffle.
- Noise: `ResumeRandomState` (added by the CLI) stores the global random generators, which
  Lightning does not checkpoint, and restores them before the first resumed batch.
- Not covered, by design: augmentations that draw from their own unseeded generators (e.g.
  albumentations without a seed) or from DataLoader worker processes are not reproducible even
  without a kill; and the comparison needs the same thread count and hardware on both sides
  (floating-point reduction order), which this test pins with one torch thread.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_gen_helpers import CLASS_LDM_YAML, QUIET_EMA_TRAINER_YAML, TINY_UNET_YAML
import torch
from lightning.pytorch.callbacks import Callback

from datamodules.phantoms import PhantomDataModule
from synthmed.cli import main

ROOT = Path(__file__).resolve().parents[1]
EVERY_N_STEPS, KILL_AT_STEP, MAX_STEPS = 3, 7, 11
PHANTOMS = {"num_per_class": 12, "image_size": 16, "batch_size": 6}  # 27 training images: 5 steps per epoch


class BatchOrderRecorder(Callback):
    """Test helper: appends each step's batch indices to $SYNTHMED_TEST_ORDER_FILE; with
    $SYNTHMED_TEST_KILL_AT_STEP set, SIGKILLs its own process when that step is about to start
    (a real kill, mid-epoch, with no chance to save anything)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == int(os.environ.get("SYNTHMED_TEST_KILL_AT_STEP", -1)):
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        record = {"step": trainer.global_step, "epoch": trainer.current_epoch, "batch_idx": batch_idx,
                  "index": batch["index"].tolist()}
        with open(os.environ["SYNTHMED_TEST_ORDER_FILE"], "a") as handle:
            handle.write(json.dumps(record) + "\n")


CONFIG = """
seed_everything: 7
test_after_fit: false
trainer:
  accelerator: cpu
  devices: 1
  max_steps: {max_steps}
""" + QUIET_EMA_TRAINER_YAML + """    - class_path: lightning_modules.callbacks.checkpoint.StepCheckpoint
      init_args: {{save_last: true, save_top_k: 1, every_n_train_steps: {every}}}
    - class_path: test_scale_resume.BatchOrderRecorder
""" + CLASS_LDM_YAML + """    uncond_prob: 0.3
    noise_schedule: {{name: cosine, num_train_timesteps: 100}}
    optimizer: {{class_path: torch.optim.AdamW, init_args: {{lr: 2.0e-3, weight_decay: 0.0}}}}
    lr_scheduler: {{class_path: lightning_modules.optim.WarmupCosineLR, init_args: {{warmup_steps: 2, decay: cosine}}}}
""" + TINY_UNET_YAML + """data:
  class_path: datamodules.phantoms.PhantomDataModule
  init_args: {phantoms}
"""


@pytest.fixture
def one_thread():
    """Both sides of the comparison must reduce floats in the same order (the subprocess has 1 thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_autoencoder(folder: Path) -> Path:
    from lightning_modules.autoencoder import AutoencoderModule
    from test_gen_helpers import TINY_AE, loader, trainer

    torch.manual_seed(0)
    module = AutoencoderModule(in_channels=1, image_size=16, **TINY_AE)
    t = trainer(folder, max_steps=1)
    t.fit(module, loader(n=8, size=16))
    t.save_checkpoint(folder / "ae.ckpt")
    return folder / "ae.ckpt"


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def fit(config: Path, experiment: str, order_file: Path, monkeypatch, *extra: str) -> None:
    monkeypatch.setenv("SYNTHMED_TEST_ORDER_FILE", str(order_file))
    assert main(["fit", "--config", str(config), "--experiment", experiment, *extra]) == 0


def assert_close_states(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        if torch.is_tensor(a[key]) and a[key].is_floating_point():
            assert torch.allclose(a[key], b[key], rtol=0, atol=1e-6), f"{what}: {key} differs by " \
                f"{(a[key] - b[key]).abs().max().item():.3g}"
        elif torch.is_tensor(a[key]):
            assert torch.equal(a[key], b[key]), f"{what}: {key}"


def test_fit_killed_mid_epoch_resumes_exactly(tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    ae = tiny_autoencoder(tmp_path)
    config = tmp_path / "ldm.yaml"
    config.write_text(CONFIG.format(max_steps=MAX_STEPS, every=EVERY_N_STEPS, ae=ae, phantoms=json.dumps(PHANTOMS)))
    dm = PhantomDataModule(**PHANTOMS)
    dm.setup("fit")
    steps_per_epoch = -(-len(dm.dataset("train")) // PHANTOMS["batch_size"])
    saved_step = KILL_AT_STEP - KILL_AT_STEP % EVERY_N_STEPS  # the last checkpoint before the kill
    assert saved_step % steps_per_epoch and MAX_STEPS > 2 * steps_per_epoch, "the kill must land mid-epoch"

    # 1. uninterrupted
    fit(config, "full", tmp_path / "full.jsonl", monkeypatch)
    full_dir = tmp_path / "logs" / "full" / "version_0"

    # 2. the same run in another process, SIGKILLed when step KILL_AT_STEP is about to start
    killed_order = tmp_path / "resumed.jsonl"
    env = dict(os.environ, OMP_NUM_THREADS="1", SYNTHMED_TEST_KILL_AT_STEP=str(KILL_AT_STEP),
               SYNTHMED_TEST_ORDER_FILE=str(killed_order),
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "synthmed.cli", "fit", "--config", str(config), "--experiment",
                           "resumed"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    run_dir = tmp_path / "logs" / "resumed" / "version_0"
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == saved_step
    before = read_records(killed_order)
    assert [r["step"] for r in before] == list(range(1, KILL_AT_STEP + 1)), "killed before its checkpoint"
    assert before[saved_step - 1]["batch_idx"] < steps_per_epoch - 1, "the checkpoint is mid-epoch"
    original_config = (run_dir / "config.yaml").read_bytes()

    # 3. rerun with --ckpt_path last: same run directory, continues from step `saved_step`
    fit(config, "resumed", killed_order, monkeypatch, "--ckpt_path", "last")
    assert sorted(p.name for p in (tmp_path / "logs" / "resumed").iterdir()) == ["version_0"]
    assert (run_dir / "config.yaml").read_bytes() == original_config, "the original config is kept"
    assert "ckpt_path: last" in (run_dir / "config_resume_1.yaml").read_text()
    # both parts log into the run directory; the finished part adds a third file: its final HParams,
    # written after fit closed the writer (lightning_cli.log_final_hparams)
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 3, "both parts log into the run directory"
    info = json.loads((run_dir / "metrics.json").read_text())["_info"]
    assert info["resumed_from"].endswith("last.ckpt")

    # data order: what the killed run did up to its checkpoint + what the resumed run did == uninterrupted
    records = read_records(killed_order)
    resumed = records[KILL_AT_STEP:]
    assert [r["step"] for r in resumed] == list(range(saved_step + 1, MAX_STEPS + 1))
    assert records[saved_step] == resumed[0], "the step lost in the kill is redone on the same batch"
    full = read_records(tmp_path / "full.jsonl")
    assert len({r["epoch"] for r in full}) == 3 and full[0]["index"] != full[steps_per_epoch]["index"]
    assert before[:saved_step] + resumed == full

    # model, EMA, optimizer, schedules: the two runs end in the same state
    a = torch.load(full_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    b = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert a["global_step"] == b["global_step"] == MAX_STEPS and a["epoch"] == b["epoch"]
    final_top1 = f"epoch={MAX_STEPS // steps_per_epoch}-step={MAX_STEPS}.ckpt"  # off the every-N grid too
    assert [p.name for p in (full_dir / "checkpoints").glob("epoch=*")] == [final_top1]
    assert_close_states(a["state_dict"], b["state_dict"], "EMA weights")
    assert_close_states(a["current_model_state"], b["current_model_state"], "live weights")
    assert_close_states(a["averaging_state"], b["averaging_state"], "EMA counters")
    moved = max((a["state_dict"][k] - last["state_dict"][k]).abs().max().item()
                for k in a["state_dict"] if k.startswith("unet."))
    assert moved > 1e-3, "training moved the EMA weights well beyond the tolerance after the checkpoint"
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        assert_close_states(sa, sb, "AdamW state")
    assert a["lr_schedulers"][0]["last_epoch"] == b["lr_schedulers"][0]["last_epoch"] == MAX_STEPS
    assert a["lr_schedulers"][0]["_last_lr"] == pytest.approx(b["lr_schedulers"][0]["_last_lr"], rel=1e-12)
    assert a["synthmed_diffusion"]["noise_schedule"] == b["synthmed_diffusion"]["noise_schedule"] == {
        "name": "cosine", "num_train_timesteps": 100, "beta_start": 1e-4, "beta_end": 0.02}
    assert a["synthmed_diffusion"]["latent_scale"] == b["synthmed_diffusion"]["latent_scale"]


def test_resumed_run_directory_picks_the_checkpoints_own_run(tmp_path):
    from synthmed.lightning_cli import resumed_run_directory

    experiment = tmp_path / "logs" / "ldm"
    for version, mtime in (("version_0", 100), ("version_1", 300), ("version_2", 200)):
        ckpt = experiment / version / "checkpoints" / "last.ckpt"
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(b"x")
        os.utime(ckpt, (mtime, mtime))
    (experiment / "version_3").mkdir()  # a run killed before its first checkpoint: nothing to resume
    assert resumed_run_directory("last", experiment) == experiment / "version_1", "the most recently written"
    assert resumed_run_directory(str(experiment / "version_2" / "checkpoints" / "last.ckpt"), experiment) == \
        (experiment / "version_2").resolve()
    other = tmp_path / "logs" / "other" / "version_0" / "checkpoints" / "last.ckpt"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"x")
    assert resumed_run_directory(str(other), experiment) is None, "another experiment's checkpoint: a new run"
    assert resumed_run_directory("last", tmp_path / "logs" / "never_ran") is None
    assert resumed_run_directory(str(experiment / "version_0" / "checkpoints" / "missing.ckpt"), experiment) is None
