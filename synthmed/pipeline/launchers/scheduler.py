"""What SLURM says about our jobs: per array task its state, from sacct (accounting) or squeue."""

from __future__ import annotations

import shutil
import subprocess

ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING", "REQUEUE_HOLD",
          "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}
FAILED = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


def _lines(argv: list[str]) -> list[str]:
    if shutil.which(argv[0]) is None:
        return []
    proc = subprocess.run(argv, capture_output=True, text=True)
    return proc.stdout.splitlines() if proc.returncode == 0 else []


def task_states(job_ids: list[str]) -> dict[str, str]:
    """`{"<job>_<task>" or "<job>": STATE}`; squeue (live jobs) wins over sacct (history, if accounting runs)."""
    if not job_ids:
        return {}
    ids = ",".join(job_ids)
    states: dict[str, str] = {}
    for line in _lines(["sacct", "-X", "-n", "-P", "-j", ids, "-o", "JobID,State"]):
        job, _, state = line.partition("|")
        states[job.strip()] = state.split()[0] if state.strip() else "UNKNOWN"
    for line in _lines(["squeue", "-h", "-r", "-t", "all", "-j", ids, "-o", "%i|%T"]):
        job, _, state = line.partition("|")
        states[job.strip()] = state.strip()
    return states


def state_of(states: dict[str, str], job_id: str, task: int) -> str | None:
    return states.get(f"{job_id}_{task}") or states.get(job_id)


def submit(script: str, dependency: list[str]) -> str:
    """`sbatch --parsable [--dependency=afterok:...] SCRIPT`; returns the job id."""
    argv = ["sbatch", "--parsable"]
    if dependency:
        argv.append("--dependency=afterok:" + ":".join(dependency))
    proc = subprocess.run([*argv, script], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} {script} failed: {proc.stderr.strip()}")
    return proc.stdout.strip().split(";")[0]
