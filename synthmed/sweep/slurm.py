"""`synthmed sweep --launcher slurm`: write runs.txt and an array-job script (nothing is submitted)."""

from __future__ import annotations

import shlex
from pathlib import Path

from synthmed.sweep.grid import Grid, PlannedRun
from synthmed.trainer_run import TrainerRun


def _devices(args: list[str]) -> str:
    """trainer.devices of a run (`[verb, ...]`) as the CLI resolves it."""
    return str(TrainerRun(args[0], tuple(args[1:])).resolve().trainer.devices)


def sbatch_script(runs: list[PlannedRun], slurm: dict, runs_file: Path, out: Path,
                  max_parallel: int | None, job_name: str) -> str:
    """The array job script: resources, then `srun <line SLURM_ARRAY_TASK_ID+1 of runs.txt>`."""
    gpus = slurm.get("gpus", 0)
    ntasks = slurm.get("ntasks_per_node", gpus or 1)
    throttle = f"%{max_parallel}" if max_parallel else ""
    head = ["#!/bin/bash",
            f"# Written by `synthmed sweep --launcher slurm`: {len(runs)} runs, one array index each.",
            f"# Submit: sbatch {out / 'sweep.sbatch'}   (nothing was submitted)",
            "# DDP on N GPUs: slurm.gpus = N gives --ntasks-per-node=N; the runs need trainer.devices = N",
            "# (e.g. --config experiments/trainers/ddp_bf16.yaml) and trainer.num_nodes = slurm.nodes.",
            f"#SBATCH --job-name={slurm.get('job_name', job_name)}",
            f"#SBATCH --array=0-{len(runs) - 1}{throttle}",
            f"#SBATCH --chdir={Path.cwd()}",
            f"#SBATCH --output={out / 'slurm_logs'}/%x_%A_%a.out",
            f"#SBATCH --nodes={slurm.get('nodes', 1)}",
            f"#SBATCH --ntasks-per-node={ntasks}",
            "#SBATCH --signal=SIGUSR1@90",
            "#SBATCH --requeue"]
    for key, flag in (("partition", "partition"), ("account", "account"), ("qos", "qos"),
                      ("cpus_per_task", "cpus-per-task"), ("time", "time"), ("mem", "mem")):
        if key in slurm:
            head.append(f"#SBATCH --{flag}={slurm[key]}")
    if gpus:
        kind = f"{slurm['gpu_type']}:" if slurm.get("gpu_type") else ""
        head.append(f"#SBATCH --gres=gpu:{kind}{gpus}")
    head += [f"#SBATCH {flag}" for flag in slurm.get("extra_sbatch", [])]
    body = ["", "set -eo pipefail",
            "# setup from the grid file's slurm.setup (must put `synthmed` on PATH)"]
    body += list(slurm.get("setup", [])) or ["# (none given: e.g. source .venv/bin/activate)"]
    if "cpus_per_task" in slurm:  # srun does not inherit sbatch's --cpus-per-task (Slurm >= 22.05)
        body.append('export SRUN_CPUS_PER_TASK="${SLURM_CPUS_PER_TASK}"')
    dirs = " ".join(shlex.quote(str(r.run_dir)) for r in runs)
    body += ["",
             f"RUN_DIRS=({dirs})",
             'TASK="${SLURM_ARRAY_TASK_ID:?submit this script with sbatch: it is an array job}"',
             'RUN_DIR="${RUN_DIRS[$TASK]}"',
             'if [[ -f "$RUN_DIR/metrics.json" ]]; then',
             '  echo "task $TASK: $RUN_DIR already finished (metrics.json), nothing to do"',
             "  exit 0",
             "fi",
             f'CMD="$(sed -n "$((TASK + 1))p" {shlex.quote(str(runs_file))})"',
             'if [[ -z "$CMD" ]]; then echo "task $TASK: no such line in runs file" >&2; exit 1; fi',
             "# a requeued or resubmitted task continues its run (fit refuses a used run directory otherwise):",
             "# from the newest hpc_ckpt_* (Lightning's save on SIGUSR1) or last.ckpt; with none, its leftovers",
             "# move to <run>.incomplete-<time> (overrides.json stays) and the run starts again",
             'RESUME="$(ls -t "$RUN_DIR"/hpc_ckpt_*.ckpt "$RUN_DIR"/checkpoints/last.ckpt 2>/dev/null | head -n 1 || true)"',
             'if [[ -n "$RESUME" ]]; then',
             '  CMD="$CMD --ckpt_path $(printf %q "$RESUME")"',
             'elif [[ -n "$(ls -A "$RUN_DIR" | grep -v -x -e overrides.json -e sweep.log || true)" ]]; then',
             '  MOVED="$RUN_DIR.incomplete-$(date +%Y%m%d-%H%M%S)"',
             '  mv "$RUN_DIR" "$MOVED" && mkdir -p "$RUN_DIR" && cp "$MOVED/overrides.json" "$RUN_DIR/" 2>/dev/null || true',
             '  echo "task $TASK: the interrupted run left no checkpoint; moved it to $MOVED"',
             "fi",
             'echo "task $TASK on $(hostname): $CMD"',
             "# srun: Lightning's SLURMEnvironment reads the task's rank / world size from srun",
             'eval "srun $CMD"', ""]
    return "\n".join(head + body)


def write_slurm(runs: list[PlannedRun], grid: Grid, out: Path, max_parallel: int | None) -> Path:
    """Write runs.txt and sweep.sbatch under `out`; returns the script path."""
    runs_file = out / "runs.txt"
    runs_file.write_text("".join(r.command + "\n" for r in runs))
    (out / "slurm_logs").mkdir(exist_ok=True)  # SLURM does not create --output folders
    script = out / "sweep.sbatch"
    script.write_text(sbatch_script(runs, grid.slurm, runs_file, out, max_parallel,
                                    job_name=f"synthmed-{out.name}"))
    gpus = grid.slurm.get("gpus", 0)
    if gpus > 1 or grid.slurm.get("nodes", 1) > 1:
        devices = _devices(runs[0].args)
        if devices != str(gpus):
            print(f"warning: slurm.gpus={gpus} but trainer.devices={devices}; for DDP set "
                  f"trainer.devices={gpus} (e.g. --config experiments/trainers/ddp_bf16.yaml)")
    return script
