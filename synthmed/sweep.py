"""`synthmed sweep`: run a grid of override sets locally, or write them as a SLURM array job.

    synthmed sweep --config base.yaml [--config more.yaml] --grid grid.yaml
                   [--launcher local|slurm] [--max-parallel K] [--out DIR] [--verb fit]
                   [any fit override for every run, e.g. --trainer.max_epochs 5]

The grid file (see synthmed/sweep_grid.py) lists axes and/or explicit override sets. Each run
is named from its overrides (`arch=resnet18__fold=0`) and logs to `<out>/<name>/`, where
`overrides.json` (written at launch) and `metrics.json` (written by the run) end up;
`synthmed sweep-summary <out> --by model.arch` tables them.

local  K runs at a time (`python -m synthmed.cli fit ...`), each with its log in
       `<out>/<name>/sweep.log`; runs whose directory already has metrics.json are skipped,
       so rerunning the same command resumes the sweep. Exit code 1 if any run failed.
       With K > 1 and OMP_NUM_THREADS unset, each run gets cpu_count // K threads.
slurm  writes `<out>/runs.txt` (one `synthmed fit ...` line per run) and `<out>/sweep.sbatch`
       (an array job, one index per line, resources from the grid's `slurm:` block) and prints
       the sbatch command; nothing is submitted. Each task runs its line under `srun`, so
       Lightning's SLURMEnvironment sets up (multi-GPU DDP) ranks, and `--signal=SIGUSR1@90`
       + `--requeue` let Lightning checkpoint to `<run_dir>/hpc_ckpt_*.ckpt` and requeue on
       preemption; the requeued task resumes from it. A task whose run already has
       metrics.json exits at once, so resubmitting the whole array finishes only what is left.
       DDP: set slurm.gpus = N (the script then asks for --ntasks-per-node=N) AND
       trainer.devices = N (e.g. --config experiments/trainers/ddp_bf16.yaml); multi-node
       also needs trainer.num_nodes = slurm.nodes.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

from synthmed.sweep_grid import Grid, GridError, PlannedRun, load_grid, plan_runs

OUR_FILES = ("runs.txt", "sweep.sbatch")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synthmed sweep", description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", required=True,
                        help="base experiment YAML (repeat to stack, e.g. a trainer preset)")
    parser.add_argument("--grid", required=True, help="grid YAML: axes / runs / base_args / slurm")
    parser.add_argument("--launcher", choices=("local", "slurm"), default="local")
    parser.add_argument("--max-parallel", type=int, default=None,
                        help="local: runs at a time (default 1); slurm: array throttle %%K (default none)")
    parser.add_argument("--out", default=None,
                        help="sweep folder (default <logs_root>/sweeps/<config>__<grid>)")
    parser.add_argument("--verb", default="fit", choices=("fit", "validate", "test", "predict"))
    return parser


def default_out(configs: list[str], grid_path: Path) -> Path:
    from synthmed.cv import run_location

    logs_root, _ = run_location([a for c in configs for a in ("--config", c)])
    return Path(logs_root) / "sweeps" / f"{Path(configs[0]).stem}__{grid_path.stem}"


def check_out_dir(out: Path) -> None:
    """Refuse to write runs.txt / sweep.sbatch over files that an earlier sweep did not write."""
    foreign = [n for n in OUR_FILES if (out / n).exists()] if not (out / "sweep.json").exists() else []
    if foreign:
        raise GridError(f"--out {out} already holds {foreign} not written by synthmed sweep; "
                        "choose another --out")


def command_line(run: PlannedRun) -> str:
    return "synthmed " + shlex.join(run.args)


def write_launch_records(runs: list[PlannedRun], grid: Grid, configs: list[str], out: Path,
                         launcher: str) -> None:
    """`<out>/sweep.json` (the whole plan) and `<run_dir>/overrides.json` (for sweep-summary)."""
    out.mkdir(parents=True, exist_ok=True)
    plan = {"grid": str(grid.path), "configs": configs, "launcher": launcher,
            "runs": [{"name": r.name, "overrides": r.overrides, "run_dir": str(r.run_dir),
                      "command": command_line(r)} for r in runs]}
    (out / "sweep.json").write_text(json.dumps(plan, indent=2) + "\n")
    for run in runs:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        record = {"name": run.name, "overrides": run.overrides, "grid": str(grid.path),
                  "configs": configs, "command": command_line(run)}
        path = run.run_dir / "overrides.json"
        if path.is_file() and run.finished:
            old = json.loads(path.read_text())
            if old.get("command") != record["command"]:
                print(f"warning: {run.name} finished earlier with a different command "
                      f"(see {path}); it is skipped, use a new --out to rerun it")
            continue
        path.write_text(json.dumps(record, indent=2) + "\n")


# ---- local launcher -------------------------------------------------------------------------
def run_local(runs: list[PlannedRun], max_parallel: int) -> list[tuple[str, str, str]]:
    """Run unfinished runs as subprocesses, `max_parallel` at a time; returns (name, status, dir)."""
    status: dict[str, str] = {}
    todo = []
    for run in runs:
        if run.finished:
            status[run.name] = "skipped (finished)"
            print(f"skip {run.name}: already finished ({run.run_dir / 'metrics.json'})", flush=True)
        else:
            todo.append(run)
    env = dict(os.environ)
    if todo and max_parallel > 1 and "OMP_NUM_THREADS" not in env:
        # K runs share the cores; without this each torch process starts one thread per core
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max_parallel))
        print(f"each run uses OMP_NUM_THREADS={env['OMP_NUM_THREADS']} ({max_parallel} in parallel)")
    running: list[tuple[PlannedRun, subprocess.Popen, float, object]] = []
    done, to_run = 0, len(todo)
    try:
        while todo or running:
            while todo and len(running) < max_parallel:
                run = todo.pop(0)
                log = open(run.run_dir / "sweep.log", "w")
                log.write(command_line(run) + "\n\n")
                log.flush()
                proc = subprocess.Popen([sys.executable, "-m", "synthmed.cli", *run.args],
                                        stdout=log, stderr=subprocess.STDOUT, env=env)
                running.append((run, proc, time.monotonic(), log))
                print(f"start {run.name}", flush=True)
            time.sleep(0.2)
            for item in [r for r in running if r[1].poll() is not None]:
                run, proc, start, log = item
                running.remove(item)
                log.close()
                done += 1
                seconds = time.monotonic() - start
                if proc.returncode != 0:
                    status[run.name] = f"FAILED (exit {proc.returncode}, log {run.run_dir / 'sweep.log'})"
                    print(log_tail(run.run_dir / "sweep.log"), flush=True)
                elif not run.finished:
                    status[run.name] = "FAILED (exit 0 but no metrics.json in run dir: does the config set trainer.logger?)"
                else:
                    status[run.name] = f"done ({seconds:.1f} s)"
                print(f"[{done}/{to_run}] {run.name}: {status[run.name]}", flush=True)
    except KeyboardInterrupt:
        for run, proc, _, log in running:
            proc.terminate()
            proc.wait()
            log.close()
            status[run.name] = "interrupted"
        raise
    return [(run.name, status.get(run.name, "not run"), str(run.run_dir)) for run in runs]


def log_tail(path: Path, lines: int = 12) -> str:
    """The last lines of a failed run's log, indented, so the cause shows without opening it."""
    text = path.read_text(errors="replace").splitlines()[-lines:] if path.is_file() else []
    return "\n".join("    | " + line for line in text)


def status_table(rows: list[tuple[str, str, str]]) -> str:
    lines = ["| run | status | run_dir |", "|---|---|---|"]
    lines += [f"| {name} | {status} | {run_dir} |" for name, status, run_dir in rows]
    return "\n".join(lines)


# ---- SLURM writer ---------------------------------------------------------------------------
def _devices(args: list[str]) -> str | None:
    """trainer.devices as the stacked configs + flags give it (last wins), unresolved."""
    value = None
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            cfg = yaml.safe_load(Path(args[i + 1]).read_text()) or {}
            value = (cfg.get("trainer") or {}).get("devices", value)
        elif arg == "--trainer.devices" and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--trainer.devices="):
            value = arg.split("=", 1)[1]
    return None if value is None else str(value)


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
             'echo "task $TASK on $(hostname): $CMD"',
             "# srun: Lightning's SLURMEnvironment reads the task's rank / world size from srun",
             'eval "srun $CMD"', ""]
    return "\n".join(head + body)


def write_slurm(runs: list[PlannedRun], grid: Grid, out: Path, max_parallel: int | None) -> Path:
    """Write runs.txt and sweep.sbatch under `out`; returns the script path."""
    runs_file = out / "runs.txt"
    runs_file.write_text("".join(command_line(r) + "\n" for r in runs))
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


def main(argv: list[str]) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") and not a.startswith("--")]
    if stray:
        parser.error(f"unknown option(s) {stray}; run overrides look like --trainer.max_epochs 5")
    if args.max_parallel is not None and args.max_parallel < 1:
        parser.error(f"--max-parallel {args.max_parallel}: must be >= 1")
    for config in args.config:
        if not Path(config).is_file():
            parser.error(f"--config {config}: file not found")
    try:
        grid = load_grid(args.grid)
        out = Path(args.out) if args.out else default_out(args.config, grid.path)
        out = out if out.name else out.resolve()
        check_out_dir(out)
        runs = plan_runs(grid, args.config, extra, out, verb=args.verb)
    except GridError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"sweep: {len(runs)} runs from {grid.path} -> {out}")
    write_launch_records(runs, grid, args.config, out, args.launcher)
    if args.launcher == "slurm":
        script = write_slurm(runs, grid, out, args.max_parallel)
        print(f"wrote {out / 'runs.txt'} ({len(runs)} lines) and {script}")
        print(f"submit with:  sbatch {script}")
        print(f"then:         synthmed sweep-summary {out} --by <option>")
        print(f"out: {out}")
        return 0
    (out / "runs.txt").write_text("".join(command_line(r) + "\n" for r in runs))
    start = time.monotonic()
    rows = run_local(runs, args.max_parallel or 1)
    print(f"\n{status_table(rows)}\n")
    failed = [name for name, status, _ in rows if status.startswith("FAILED")]
    print(f"{len(rows)} runs: {len(rows) - len(failed)} ok, {len(failed)} failed "
          f"({time.monotonic() - start:.1f} s)")
    print(f"run_dir: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
