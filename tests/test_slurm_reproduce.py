"""`reproduce --launcher slurm` against a real single-node SLURM (tests/slurm_cluster.py).

(a)+(b) the quickstart smoke pipeline as SLURM jobs, with one classifier task requeued mid-run
(`scontrol requeue`): every stage completes, after the stages it reads, and report.md's classifier
rows equal the local launcher's; the requeued task's log keeps the first attempt. SIGUSR1 to a
running fit (what `--signal=SIGUSR1@90` does): Lightning saves hpc_ckpt_1.ckpt in the run directory
and requeues; the task resumes from it and finishes. (c) `--status` names a failed stage and its log.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from slurm_cluster import SlurmCluster, SlurmUnavailable
from synthmed.pipeline.runner import main

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except SlurmUnavailable as exc:
        pytest.skip(f"SLURM cannot start here: {exc}")
    print(f"SLURM started in {cluster.start_seconds:.1f} s")
    yield cluster
    cluster.stop()


@pytest.fixture(autouse=True)
def slurm_env(slurm, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("SLURM_CONF", slurm.env["SLURM_CONF"])


def release_requeued(slurm: SlurmCluster, task: str) -> None:
    """SLURM holds a requeued job back (BeginTime, ~2 min); the test lets it start at once."""
    time.sleep(1)
    subprocess.run(["scontrol", "update", f"JobId={task}", "StartTime=now"], env=slurm.env, capture_output=True)


def wait_for(check, timeout: float = 300.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.3)
    raise TimeoutError("condition not reached")


def started_at(log: Path) -> float:
    stamp = re.search(r"^=== (\S+Z) task", log.read_text(), re.M).group(1)
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


def report_numbers(report: str) -> list[str]:
    """Every number in report.md's result tables, in order (the Stages table, with each stage's seconds,
    comes after them and is left out; so are cells with paths)."""
    results = report.split("## Stages")[0]
    cells = [cell for line in results.splitlines() if line.startswith("|") for cell in line.split("|")]
    return [n for cell in cells if "/" not in cell and " s" not in cell for n in re.findall(r"-?\d+\.\d+", cell)]


def classifier_rows(report: str) -> list[str]:
    return [line for line in report.splitlines() if re.match(r"\| (TSTR|TRTR|TR\+S) \| resnet18 \| ours", line)]


def test_quickstart_on_slurm_equals_local_and_survives_a_requeue(slurm, tmp_path, capsys, monkeypatch):
    args = ["experiments/quickstart/pipeline.yaml", "--scale", "smoke"]
    assert main([*args, "--launcher", "slurm", "--out", str(tmp_path / "slurm")]) == 0
    submitted = capsys.readouterr().out
    assert "tstr: submitted job" in submitted and "report: submitted job" in submitted
    jobs = dict(re.findall(r"^(\S+): submitted job (\d+)", submitted, re.M))
    # requeue the first TSTR fold once it runs (what a preemption does, minus the signal)
    end, requeued = time.monotonic() + 600, False
    while time.monotonic() < end and not requeued:
        state = slurm.run("squeue", "-h", "-r", "-j", jobs["tstr"], "-o", "%i %T")
        if f"{jobs['tstr']}_0 RUNNING" in state:
            time.sleep(3)
            subprocess.run(["scontrol", "requeue", f"{jobs['tstr']}_0"], env=slurm.env, check=True)
            release_requeued(slurm, f"{jobs['tstr']}_0")
            requeued = True
        elif not slurm.run("squeue", "-h", "-o", "%i").strip():
            break
        time.sleep(0.5)
    slurm.wait_idle(900)
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "slurm"), "--status"]) == 0
    status = capsys.readouterr().out
    assert "| report | done |" in status and "failed" not in status
    slurm_report = (tmp_path / "slurm" / "report.md").read_text()
    logs = tmp_path / "slurm" / "slurm_logs"
    recorded = json.loads((tmp_path / "slurm" / "slurm_jobs.json").read_text())
    for group, job in recorded.items():  # each job started after every job it reads had written its last line
        for need in job["needs"]:
            last_write = max(p.stat().st_mtime for p in logs.glob(f"{need}_{recorded[need]['job_id']}_*.out"))
            assert min(started_at(p) for p in logs.glob(f"{group}_{job['job_id']}_*.out")) >= int(last_write) - 1
    assert recorded["tstr"]["needs"] == ["real_test", "synthetic"] and "trtr" in recorded["evaluate"]["needs"]
    assert requeued
    first_log = next(logs.glob(f"tstr_{jobs['tstr']}_0.out")).read_text()
    assert "attempt 0" in first_log and "attempt 1" in first_log  # append mode kept the first attempt
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as the jobs (cpus: 1); the local launcher's subprocesses read it
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    for stage in ("autoencoder", "ldm"):
        assert (json.loads((tmp_path / "slurm" / stage / "run" / "metrics.json").read_text())
                == json.loads((tmp_path / "local" / stage / "run" / "metrics.json").read_text())), stage
    images = sorted((tmp_path / "slurm" / "synthetic" / "images").glob("*/*.png"))
    # byte-identical: the PNGs name their generator by its weights' sha256, not the checkpoint file's
    # (whose bytes hold the run's paths; datamodules/weights_digest.py)
    assert images and all(p.read_bytes() == (tmp_path / "local" / p.relative_to(tmp_path / "slurm")).read_bytes()
                          for p in images)
    local_report = (tmp_path / "local" / "report.md").read_text()
    rows = [classifier_rows(r) for r in (slurm_report, local_report)]
    assert len(rows[1]) == 3 and rows[0] == rows[1]  # TSTR, TRTR and TR+S equal to every digit
    assert report_numbers(slurm_report) == report_numbers(local_report)
    # a rerun submits nothing
    capsys.readouterr()
    assert main([*args, "--launcher", "slurm", "--out", str(tmp_path / "slurm")]) == 0
    assert "submitted" not in capsys.readouterr().out


def test_status_names_a_failed_stage_and_its_log(slurm, tmp_path, capsys):
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("name: failing\nstages:\n"
                        "  - {name: phantoms, verb: make-phantoms, args: [--per-class, 1, --size, 16]}\n"
                        "  - {name: broken, verb: make-phantoms, args: [--per-class, not-a-number]}\n")
    out = tmp_path / "out"
    assert main([str(pipeline), "--launcher", "slurm", "--out", str(out)]) == 0
    slurm.wait_idle(300)
    capsys.readouterr()
    assert main([str(pipeline), "--out", str(out), "--status"]) == 1
    status = capsys.readouterr().out
    assert "| phantoms | done |" in status
    (line,) = [s for s in status.splitlines() if s.startswith("| broken |")]
    assert "| failed |" in line
    log = Path(re.search(r"log (\S+\.out)", line).group(1))
    assert log.is_file() and "not-a-number" in log.read_text()
    assert "| report | cancelled | never started: a stage it waits for failed" in status


PREEMPTED = """name: preempted
stages:
  - {name: real, verb: make-phantoms, args: [--per-class, 4, --size, 32, --seed, 0]}
  - name: ae
    verb: fit
    config:
      - experiments/quickstart/autoencoder.yaml
      - data:
          class_path: datamodules.image_folder.ImageFolderDataModule
          init_args: {root: "${stages.real.out}", image_size: 32, channels: 1, batch_size: 4, test_fraction: 0.0,
                      val_fraction: 0.25, seed: 0}
    args: [--trainer.max_epochs, 100000, --trainer.max_steps, 400, --trainer.limit_val_batches, 1,
           --trainer.enable_progress_bar, "false"]
"""


def test_sigusr1_saves_hpc_checkpoint_in_the_run_and_the_requeued_fit_resumes_from_it(slurm, tmp_path, capsys):
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(PREEMPTED)
    out = tmp_path / "slurm"
    assert main([str(pipeline), "--launcher", "slurm", "--out", str(out)]) == 0
    jobs = dict(re.findall(r"^(\S+): submitted job (\d+)", capsys.readouterr().out, re.M))
    run = out / "ae" / "run"
    wait_for(lambda: (run / "config.yaml").is_file())  # the fit has started
    time.sleep(1)  # a few steps in; 400 steps take ~20 s here, so the signal lands mid-fit
    # what SLURM does 90 s before the time limit with --signal=SIGUSR1@90: signal the job step
    subprocess.run(["scancel", "--signal=USR1", jobs["ae"]], env=slurm.env, check=True)
    wait_for(lambda: any(run.glob("hpc_ckpt_*.ckpt")), 120)
    wait_for(lambda: "PENDING" in slurm.run("squeue", "-h", "-r", "-j", jobs["ae"], "-o", "%T"), 120)
    release_requeued(slurm, f"{jobs['ae']}_0")
    slurm.wait_idle(600)
    log = (out / "slurm_logs" / f"ae_{jobs['ae']}_0.out").read_text()
    assert "attempt 0" in log and "attempt 1" in log, log[-3000:]  # the first attempt's log is kept
    assert re.search(r"--ckpt_path \S+/ae/run/hpc_ckpt_1\.ckpt", log)
    assert (run / "metrics.json").is_file() and not list(Path.cwd().glob("hpc_ckpt_*.ckpt"))
    resumed = json.loads((run / "metrics.json").read_text())
    assert {"train/loss", "val/loss"} <= set(resumed)
    # Not asserted (measured, open): the metrics of this run equal to an uninterrupted one. Lightning
    # saves hpc_ckpt inside the signal handler, not at a step boundary; the resumed autoencoder ended with
    # train/loss 0.2363 vs 0.2332 uninterrupted (no augmentation); the cause is not pinned down (resuming from StepCheckpoint's last.ckpt is the path tests/test_scale_resume.py checks).
