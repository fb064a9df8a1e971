"""`synthmed reproduce PIPELINE --launcher slurm`: one job per stage, one array task per matrix cell x fold.

Each YAML stage (all its matrix cells) is one sbatch array job; a cv stage has one task per cell and
fold (`synthmed cv ... --fold k`), other stages one task per cell. A job waits (`--dependency=afterok:`)
for the jobs of the stages it references; the last job runs `reproduce --launcher local`, which finds
every stage done, writes the cv summaries and report.md. Every task runs
`synthmed reproduce PIPELINE ... --task STAGE[:FOLD]` through srun (so SIGUSR1 from
`--signal=SIGUSR1@90` reaches Lightning, which saves `hpc_ckpt_N.ckpt` into the run directory and
requeues the task; the requeued task continues from it). Logs: `<out>/slurm_logs/<stage>_<job>_<task>.out`,
opened in append mode, so a requeued attempt adds to the first one's log.

Why sbatch text by hand and not submitit: submitit pickles a Python callable per job (the script
would not show the `synthmed` command a user can rerun alone), has no public way to print a job
script without submitting it (`--dry-run`), and installs its own SIGUSR1 handler and checkpoint
protocol, which would fight Lightning's SLURMEnvironment auto-requeue that saves the HPC checkpoint.
A dependency graph of array jobs is three sbatch flags, written below.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from synthmed.pipeline.kinds import kind_of
from synthmed.pipeline.launchers import scheduler
from synthmed.pipeline.launchers.resources import sbatch_options, stage_resources
from synthmed.pipeline.spec import Pipeline

JOBS_FILE = "slurm_jobs.json"
REPORT = "report"


@dataclass
class StageJob:
    """One sbatch array job: a YAML stage's tasks [(expanded stage, fold or None)] and the groups it waits for."""

    group: str
    tasks: list[tuple[str, int | None]]
    needs: list[str]
    resources: dict = field(default_factory=dict)
    job_id: str | None = None

    def log(self, out: Path, job_id: str, index: int) -> Path:
        return out / "slurm_logs" / f"{self.group}_{job_id}_{index}.out"


def plan(pipeline: Pipeline, out: Path, resource_overrides: list[str]) -> list[StageJob]:
    """Every stage's job with all its tasks (done or not), in pipeline order, then the report job."""
    from synthmed.pipeline.commands import skip_reason, stage_argv

    jobs: dict[str, StageJob] = {}
    skipped: dict[str, str] = {}
    for stage in pipeline.stages:
        reason = skip_reason(stage, skipped)
        if reason:
            skipped[stage.name] = reason
            continue
        kind = kind_of(out, stage)
        job = jobs.setdefault(stage.group, StageJob(stage.group, [], [], stage_resources(
            pipeline.resources, pipeline.scale, stage.group, resource_overrides)))
        job.tasks += [(stage.name, t) for t in kind.array_tasks(stage_argv(pipeline, out, stage, dry_run=True))]
        for ref, _ in stage.references:
            group = pipeline.stage(ref).group
            if group != stage.group and group not in job.needs:
                job.needs.append(group)
    report = StageJob(REPORT, [(REPORT, None)], list(jobs),
                      stage_resources(pipeline.resources, pipeline.scale, REPORT, resource_overrides))
    return [*jobs.values(), report]


def task_done(pipeline: Pipeline, out: Path, stage: str, fold: int | None) -> bool:
    if stage == REPORT:
        return (out / "report.md").is_file()
    return kind_of(out, pipeline.stage(stage)).task_complete(fold)


def job_script(job: StageJob, todo: list[int], reproduce_args: list[str], out: Path, name: str) -> str:
    """The sbatch script of `job`, running only the task indices in `todo`."""
    tasks = " ".join(shlex.quote(f"{s}:{'' if f is None else f}") for s, f in job.tasks)
    task_cmd = [sys.executable, "-u", "-m", "synthmed.cli", "reproduce", *reproduce_args]
    run = (shlex.join([*task_cmd, "--in-process"]) if job.group == REPORT
           else shlex.join(task_cmd) + ' --task "${TASKS[$TASK]}"')
    lines = ["#!/bin/bash",
             f"# synthmed reproduce --launcher slurm: stage {job.group} ({len(job.tasks)} tasks, "
             f"{len(todo)} to run{'; waits for ' + ', '.join(job.needs) if job.needs else ''})",
             f"#SBATCH --job-name={name}-{job.group}",
             f"#SBATCH --array={array_ranges(todo)}",
             f"#SBATCH --chdir={Path.cwd()}",
             f"#SBATCH --output={out.resolve() / 'slurm_logs'}/{job.group}_%A_%a.out",
             "#SBATCH --open-mode=append",  # a requeued attempt appends to the first attempt's log
             "#SBATCH --ntasks=1",
             "#SBATCH --signal=SIGUSR1@90",  # Lightning saves hpc_ckpt_N.ckpt and requeues the task
             "#SBATCH --requeue",
             "#SBATCH --kill-on-invalid-dep=yes",  # a failed upstream cancels this job, so a rerun resubmits it
             *sbatch_options(job.resources),
             "", "set -eo pipefail", *(job.resources.get("setup") or []),
             'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}" SRUN_CPUS_PER_TASK="${SLURM_CPUS_PER_TASK:-1}"',
             f"TASKS=({tasks})",
             'TASK="${SLURM_ARRAY_TASK_ID:?submit this script with sbatch: it is an array job}"',
             'echo "=== $(date -u +%FT%TZ) task $TASK (${TASKS[$TASK]}) attempt ${SLURM_RESTART_COUNT:-0} on $(hostname)"',
             f"srun {run}", ""]
    return "\n".join(lines)


def array_ranges(indices: list[int]) -> str:
    """`--array` text: [0, 1, 2, 5] -> "0-2,5"."""
    parts, start = [], None
    for i, index in enumerate(indices):
        if start is None:
            start = index
        if i + 1 == len(indices) or indices[i + 1] != index + 1:
            parts.append(str(start) if start == index else f"{start}-{index}")
            start = None
    return ",".join(parts)


def load_jobs(out: Path) -> dict[str, dict]:
    path = out / JOBS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def launch(pipeline: Pipeline, out: Path, reproduce_args: list[str], resource_overrides: list[str],
           dry_run: bool) -> int:
    """Submit the jobs of every stage not done and not queued/running (dry run: print their scripts)."""
    jobs = plan(pipeline, out, resource_overrides)
    known = load_jobs(out)
    states = {} if dry_run else scheduler.task_states([r["job_id"] for r in known.values() if r.get("job_id")])
    name = f"synthmed-{pipeline.name}"
    ids: dict[str, str] = {}
    for job in jobs:
        old = known.get(job.group, {})
        todo = [i for i, (s, f) in enumerate(job.tasks) if not task_done(pipeline, out, s, f)]
        active = [i for i in todo if old.get("job_id") and old.get("tasks") == [list(t) for t in job.tasks]
                  and scheduler.state_of(states, old["job_id"], i) in scheduler.ACTIVE]
        if active:
            ids[job.group] = old["job_id"]
            print(f"{job.group}: job {old['job_id']} still queued or running ({len(active)} tasks); not resubmitted")
            todo = [i for i in todo if i not in active]
            if not todo:
                continue
        if not todo:
            print(f"{job.group}: done")
            continue
        script = job_script(job, todo, reproduce_args, out, name)
        needs = [ids[g] for g in job.needs if g in ids]
        if dry_run:
            deps = f"--dependency=afterok:<{'>:<'.join(job.needs)}>" if job.needs else ""
            print(f"### sbatch {deps} {out / 'slurm_jobs' / (job.group + '.sbatch')}".replace("  ", " "))
            print(script)
            ids[job.group] = f"<{job.group}>"
            continue
        path = out / "slurm_jobs" / f"{job.group}.sbatch"
        path.parent.mkdir(parents=True, exist_ok=True)
        (out / "slurm_logs").mkdir(parents=True, exist_ok=True)  # SLURM does not create --output folders
        path.write_text(script)
        job_id = scheduler.submit(str(path), needs)
        ids[job.group] = job_id
        known[job.group] = {"job_id": job_id, "tasks": [list(t) for t in job.tasks], "script": str(path),
                            "needs": job.needs, "submitted_tasks": todo}
        print(f"{job.group}: submitted job {job_id} ({len(todo)} array tasks"
              + (f", after {', '.join(job.needs)})" if job.needs else ")"), flush=True)
    if not dry_run:
        (out / JOBS_FILE).write_text(json.dumps(known, indent=2) + "\n")
        print(f"status: synthmed reproduce {shlex.join(reproduce_args)} --status")
    print(f"run_dir: {out}")
    return 0
