"""Everything about a run directory (`logs/<experiment>/<version>/`), in one place.

What a run writes besides Lightning's own files (env.json, metrics.json: `RunRecorder`), when it
counts as finished (`is_finished`: metrics.json is written only at the end), which checkpoint it
offers (`find_checkpoint`), where its resolved config and split manifest are, the one file-hash
helper (`file_sha256`) and the names of the classifier metrics that cv, sweep-summary and the
pipeline report tabulate. cv, sweep, reproduce, evaluate and explain ask this module instead of
knowing the layout themselves.
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from datamodules.hashing import file_sha256

__all__ = ["file_sha256"]  # re-exported: the one file-hash helper (lives in datamodules, which may not import us)

METRICS_FILE = "metrics.json"        # written by RunRecorder.finish, i.e. only when the run finished
CONFIG_FILE = "config.yaml"          # LightningCLI's resolved config
SPLIT_MANIFEST = "split_manifest.csv"  # written by the DataModule: every image, its split and label
CHECKPOINT_DIR = "checkpoints"


@dataclass(frozen=True)
class MetricName:
    """A metric key of metrics.json / cv_summary.csv, its column title, and whether it reads as percent."""

    key: str
    title: str
    percent: bool = False


# What a classifier run logs and what cv_summary.csv, sweep-summary and report.md tabulate, in order.
CLASSIFIER_METRICS = (
    MetricName("train/loss", "train loss"), MetricName("val/loss", "val loss"), MetricName("test/loss", "test loss"),
    MetricName("train/acc", "train acc %", True), MetricName("val/acc", "val acc %", True),
    MetricName("test/acc", "test acc %", True), MetricName("test/precision", "precision"),
    MetricName("test/recall", "recall"), MetricName("test/f1_macro", "F1"),
)
CLASSIFIER_METRIC_KEYS = [m.key for m in CLASSIFIER_METRICS]


class RunDirError(FileNotFoundError):
    """A run directory lacks what was asked of it (a checkpoint, metrics); the message names the path."""


# ---- what a run directory holds ---------------------------------------------------------------------
def is_finished(run_dir: str | Path) -> bool:
    """A run finished when its metrics.json exists (RunRecorder writes it last)."""
    return (Path(run_dir) / METRICS_FILE).is_file()


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / METRICS_FILE).read_text())


def run_dir_of_checkpoint(ckpt: str | Path) -> Path | None:
    """`<run_dir>/checkpoints/x.ckpt` -> `<run_dir>`; None for a checkpoint outside a run directory."""
    path = Path(ckpt).resolve()
    return path.parent.parent if path.parent.name == CHECKPOINT_DIR else None


def split_manifest(run_dir: str | Path) -> Path | None:
    """The run's split_manifest.csv, or None when the run wrote none (e.g. an array DataModule)."""
    path = Path(run_dir) / SPLIT_MANIFEST
    return path if path.is_file() else None


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """The run's resolved config.yaml as a dict ({} when there is none)."""
    import yaml

    path = Path(run_dir) / CONFIG_FILE
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def find_checkpoint(run_dir: str | Path, last: bool = False) -> Path:
    """A run's checkpoint: `last.ckpt` when `last`, else the one it tested (best), else the newest
    non-last one, else last.ckpt. Raises RunDirError naming the folder when there is none."""
    run_dir = Path(run_dir)
    ckpts = run_dir / CHECKPOINT_DIR
    last_ckpt = ckpts / "last.ckpt"
    if last:
        if last_ckpt.is_file():
            return last_ckpt
        raise RunDirError(f"{ckpts} has no last.ckpt")
    if is_finished(run_dir):
        tested = read_metrics(run_dir).get("_info", {}).get("tested_checkpoint", "")
        if tested and Path(tested).is_file():
            return Path(tested)
    others = sorted((p for p in ckpts.glob("*.ckpt") if not p.name.startswith("last")), key=os.path.getmtime)
    if others:
        return others[-1]
    if last_ckpt.is_file():
        return last_ckpt
    raise RunDirError(f"{ckpts} holds no checkpoint")


def move_aside(path: Path) -> Path:
    """Rename an unfinished run directory to `<name>.incomplete-<time>` so a rerun starts clean (nothing is deleted)."""
    target = path.with_name(f"{path.name}.incomplete-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    n = 0
    while target.exists():
        n += 1
        target = target.with_name(f"{target.name}-{n}")
    path.rename(target)
    return target


RESUMABLE_CHECKPOINTS = ("hpc_ckpt_*.ckpt", f"{CHECKPOINT_DIR}/last.ckpt")  # Lightning's SLURM save; ModelCheckpoint's last


def resume_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint an unfinished run can continue from (hpc_ckpt_* or last.ckpt), or None."""
    found = [p for pattern in RESUMABLE_CHECKPOINTS for p in Path(run_dir).glob(pattern) if p.is_file()]
    return max(found, key=os.path.getmtime) if found else None


def restart_options(run_dir: str | Path, keep: tuple[str, ...] = ()) -> tuple[dict[str, str], str | None]:
    """How an unfinished run in a fixed directory starts again, and what was done (None: nothing).

    `fit` refuses a fixed run_version that already holds a run unless it resumes it, so: continue
    from its newest resumable checkpoint (`{"ckpt_path": ...}`), or, when it left none, move its
    leftovers to `<name>.incomplete-<time>` and start fresh ({}); the files named in `keep` (a
    launcher's own records) are copied back and do not count as leftovers.
    """
    run_dir = Path(run_dir)
    ckpt = resume_checkpoint(run_dir)
    if ckpt is not None:
        return {"ckpt_path": str(ckpt)}, f"continuing the interrupted run from {ckpt}"
    if not run_dir.is_dir() or all(p.name in keep for p in run_dir.iterdir()):
        return {}, None
    moved = move_aside(run_dir)
    run_dir.mkdir()
    for name in keep:
        if (moved / name).is_file():
            (run_dir / name).write_bytes((moved / name).read_bytes())
    return {}, f"the interrupted run left no checkpoint; moved it to {moved}"


def best_fold_run(cv_dir: str | Path) -> Path:
    """Run directory of the cv fold with the lowest val/loss in cv_summary.csv (ties: the first)."""
    import pandas as pd

    table = pd.read_csv(Path(cv_dir) / "cv_summary.csv")
    folds = table[~table["fold"].astype(str).isin(["mean", "sd"])]
    if "val/loss" in folds.columns and folds["val/loss"].notna().any():
        folds = folds.sort_values("val/loss", kind="stable")
    return Path(str(folds.iloc[0]["run_dir"]))


# ---- what a run directory gets: env.json and metrics.json -------------------------------------------

PACKAGES = ("synthmed", "torch", "torchvision", "lightning", "diffusers", "transformers", "timm",
            "torchmetrics", "lime", "albumentations", "datasets", "scikit-learn", "numpy", "jsonargparse")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(cwd: str | Path = ".") -> dict[str, Any]:
    def run(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    status = run("status", "--porcelain", "--untracked-files=no")
    return {"commit": run("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def environment_record() -> dict[str, Any]:
    return {
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "packages": package_versions(),
        "git": git_state(Path(__file__).resolve().parent.parent),
    }


def to_float_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        try:
            number = float(value.item() if hasattr(value, "item") else value)
        except (TypeError, ValueError):
            continue
        out[key] = number if math.isfinite(number) else str(number)
    return out


class RunRecorder:
    """Collects metrics of one CLI run and writes env.json + metrics.json into its run directory."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.metrics: dict[str, float] = {}
        self.extra: dict[str, Any] = {}

    @property
    def run_dir(self) -> Path | None:
        return Path(self.trainer.log_dir) if self.trainer.log_dir else None

    def collect(self, metrics: Mapping[str, Any]) -> None:
        self.metrics.update(to_float_metrics(metrics))

    def finish(self) -> Path | None:
        run_dir = self.run_dir
        if self.trainer.is_global_zero and run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "env.json").write_text(json.dumps(environment_record(), indent=2) + "\n")
            payload = dict(sorted(self.metrics.items()))
            if self.extra:
                payload["_info"] = self.extra
            (run_dir / METRICS_FILE).write_text(json.dumps(payload, indent=2) + "\n")
            print(f"run_dir: {run_dir}", flush=True)
        return run_dir


def fresh_out_dir(base: Path) -> Path:
    """`base`, or the first free sibling `<name>_1`, `<name>_2`, ... when `base` already holds files.

    Output folders of synthmed verbs are never reused, so earlier results are never overwritten.
    """
    candidate, n = Path(base), 0
    while candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
        n += 1
        candidate = Path(base).with_name(f"{Path(base).name}_{n}")
    candidate.mkdir(parents=True, exist_ok=True)
    return candidate
