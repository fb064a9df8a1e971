"""`synthmed reproduce PIPELINE.yaml`: run a paper's protocol as ordered, resumable stages.

    synthmed reproduce experiments/quickstart/pipeline.yaml
    synthmed reproduce experiments/nafi2024_tstr/pipeline.yaml --scale mini \
        --data.root ../shared/data/brain_tumor_mri [--out DIR] [--set folds=3 ...]

Each stage is one ordinary `synthmed fit|test|predict|cv|evaluate|make-phantoms|explain` command (the
runner prints it, so it can be rerun alone) whose run directory is fixed: `<out>/<stage>/`
(`--logs_root <out> --experiment <stage> --run_version run`; cv `--name cv`). A stage whose
completion marker exists is skipped ("skip <stage>: complete"); each stage kind (one class per
verb in synthmed/pipeline/kinds.py) owns its directory, marker, outputs, command and resume rule:

    fit / test   <out>/<stage>/run/metrics.json      (written only when the run finished)
    predict      <out>/<stage>/run/metrics.json and <out>/<stage>/images/metadata.csv
    cv           <out>/<stage>/cv/cv_summary.csv     (finished folds are reused by cv itself)
    evaluate     <out>/<stage>/evaluation.json
    make-phantoms  <out>/<stage>/ exists (written atomically)
    explain      <out>/<stage>/explanations.json

An incomplete fit/test/evaluate/explain directory (a killed or failed run) is renamed to
`<stage>.incomplete-<time>` and the stage reruns; predict and cv resume in place. Predict stages
write their images to `<out>/<stage>/images` (the runner passes `--data.init_args.output_dir`).
`--set name=value` overrides a pipeline param (YAML syntax); `--data.root X` is short for
`--set data_root=X`. State: `<out>/pipeline_state.json`; at the end `<out>/report.md`.

A stage with `requires:` whose data is absent is skipped, not failed ("skip <stage>: PATH absent
— supply DATASET"), and so is every stage that references it; the report says so in their rows.
A rerun checks again, so supplying the data and rerunning fills those rows in.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lightning_modules.durations import format_seconds
from synthmed.pipeline.kinds import kind_of
from synthmed.pipeline.stage_progress import stage_header
from synthmed.pipeline.commands import is_complete, skip_reason, stage_argv
from synthmed.pipeline.spec import Pipeline, PipelineError, load_pipeline, parse_value

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="synthmed reproduce", description=__doc__.splitlines()[0])
    p.add_argument("pipeline", help="pipeline YAML (experiments/<paper>/pipeline.yaml)")
    p.add_argument("--scale", default="mini", help="which `scales:` entry to use (default mini)")
    p.add_argument("--out", default=None, help="output folder (default logs/reproduce/<name>-<scale>)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE",
                   help="override a pipeline param (repeatable; YAML values: 3, 0.2, [a, b])")
    p.add_argument("--data.root", dest="data_root", default=None, help="same as --set data_root=PATH")
    p.add_argument("--dry-run", action="store_true", help="print the stage commands, run nothing")
    p.add_argument("--in-process", action="store_true",
                   help="run stages inside this Python process (faster start; default: one subprocess each)")
    p.add_argument("--launcher", choices=("local", "slurm"), default="local",
                   help="local: run the stages here in order; slurm: submit one job per stage, one array task "
                        "per matrix cell x fold, each after the stages it reads (synthmed/pipeline/launchers/)")
    p.add_argument("--resource", dest="resources", action="append", default=[], metavar="[STAGE.]KEY=VALUE",
                   help="override a SLURM request of the pipeline's resources: block (partition, gpus, cpus, mem, "
                        "time, ...), for one stage or all; repeatable")
    p.add_argument("--status", action="store_true",
                   help="show each stage pending / running / done / failed (squeue/sacct + completion markers)")
    p.add_argument("--task", default=None, metavar="STAGE[:FOLD]",
                   help="(what a SLURM array task runs) run one stage, or one cv fold, of the pipeline here")
    return p


def run_command(argv: list[str], log_path: Path, in_process: bool) -> int:
    """Run `synthmed <argv>`; output goes to the console and to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if in_process:
        from synthmed.cli import main as cli_main

        try:
            return int(cli_main(list(argv)) or 0)
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 1
        except Exception as exc:  # noqa: BLE001 - a failed stage is reported, the pipeline stops cleanly
            print(f"stage error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    with open(log_path, "a") as log:
        proc = subprocess.Popen([sys.executable, "-u", "-m", "synthmed.cli", *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
        return proc.wait()


# ---- state ----------------------------------------------------------------------------------------
class PipelineState:
    """`<out>/pipeline_state.json`: per stage its command, status, times (kept across reruns)."""

    def __init__(self, out: Path, pipeline: Pipeline, command: str):
        self.path = out / "pipeline_state.json"
        old = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.data = {"pipeline": str(pipeline.path), "name": pipeline.name, "scale": pipeline.scale,
                     "params": pipeline.params, "out": str(out), "command": command,
                     "stages": old.get("stages", {}), "history": old.get("history", [])}
        self.data["history"].append({"command": command, "started": _now()})

    def stage(self, name: str) -> dict[str, Any]:
        return self.data["stages"].setdefault(name, {})

    def save(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        os.replace(tmp, self.path)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---- main -----------------------------------------------------------------------------------------
def _overrides(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    found = {}
    for item in args.sets:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            parser.error(f"--set {item!r}: use --set NAME=VALUE")
        found[name.strip()] = parse_value(value)
    if args.data_root is not None:
        found["data_root"] = args.data_root
    return found


def run_pipeline(pipeline: Pipeline, out: Path, command: str, in_process: bool = False) -> int:
    """Run every incomplete stage in order; write state and, when all are done, report.md."""
    out.mkdir(parents=True, exist_ok=True)
    state = PipelineState(out, pipeline, command)
    for stage in pipeline.stages:  # the markers are the truth: a stage dir removed since is pending again
        record = state.stage(stage.name)
        if record.get("status") == "complete" and not is_complete(out, stage):
            record["status"] = "pending"
    state.save()
    total = len(pipeline.stages)
    skipped: dict[str, str] = {}
    pipeline_start = time.perf_counter()
    for number, stage in enumerate(pipeline.stages, 1):
        record = state.stage(stage.name)
        record.pop("reason", None)
        if is_complete(out, stage):
            print(f"skip {stage.name}: complete", flush=True)
            try:
                argv = stage_argv(pipeline, out, stage, dry_run=True)
            except PipelineError as exc:  # e.g. an upstream checkpoint deleted to free disk space
                print(f"  note: {stage.name}'s command cannot be rebuilt to compare with the one that ran ({exc}); "
                      "its output is complete and kept", flush=True)
                argv = None
            if argv is not None and record.get("argv") and record["argv"] != argv:
                print(f"  note: {stage.name}'s command changed since it ran; delete {kind_of(out, stage).dir} "
                      "to rerun it with the new one", flush=True)
            record["status"] = "complete"
            state.save()
            continue
        reason = skip_reason(stage, skipped)
        if reason:
            skipped[stage.name] = reason
            print(f"skip {stage.name}: {reason}", flush=True)
            record.update({"verb": stage.verb, "status": "skipped", "reason": reason,
                           "dir": str(kind_of(out, stage).dir)})
            state.save()
            continue
        kind = kind_of(out, stage)
        moved = kind.prepare_rerun()
        if moved is not None:
            print(f"stage {stage.name}: previous run did not finish; moved it to {moved}", flush=True)
        argv = kind.task_argv(stage_argv(pipeline, out, stage), None)  # + --ckpt_path of a preempted fit
        print(stage_header(number, total, stage.name, argv, time.perf_counter() - pipeline_start, dict(record)),
              flush=True)
        print(f"    synthmed {shlex.join(argv)}", flush=True)
        record.pop("exit_code", None)
        record.update({"verb": stage.verb, "argv": argv, "command": "synthmed " + shlex.join(argv),
                       "status": "running", "started": _now(), "dir": str(kind.dir)})
        state.save()
        start = time.perf_counter()
        code = run_command(argv, out / "stage_logs" / f"{stage.name}.log", in_process)
        record["seconds"] = round(time.perf_counter() - start, 1)
        record["finished"] = _now()
        print(f"--- stage {number}/{total} {stage.name} took {format_seconds(record['seconds'])}", flush=True)
        if code != 0 or not is_complete(out, stage):
            record["status"] = "failed"
            record["exit_code"] = code
            state.save()
            why = f"exit code {code}" if code != 0 else "it exited 0 but wrote no completion marker"
            log = "its output is above" if in_process else f"log: {out / 'stage_logs' / (stage.name + '.log')}"
            print(f"stage {stage.name} failed ({why}); {log}. Fix the cause and rerun the same command: "
                  "finished stages are skipped.", file=sys.stderr)
            return 1
        record["status"] = "complete"
        state.save()
    from synthmed.pipeline.report import write_report

    table = write_report(pipeline, out, state.data, command)
    state.data["report"] = str(out / "report.md")
    state.save()
    print(table)
    print(f"report: {out / 'report.md'}")
    print(f"run_dir: {out}")
    return 0


def run_task(pipeline: Pipeline, out: Path, task: str) -> int:
    """One SLURM array task (`--task STAGE[:FOLD]`), in this process so Lightning gets srun's SIGUSR1.

    The stages it reads finished (afterok); a cv stage among them whose folds all finished gets its
    summary written first (a plain `cv` run that reuses the folds).
    """
    name, _, fold_text = task.partition(":")
    stage = pipeline.stage(name)
    fold = int(fold_text) if fold_text else None
    for ref, _ in stage.references:
        upstream = kind_of(out, pipeline.stage(ref))
        if not upstream.is_complete() and all(upstream.task_complete(t) for t in
                                              upstream.array_tasks(stage_argv(pipeline, out, upstream.stage))):
            print(f"task {task}: writing {ref}'s summary from its finished folds", flush=True)
            run_command(stage_argv(pipeline, out, upstream.stage), out / "stage_logs" / f"{ref}.log", True)
    kind = kind_of(out, stage)
    if kind.task_complete(fold):
        print(f"task {task}: already complete", flush=True)
        return 0
    if fold is None:
        moved = kind.prepare_rerun()
        if moved is not None:
            print(f"stage {stage.name}: previous run did not finish; moved it to {moved}", flush=True)
    argv = kind.task_argv(stage_argv(pipeline, out, stage), fold)
    print(f"=== task {task}: synthmed {shlex.join(argv)}", flush=True)
    code = run_command(argv, out / "stage_logs" / f"{stage.name}.log", in_process=True)
    if code == 0 and not kind.task_complete(fold):
        print(f"task {task}: exited 0 but wrote no completion marker", file=sys.stderr)
        return 1
    return code


def _reproduce_args(args: argparse.Namespace, out: Path) -> list[str]:
    """The options a job's `synthmed reproduce ... --task` needs to load the same pipeline."""
    found = [args.pipeline, "--scale", args.scale, "--out", str(out)]
    for item in args.sets:
        found += ["--set", item]
    if args.data_root is not None:
        found += ["--data.root", args.data_root]
    return found


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        pipeline = load_pipeline(args.pipeline, args.scale, _overrides(args, parser))
        out = Path(args.out or Path("logs") / "reproduce" / f"{pipeline.name}-{args.scale}")
        command = "synthmed reproduce " + shlex.join(argv)
        if args.task:
            return run_task(pipeline, out, args.task)
        if args.status:
            from synthmed.pipeline.launchers.status import print_status

            return print_status(pipeline, out)
        if args.launcher == "slurm":
            from synthmed.pipeline.launchers.slurm import launch

            return launch(pipeline, out, _reproduce_args(args, out), args.resources, args.dry_run)
        if args.dry_run:
            skipped: dict[str, str] = {}
            for stage in pipeline.stages:
                reason = None if is_complete(out, stage) else skip_reason(stage, skipped)
                if reason:
                    skipped[stage.name] = reason
                mark = "complete" if is_complete(out, stage) else (f"skip: {reason}" if reason else "to run")
                print(f"[{mark}] {stage.name}: synthmed {shlex.join(stage_argv(pipeline, out, stage, True))}")
            print(f"run_dir: {out}")
            return 0
        return run_pipeline(pipeline, out, command, in_process=args.in_process)
    except PipelineError as exc:
        print(f"synthmed reproduce: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
