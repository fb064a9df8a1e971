"""`synthmed sweep` / `sweep-summary`: grid expansion, a real 2 x 2 local sweep on phantoms,
resume by skipping finished runs, the SLURM array script, and the trainer presets."""

from __future__ import annotations

import itertools
import json
import os
import shlex
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from synthmed.sweep import cli as sweep
from synthmed.sweep import summary as sweep_summary
from synthmed.sweep.grid import GridError, PlannedRun, format_value, load_grid, name_keys, plan_runs, run_name
from synthmed.sweep.local import run_local

REPO = Path(__file__).resolve().parents[1]
CLASSIFIER = REPO / "experiments" / "quickstart" / "classifier.yaml"
GRID_EXAMPLE = REPO / "experiments" / "quickstart" / "grid_example.yaml"
GRID_PAPER = REPO / "experiments" / "nafi2024_tstr" / "grid_paper.yaml"
PAPER_CONFIG = REPO / "experiments" / "nafi2024_tstr" / "classifier_real.yaml"
ARCHS = ["resnet18", "mobilenet_v2"]
SEEDS = [0, 1]


def write_grid(tmp_path: Path, text: str, name: str = "grid.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---- grid files ----------------------------------------------------------------------------
def test_example_grid_expands_to_named_product():
    grid = load_grid(GRID_EXAMPLE)
    assert [(r["model.arch"], r["seed_everything"]) for r in grid.runs] == list(itertools.product(ARCHS, SEEDS))
    runs = plan_runs(grid, [str(CLASSIFIER)], [], Path("/x/sweep"))
    assert [r.name for r in runs] == [f"arch={a}__seed_everything={s}" for a, s in itertools.product(ARCHS, SEEDS)]
    first = runs[0].args
    assert first[0] == "fit" and first[1:3] == ["--config", str(CLASSIFIER)]
    # the overrides come after base_args so they win; the location comes last
    assert first.index("--model.arch") > first.index("--trainer.max_epochs=1")
    assert first[-8:] == ["--logs_root", "/x", "--experiment", "sweep", "--run_version", runs[0].name,
                          "--trainer.default_root_dir", f"/x/sweep/{runs[0].name}"]


def test_paper_grid_is_40_runs_with_folds_and_gpu_resources(tmp_path, monkeypatch, capsys):
    grid = load_grid(GRID_PAPER)
    assert len(grid.runs) == 40 and grid.num_folds == 5 and grid.slurm["gpus"] == 1
    assert {r["data.init_args.fold"] for r in grid.runs} == set(range(5))
    assert len({r["model.init_args.arch"] for r in grid.runs}) == 8
    runs = plan_runs(grid, [str(PAPER_CONFIG)], [], tmp_path / "paper")
    assert len({r.name for r in runs}) == 40
    args = runs[7].args
    assert args[args.index("--data.init_args.num_folds") + 1] == "5"
    monkeypatch.chdir(tmp_path)
    assert sweep.main(["--config", str(PAPER_CONFIG), "--grid", str(GRID_PAPER), "--launcher", "slurm",
                       "--max-parallel", "8", "--out", str(tmp_path / "paper")]) == 0
    script = (tmp_path / "paper" / "sweep.sbatch").read_text()
    assert "#SBATCH --array=0-39%8" in script and "#SBATCH --gres=gpu:1" in script
    assert "#SBATCH --partition=gpu" in script and "#SBATCH --ntasks-per-node=1" in script
    assert subprocess.run(["bash", "-n", str(tmp_path / "paper" / "sweep.sbatch")]).returncode == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"out: {tmp_path / 'paper'}"


def test_runs_cross_axes_and_names_stay_unique(tmp_path):
    path = write_grid(tmp_path, """
axes: {data.init_args.fold: [0, 1]}
runs:
  - {model.init_args.lr: 0.001, model.init_args.seed: 3, data.init_args.seed: 4}
  - {model.init_args.lr: 0.0001, model.init_args.seed: 3, data.init_args.seed: 4}
""")
    runs = plan_runs(load_grid(path), ["base.yaml"], [], tmp_path / "s")
    names = [r.name for r in runs]
    assert len(runs) == 4 and len(set(names)) == 4
    # `seed` is in two sections, so its label keeps the section
    assert names[0] == "lr=0.001__model-seed=3__data-seed=4__fold=0"
    assert name_keys(["model.init_args.arch", "seed_everything"]) == {"model.init_args.arch": "arch",
                                                                      "seed_everything": "seed_everything"}
    long_name = run_name({"data.root": "/very/long/path/" * 6}, {"data.root": "root"})
    assert len(long_name) < 50 and "/" not in long_name
    assert [format_value(v) for v in (True, None, 3, 0.5, [1, 2], "x y")] == ["true", "null", "3", "0.5",
                                                                           "[1,2]", "x y"]


@pytest.mark.parametrize("text, message", [
    ("axes: {model.arch: [resnet18]}\nbogus: 1\n", "unknown key(s) ['bogus']"),
    ("axes: {model.arch: []}\n", "axis model.arch is empty"),
    ("axes: {model.arch: resnet18}\n", "must be a list of values"),
    ("runs: [resnet18]\n", "runs[0] must be a mapping"),
    ("axes: {--model.arch: [a]}\n", "is not an option name"),
    ("axes: {run_version: [a]}\n", "is set by the sweep itself"),
    ("axes: {model.arch: [a]}\nslurm: {gpu: 1}\n", "slurm: unknown key 'gpu'"),
    ("axes: {model.arch: [a]}\nslurm: {gpus: two}\n", "slurm.gpus"),
    ("axes: {data.fold: [0, 5]}\nnum_folds: 5\n", "not folds 0..4"),
    ("axes: {model.arch: [a]}\nruns: [{model.init_args.arch: b}]\n", "both an axis and set in a `runs`"),
    ("base_args: x\naxes: {model.arch: [a]}\n", "`base_args` must be a list"),
    ("num_folds: 5\n", "needs `axes`"),
    ("- a\n", "must be a YAML mapping"),
])
def test_bad_grid_names_the_file(tmp_path, text, message, capsys):
    path = write_grid(tmp_path, text, "bad_grid.yaml")
    with pytest.raises(GridError) as err:
        load_grid(path)
    assert str(path) in str(err.value) and message in str(err.value)
    assert sweep.main(["--config", str(CLASSIFIER), "--grid", str(path), "--out", str(tmp_path / "o")]) == 2
    assert str(path) in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_refuses_to_overwrite_foreign_runs_file(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "runs.txt").write_text("my notes\n")
    assert sweep.main(["--config", str(CLASSIFIER), "--grid", str(GRID_EXAMPLE), "--launcher", "slurm",
                       "--out", str(out)]) == 2
    assert (out / "runs.txt").read_text() == "my notes\n" and "choose another --out" in capsys.readouterr().err


# ---- SLURM ---------------------------------------------------------------------------------
def test_slurm_array_script_and_run_list(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path, GRID_EXAMPLE.read_text().split("slurm:")[0]
                      + "slurm: {partition: short, gpus: 2, time: '00:05:00', mem: 2G, cpus_per_task: 2,"
                        " extra_sbatch: ['--constraint=x'], setup: ['export SETUP_RAN=1']}\n")
    out = tmp_path / "sl"
    assert sweep.main(["--config", str(CLASSIFIER), "--grid", str(grid), "--launcher", "slurm",
                       "--max-parallel", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"sbatch {out / 'sweep.sbatch'}" in printed and "trainer.devices" in printed  # DDP warning
    script = out / "sweep.sbatch"
    text = script.read_text()
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    for line in ("#SBATCH --array=0-3%2", "#SBATCH --signal=SIGUSR1@90", "#SBATCH --requeue",
                 "#SBATCH --partition=short", "#SBATCH --gres=gpu:2", "#SBATCH --ntasks-per-node=2",
                 "#SBATCH --time=00:05:00", "#SBATCH --mem=2G", "#SBATCH --constraint=x"):
        assert line in text.splitlines(), line
    lines = (out / "runs.txt").read_text().splitlines()
    assert len(lines) == 4 and len(set(lines)) == 4
    pairs = []
    for line in lines:
        args = shlex.split(line)
        assert args[:2] == ["synthmed", "fit"]
        assert args.count("--model.arch") == 1 and args.count("--seed_everything") == 1
        pairs.append((args[args.index("--model.arch") + 1], int(args[args.index("--seed_everything") + 1])))
    assert sorted(pairs) == sorted(itertools.product(ARCHS, SEEDS))
    for run in json.loads((out / "sweep.json").read_text())["runs"]:  # launch records for the summary
        assert json.loads((Path(run["run_dir"]) / "overrides.json").read_text())["overrides"] == run["overrides"]

    # Execute the array task logic with a stub `srun` that records what it was asked to run.
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "srun").write_text('#!/bin/bash\necho "$SETUP_RAN $*" > "$SRUN_LOG"\n')
    (stub / "srun").chmod((stub / "srun").stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}", "SRUN_LOG": str(tmp_path / "srun.log"),
           "SLURM_ARRAY_TASK_ID": "2", "SLURM_CPUS_PER_TASK": "2"}
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "srun.log").read_text().split() == ["1", *shlex.split(lines[2])]
    # a task whose run already has metrics.json does nothing (resubmitting finishes only the rest)
    (tmp_path / "srun.log").unlink()
    finished = Path(json.loads((out / "sweep.json").read_text())["runs"][2]["run_dir"])
    (finished / "metrics.json").write_text("{}")
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "already finished" in done.stdout and not (tmp_path / "srun.log").exists()
    # a requeued task continues from its newest resumable checkpoint (Lightning's hpc_ckpt_* here)
    (finished / "metrics.json").unlink()
    (finished / "config.yaml").write_text("{}\n")
    (finished / "hpc_ckpt_1.ckpt").write_bytes(b"x")
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "srun.log").read_text().split() == ["1", *shlex.split(lines[2]), "--ckpt_path",
                                                           str(finished / "hpc_ckpt_1.ckpt")]
    # one that left no checkpoint starts again, its leftovers moved aside (the launch record stays)
    (finished / "hpc_ckpt_1.ckpt").unlink()
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "moved it to" in done.stdout, done.stderr
    assert (tmp_path / "srun.log").read_text().split() == ["1", *shlex.split(lines[2])]
    assert sorted(p.name for p in finished.iterdir()) == ["overrides.json"]
    assert [(p / "config.yaml").is_file() for p in finished.parent.glob(finished.name + ".incomplete-*")] == [True]


# ---- local launcher ------------------------------------------------------------------------
def test_failed_runs_are_reported_after_all_ran(tmp_path, capsys):
    """Statuses without training: `synthmed sweep-summary` stands in for a run (exits fast)."""
    failing = PlannedRun("bad", {}, tmp_path / "bad", ["sweep-summary", str(tmp_path / "missing")])
    no_metrics = PlannedRun("empty", {}, tmp_path / "empty", ["sweep-summary", "--help"])
    for run in (failing, no_metrics):
        run.run_dir.mkdir()
    rows = run_local([failing, no_metrics], max_parallel=2)
    status = {name: s for name, s, _ in rows}
    assert status["bad"].startswith("FAILED (exit 2") and "no metrics.json" in status["empty"]
    assert "is not a folder" in (tmp_path / "bad" / "sweep.log").read_text()


def test_interrupted_local_run_continues_or_restarts(tmp_path):
    """fit refuses a run directory that holds a run unless it resumes: the launcher passes the run's
    newest checkpoint, or moves a checkpoint-less leftover aside (keeping overrides.json)."""
    resumable = PlannedRun("r", {}, tmp_path / "r", ["sweep-summary", "--help"])
    leftover = PlannedRun("l", {}, tmp_path / "l", ["sweep-summary", "--help"])
    for run in (resumable, leftover):
        run.run_dir.mkdir()
        (run.run_dir / "overrides.json").write_text("{}")
        (run.run_dir / "config.yaml").write_text("{}")
    (resumable.run_dir / "checkpoints").mkdir()
    (resumable.run_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
    run_local([resumable, leftover], max_parallel=1)
    first = (resumable.run_dir / "sweep.log").read_text().splitlines()[0]
    assert first.endswith(f"--ckpt_path {resumable.run_dir / 'checkpoints' / 'last.ckpt'}")
    assert sorted(p.name for p in leftover.run_dir.iterdir()) == ["overrides.json", "sweep.log"]
    moved = list(tmp_path.glob("l.incomplete-*"))
    assert len(moved) == 1 and (moved[0] / "config.yaml").is_file()


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The shipped 2 x 2 example grid, run for real (tiny phantom runs, 2 at a time)."""
    root = tmp_path_factory.mktemp("sweep")
    out = root / "grid_example"
    cwd = os.getcwd()
    os.chdir(root)
    try:
        start = time.monotonic()
        code = sweep.main(["--config", str(CLASSIFIER), "--grid", str(GRID_EXAMPLE),
                           "--max-parallel", "2", "--out", str(out), "--trainer.accelerator=cpu"])
        seconds = time.monotonic() - start
    finally:
        os.chdir(cwd)
    return out, code, seconds


def test_local_sweep_runs_every_override_set(local_sweep):
    out, code, seconds = local_sweep
    assert code == 0
    run_dirs = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(run_dirs) == 4
    for arch, seed in itertools.product(ARCHS, SEEDS):
        run_dir = out / f"arch={arch}__seed_everything={seed}"
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert 0.0 <= metrics["test/acc"] <= 1.0
        config = yaml.safe_load((run_dir / "config.yaml").read_text())  # the override reached the run
        assert config["model"]["init_args"]["arch"] == arch and config["seed_everything"] == seed
        assert config["data"]["init_args"]["image_size"] == 24 and config["trainer"]["max_epochs"] == 1
        assert json.loads((run_dir / "overrides.json").read_text())["overrides"] == {
            "model.arch": arch, "seed_everything": seed}
        assert "run_dir: " in (run_dir / "sweep.log").read_text()
        assert list((run_dir / "checkpoints").glob("*.ckpt"))
    print(f"2x2 local sweep: {seconds:.1f} s")


def test_rerun_skips_finished_runs(local_sweep, capsys):
    out, _, _ = local_sweep
    stamps = {p: p.stat().st_mtime for p in out.glob("*/metrics.json")}
    start = time.monotonic()
    assert sweep.main(["--config", str(CLASSIFIER), "--grid", str(GRID_EXAMPLE), "--max-parallel", "2",
                       "--out", str(out), "--trainer.accelerator=cpu"]) == 0
    assert time.monotonic() - start < 5.0
    printed = capsys.readouterr().out
    assert printed.count("skipped (finished)") == 4 and "start " not in printed
    assert printed.strip().splitlines()[-1] == f"run_dir: {out}"
    assert {p: p.stat().st_mtime for p in out.glob("*/metrics.json")} == stamps


def test_sweep_summary_groups_with_mean_and_sd(local_sweep, capsys):
    out, _, _ = local_sweep
    assert sweep_summary.main([str(out), "--by", "model.init_args.arch",
                               "--metrics", "test/acc,val/loss"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == f"run_dir: {out}"
    rows = [line for line in printed if line.startswith("| ") and line.split("|")[1].strip() in ARCHS]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        arch, n = cells[0], int(cells[1])
        values = {m: [json.loads((out / f"arch={arch}__seed_everything={s}" / "metrics.json").read_text())[m]
                      for s in SEEDS] for m in ("test/acc", "val/loss")}
        assert n == 2
        for cell, metric in zip(cells[2:], ("test/acc", "val/loss")):
            mean, sd = (float(x) for x in cell.split(" ± "))
            assert mean == pytest.approx(np.mean(values[metric]), abs=1e-4)
            assert sd == pytest.approx(np.std(values[metric], ddof=1), abs=1e-4)
    table = pd.read_csv(out / "sweep_summary.csv")
    assert len(table) == 4 and set(table["model.arch"]) == set(ARCHS)
    # the group column is named as the grid wrote the option (model.arch), whichever form --by used
    assert "| model.arch | n | test/acc | val/loss |" in (out / "sweep_summary.md").read_text()
    assert sweep_summary.main([str(out), "--by", "model.lr"]) == 2
    assert "not a grid option" in capsys.readouterr().err


# ---- trainer presets -----------------------------------------------------------------------
@pytest.mark.parametrize("preset, expected", [
    ("cpu", {"accelerator": "cpu", "devices": 1, "precision": "32-true"}),
    ("gpu", {"accelerator": "gpu", "devices": 1, "precision": "bf16-mixed"}),
    ("ddp_bf16", {"accelerator": "gpu", "devices": 2, "strategy": "ddp", "precision": "bf16-mixed",
                  "sync_batchnorm": True}),
])
@pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")
def test_trainer_preset_stacks_without_wiping_callbacks(preset, expected, capsys):
    path = REPO / "experiments" / "trainers" / f"{preset}.yaml"
    assert yaml.safe_load(path.read_text()) == {"trainer": expected}  # only these keys, nothing else
    from synthmed.lightning_cli import run_trainer_verb

    with pytest.raises(SystemExit) as done:  # --print_config prints the merged config and exits
        run_trainer_verb(["fit", "--config", str(CLASSIFIER), "--config", str(path), "--print_config"])
    assert done.value.code in (0, None)
    trainer = yaml.safe_load(capsys.readouterr().out)["trainer"]
    assert {k: trainer[k] for k in expected} == expected
    callbacks = [c["class_path"].rsplit(".", 1)[-1] for c in trainer["callbacks"]]
    assert callbacks == ["StepCheckpoint", "ResumableEarlyStopping"] and trainer["max_epochs"] == 15
