"""`synthmed sweep --launcher local`: run a sweep's unfinished runs as subprocesses, K at a time."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from synthmed.console_table import console_table
from synthmed.runs import restart_options
from synthmed.sweep.grid import PlannedRun
from synthmed.trainer_run import option_args

LAUNCHER_FILES = ("overrides.json", "sweep.log")  # ours: kept when an interrupted run's leftovers move aside


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
                options, done_before = restart_options(run.run_dir, keep=LAUNCHER_FILES)
                if done_before:
                    print(f"{run.name}: {done_before}", flush=True)
                args = [*run.args, *option_args(options)]
                log = open(run.run_dir / "sweep.log", "w")
                log.write("synthmed " + shlex.join(args) + "\n\n")
                log.flush()
                proc = subprocess.Popen([sys.executable, "-m", "synthmed.cli", *args],
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
    """Each run's status, as printed at the end of a local sweep (at most 120 characters wide)."""
    return console_table(["run", "status", "run_dir"], rows)
