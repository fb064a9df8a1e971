"""Per-stage SLURM requests: built-in defaults per scale < the pipeline's `resources:` block < --resource.

    resources:
      default: {cpus: 2, mem: 8G, time: "02:00:00"}     # every stage
      ldm: {gpus: 1}                                    # a stage by its YAML name (all matrix cells)
      scales:
        paper:
          default: {time: "24:00:00", mem: 32G}
          ldm: {gpus: 1, time: "48:00:00"}

Keys: partition, gpus, gpu_type, cpus, mem, time, account, qos, extra (list of raw `#SBATCH` options),
setup (shell lines run first, e.g. `source .venv/bin/activate`). `--resource ldm.time=12:00:00`
or `--resource partition=gpu` (every stage) on the command line wins.
"""

from __future__ import annotations

from typing import Any

from synthmed.pipeline.errors import PipelineError

KEYS = {"partition", "gpus", "gpu_type", "cpus", "mem", "time", "account", "qos", "extra", "setup", "max_parallel"}
SCALE_DEFAULTS: dict[str, dict[str, Any]] = {
    "smoke": {"cpus": 1, "mem": "2G", "time": "00:20:00", "gpus": 0},
    "mini": {"cpus": 2, "mem": "8G", "time": "04:00:00", "gpus": 0},
    "paper": {"cpus": 8, "mem": "32G", "time": "24:00:00", "gpus": 0},
}


def _checked(block: Any, where: str) -> dict[str, Any]:
    if block is None:
        return {}
    if not isinstance(block, dict) or set(block) - KEYS:
        raise PipelineError(f"resources {where}: a mapping of {sorted(KEYS)} (got {block!r})")
    return dict(block)


def stage_resources(block: dict[str, Any], scale: str, group: str, overrides: list[str]) -> dict[str, Any]:
    """The requests of the stage `group` (its YAML name) at `scale`."""
    found = dict(SCALE_DEFAULTS.get(scale, SCALE_DEFAULTS["mini"]))
    scaled = (block.get("scales") or {}).get(scale) or {}
    for layer, where in ((block.get("default"), "default"), (block.get(group), group),
                         (scaled.get("default"), f"scales.{scale}.default"), (scaled.get(group), f"scales.{scale}.{group}")):
        found.update(_checked(layer, where))
    for item in overrides:
        key, sep, value = item.partition("=")
        stage, _, key = key.rpartition(".")
        if not sep or key not in KEYS:
            raise PipelineError(f"--resource {item!r}: use [STAGE.]KEY=VALUE with KEY one of {sorted(KEYS)}")
        if stage in ("", group):
            found[key] = value
    return found


def sbatch_options(res: dict[str, Any]) -> list[str]:
    """`#SBATCH` lines for the requests."""
    lines = []
    for key, flag in (("partition", "partition"), ("account", "account"), ("qos", "qos"),
                      ("cpus", "cpus-per-task"), ("mem", "mem"), ("time", "time")):
        if res.get(key) not in (None, ""):
            lines.append(f"#SBATCH --{flag}={res[key]}")
    if int(res.get("gpus") or 0):
        kind = f"{res['gpu_type']}:" if res.get("gpu_type") else ""
        lines.append(f"#SBATCH --gres=gpu:{kind}{int(res['gpus'])}")
    lines += [f"#SBATCH {flag}" for flag in res.get("extra") or []]
    return lines
