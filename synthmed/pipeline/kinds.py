"""Stage kinds of a pipeline: where each stage's run directory is, when it is complete, its outputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

from synthmed.pipeline.spec import TRAINER_VERBS, Pipeline, PipelineError, Stage

PREDICT_SUBDIR = "images"  # a predict stage's synthetic ImageFolder tree: <out>/<stage>/images


# ---- stage locations and completion ---------------------------------------------------------------
def stage_dir(out: Path, stage: Stage) -> Path:
    return out / stage.name


def run_dir(out: Path, stage: Stage) -> Path:
    if stage.verb in TRAINER_VERBS:
        return stage_dir(out, stage) / "run"
    if stage.verb == "cv":
        return stage_dir(out, stage) / "cv"
    return stage_dir(out, stage)


def is_complete(out: Path, stage: Stage) -> bool:
    rd = run_dir(out, stage)
    if stage.verb in ("fit", "test"):
        return (rd / "metrics.json").is_file()
    if stage.verb == "predict":
        return (rd / "metrics.json").is_file() and (stage_dir(out, stage) / PREDICT_SUBDIR / "metadata.csv").is_file()
    if stage.verb == "cv":
        return (rd / "cv_summary.csv").is_file()
    if stage.verb == "evaluate":
        return (rd / "evaluation.json").is_file()
    return rd.is_dir() and any(rd.iterdir())  # make-phantoms renames its finished tree into place


def best_checkpoint(fit_run: Path, last: bool = False) -> Path:
    """A finished fit run's checkpoint: the one it tested (best), else the only non-last one, else last."""
    ckpts = fit_run / "checkpoints"
    last_ckpt = ckpts / "last.ckpt"
    if last:
        if last_ckpt.is_file():
            return last_ckpt
        raise PipelineError(f"{ckpts} has no last.ckpt (deleted since? then delete the stage's folder to rerun it; "
                            "or the stage's ModelCheckpoint needs save_last: true)")
    metrics = fit_run / "metrics.json"
    if metrics.is_file():
        tested = json.loads(metrics.read_text()).get("_info", {}).get("tested_checkpoint", "")
        if tested and Path(tested).is_file():
            return Path(tested)
    others = sorted((p for p in ckpts.glob("*.ckpt") if not p.name.startswith("last")), key=os.path.getmtime)
    if others:
        return others[-1]
    if last_ckpt.is_file():
        return last_ckpt
    raise PipelineError(f"{ckpts} holds no checkpoint (deleted since? then delete the stage's folder to rerun it; "
                        "or give the stage a ModelCheckpoint callback)")


def best_cv_fold(cv_dir: Path) -> Path:
    """Run directory of the fold with the lowest val/loss in cv_summary.csv (ties: the first)."""
    import pandas as pd

    table = pd.read_csv(cv_dir / "cv_summary.csv")
    folds = table[~table["fold"].astype(str).isin(["mean", "sd"])]
    if "val/loss" in folds.columns and folds["val/loss"].notna().any():
        folds = folds.sort_values("val/loss", kind="stable")
    return Path(str(folds.iloc[0]["run_dir"]))


def stage_output(pipeline: Pipeline, out: Path, name: str, output: str) -> str:
    """The path behind `${stages.<name>.<output>}` (the stage has finished when this is called)."""
    stage = pipeline.stage(name)
    if not is_complete(out, stage):
        raise PipelineError(f"pipeline {pipeline.path}: stage {name} has not finished, so ${{stages.{name}.{output}}} "
                            "has no value yet")
    rd = run_dir(out, stage)
    if output == "dir":
        return str(stage_dir(out, stage))
    if output == "run_dir":
        return str(rd)
    if output == "out":
        return str(stage_dir(out, stage) / PREDICT_SUBDIR) if stage.verb == "predict" else str(rd)
    fit_run = best_cv_fold(rd) if stage.verb == "cv" else rd
    return str(best_checkpoint(fit_run, last=output == "last_ckpt"))
