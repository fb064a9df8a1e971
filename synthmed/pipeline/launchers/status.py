"""`synthmed reproduce PIPELINE --status`: each stage pending / running / done / failed (scheduler + markers)."""

from __future__ import annotations

from pathlib import Path

from synthmed.pipeline.launchers import scheduler
from synthmed.pipeline.launchers.slurm import load_jobs, plan, task_done
from synthmed.pipeline.spec import Pipeline


def stage_status(pipeline: Pipeline, out: Path) -> list[tuple[str, str, str]]:
    """(stage, status, detail) per expanded stage and the report; detail names a failed task's log."""
    known = load_jobs(out)
    states = scheduler.task_states([r["job_id"] for r in known.values() if r.get("job_id")])
    rows = []
    for job in plan(pipeline, out, []):
        record = known.get(job.group, {})
        job_id = record.get("job_id")
        per_stage: dict[str, list[tuple[int, int | None]]] = {}
        for index, (stage, fold) in enumerate(job.tasks):
            per_stage.setdefault(stage, []).append((index, fold))
        for stage, tasks in per_stage.items():
            found, detail = [], ""
            for index, fold in tasks:
                if task_done(pipeline, out, stage, fold):
                    found.append("done")
                    continue
                state = scheduler.state_of(states, job_id, index) if job_id else None
                log = job.log(out, job_id, index) if job_id else None
                if state == "CANCELLED" and not log.is_file():  # --kill-on-invalid-dep: an upstream failed
                    found.append("cancelled")
                    detail = "never started: a stage it waits for failed; submit again once that is fixed"
                elif state in scheduler.FAILED or (state == "COMPLETED"):  # COMPLETED without marker: failed too
                    found.append("failed")
                    detail = f"{state.lower()}: log {log}"
                elif state in ("RUNNING", "COMPLETING"):
                    found.append("running")
                elif state in scheduler.ACTIVE:
                    found.append("pending")
                else:
                    found.append("not submitted")
            status = next((s for s in ("failed", "running", "pending", "cancelled", "not submitted") if s in found), "done")
            if status == "done" and not task_done(pipeline, out, stage, None):
                status, detail = "done", "folds done; summary written by the next job"
            if job_id and not detail:
                detail = f"job {job_id}" + (f", {found.count('done')}/{len(found)} tasks done" if len(found) > 1 else "")
            rows.append((stage, status, detail))
    return rows


def print_status(pipeline: Pipeline, out: Path) -> int:
    rows = stage_status(pipeline, out)
    lines = ["| stage | status | detail |", "|---|---|---|", *(f"| {s} | {st} | {d} |" for s, st, d in rows)]
    print("\n".join(lines))
    failed = [s for s, st, _ in rows if st == "failed"]
    if failed:
        print(f"failed: {', '.join(failed)}; fix the cause and rerun the submit command: done and running "
              "stages are not resubmitted")
    return 1 if failed else 0
