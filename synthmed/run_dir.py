"""What every run directory gets besides Lightning's own files: env.json and metrics.json."""

from __future__ import annotations

import json
import math
import platform
import socket
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import torch

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
            (run_dir / "metrics.json").write_text(json.dumps(payload, indent=2) + "\n")
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
