"""`synthmed sweep`: run a grid of override sets locally, or write them as a SLURM array job.

    synthmed sweep --config base.yaml [--config more.yaml] --grid grid.yaml
                   [--launcher local|slurm] [--max-parallel K] [--out DIR] [--verb fit]
                   [any fit override for every run, e.g. --trainer.max_epochs 5]

The grid file (see synthmed/sweep/grid.py) lists axes and/or explicit override sets. Each run
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
import sys
import time
from pathlib import Path

from synthmed.sweep.grid import Grid, GridError, PlannedRun, load_grid, plan_runs
from synthmed.sweep.local import run_local, status_table
from synthmed.sweep.slurm import write_slurm
from synthmed.trainer_run import TrainerRun

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


def default_out(configs: list[str], grid: Grid, extra_args: list[str], verb: str = "fit") -> Path:
    """`<logs_root>/sweeps/<config>__<grid>`, logs_root as the CLI resolves it for the shared arguments."""
    config = TrainerRun.from_configs(verb, configs).with_args([*grid.base_args, *extra_args]).resolve()
    return Path(str(config.logs_root)) / "sweeps" / f"{Path(configs[0]).stem}__{grid.path.stem}"


def check_out_dir(out: Path) -> None:
    """Refuse to write runs.txt / sweep.sbatch over files that an earlier sweep did not write."""
    foreign = [n for n in OUR_FILES if (out / n).exists()] if not (out / "sweep.json").exists() else []
    if foreign:
        raise GridError(f"--out {out} already holds {foreign} not written by synthmed sweep; "
                        "choose another --out")


def write_launch_records(runs: list[PlannedRun], grid: Grid, configs: list[str], out: Path,
                         launcher: str) -> None:
    """`<out>/sweep.json` (the whole plan) and `<run_dir>/overrides.json` (for sweep-summary)."""
    out.mkdir(parents=True, exist_ok=True)
    plan = {"grid": str(grid.path), "configs": configs, "launcher": launcher,
            "runs": [{"name": r.name, "overrides": r.overrides, "run_dir": str(r.run_dir),
                      "command": r.command} for r in runs]}
    (out / "sweep.json").write_text(json.dumps(plan, indent=2) + "\n")
    for run in runs:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        record = {"name": run.name, "overrides": run.overrides, "grid": str(grid.path),
                  "configs": configs, "command": run.command}
        path = run.run_dir / "overrides.json"
        if path.is_file() and run.finished:
            old = json.loads(path.read_text())
            if old.get("command") != record["command"]:
                print(f"warning: {run.name} finished earlier with a different command "
                      f"(see {path}); it is skipped, use a new --out to rerun it")
            continue
        path.write_text(json.dumps(record, indent=2) + "\n")


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
        out = Path(args.out) if args.out else default_out(args.config, grid, extra, args.verb)
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
    (out / "runs.txt").write_text("".join(r.command + "\n" for r in runs))
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
