"""Sweep grid files: parse, validate and expand into named override sets (used by `synthmed sweep`).

A grid file is YAML with these top-level keys (at least one of `axes` / `runs`):

    axes:                      # cartesian product, in the order written
      model.init_args.arch: [resnet18, mobilenet_v2]
      data.init_args.fold: [0, 1, 2, 3, 4]
      seed_everything: [0]
    runs:                      # explicit override sets; crossed with `axes` when both are given
      - {model.init_args.lr: 0.001}
      - {model.init_args.lr: 0.0001, data.init_args.batch_size: 16}
    num_folds: 5               # passed as data.init_args.num_folds to every run
    base_args: [--trainer.max_epochs, "20"]   # extra CLI args for every run
    slurm: {partition: gpu, gpus: 1, cpus_per_task: 8, time: "04:00:00", mem: 32G,
            nodes: 1, extra_sbatch: ["--constraint=a100"], setup: ["source .venv/bin/activate"]}

Keys are LightningCLI option names without the leading `--`; the short form `model.arch`
works too (LightningCLI resolves it once the YAML gave a class_path). Each run is named from
its overrides, e.g. `arch=resnet18__fold=0`, so a run's directory is the same on every rerun.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from synthmed import runs
from synthmed.trainer_run import TrainerRun, format_value

__all__ = ["format_value"]  # grid values are written as the CLI parses them back (synthmed.trainer_run)

GRID_KEYS = ("axes", "runs", "num_folds", "base_args", "slurm")
# key -> accepted python types (bool is excluded from int checks below)
SLURM_KEYS: dict[str, tuple[type, ...]] = {
    "partition": (str,), "account": (str,), "qos": (str,), "job_name": (str,),
    "gpus": (int,), "gpu_type": (str,), "nodes": (int,), "ntasks_per_node": (int,),
    "cpus_per_task": (int,), "time": (str, int), "mem": (str, int),
    "extra_sbatch": (list,), "setup": (list,),
}
# Options the sweep itself sets for every run so that each run lands in <out>/<name>/.
RESERVED_KEYS = ("logs_root", "experiment", "run_version", "trainer.default_root_dir", "config")
OPTION_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
SCALARS = (str, int, float, bool, type(None))


class GridError(ValueError):
    """A grid file that cannot be expanded; the message names the file and what to fix."""


@dataclass
class Grid:
    """A validated grid file: the expanded override sets plus options shared by every run."""

    path: Path
    runs: list[dict[str, Any]]
    base_args: list[str] = field(default_factory=list)
    num_folds: int | None = None
    slurm: dict[str, Any] = field(default_factory=dict)


def normalise_key(key: str) -> str:
    """`model.init_args.arch` and `model.arch` name the same option: compare keys in short form."""
    return key.replace(".init_args.", ".")


def _name_value(value: Any) -> str:
    text = format_value(value)
    text = re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "x"
    if len(text) > 40:  # long paths / lists: keep a readable head and a stable hash
        text = f"{text[:24]}-{hashlib.sha1(format_value(value).encode()).hexdigest()[:8]}"
    return text


def name_keys(keys: list[str]) -> dict[str, str]:
    """Label of each key in run names: its last part (`arch`), or more of it if that clashes."""
    short = {key: normalise_key(key).rsplit(".", 1)[-1] for key in keys}
    clashes = {s for s in short.values() if list(short.values()).count(s) > 1}
    return {key: (normalise_key(key).replace(".", "-") if short[key] in clashes else short[key])
            for key in keys}


def run_name(overrides: dict[str, Any], labels: dict[str, str]) -> str:
    """Deterministic folder name of one run, e.g. `arch=resnet18__fold=0` (`base` if empty)."""
    parts = [f"{labels[key]}={_name_value(value)}" for key, value in overrides.items()]
    return "__".join(parts) or "base"


def _fail(path: Path, message: str) -> GridError:
    return GridError(f"grid file {path}: {message}")


def _check_key(path: Path, key: Any, where: str) -> str:
    if not isinstance(key, str) or not OPTION_KEY.match(key):
        raise _fail(path, f"{where}: {key!r} is not an option name; write it like "
                          "model.init_args.arch (no leading --)")
    if key in RESERVED_KEYS:
        raise _fail(path, f"{where}: {key!r} is set by the sweep itself (each run gets "
                          "<out>/<name>/); remove it from the grid")
    return key


def _check_value(path: Path, key: str, value: Any, where: str) -> Any:
    if not isinstance(value, (*SCALARS, list, dict)):
        raise _fail(path, f"{where}: value {value!r} of {key} has unsupported type "
                          f"{type(value).__name__} (use numbers, strings, booleans, null, lists, maps)")
    return value


def _parse_axes(path: Path, axes: Any) -> dict[str, list[Any]]:
    if not isinstance(axes, dict) or not axes:
        raise _fail(path, "`axes` must be a non-empty mapping `option: [value, ...]`")
    parsed = {}
    for key, values in axes.items():
        _check_key(path, key, "axes")
        if not isinstance(values, list):
            raise _fail(path, f"axis {key} must be a list of values, got {type(values).__name__} "
                              f"{values!r} (write [{values!r}] for a single value)")
        if not values:
            raise _fail(path, f"axis {key} is empty: give at least one value or remove the axis")
        parsed[key] = [_check_value(path, key, v, f"axis {key}") for v in values]
        if len({format_value(v) for v in values}) != len(values):
            raise _fail(path, f"axis {key} lists a value twice: {values}")
    return parsed


def _parse_runs(path: Path, runs: Any) -> list[dict[str, Any]]:
    if not isinstance(runs, list) or not runs:
        raise _fail(path, "`runs` must be a non-empty list of mappings `{option: value, ...}`")
    parsed = []
    for i, run in enumerate(runs):
        if not isinstance(run, dict):
            raise _fail(path, f"runs[{i}] must be a mapping `{{option: value}}`, got {run!r}")
        parsed.append({_check_key(path, k, f"runs[{i}]"): _check_value(path, k, v, f"runs[{i}]")
                       for k, v in run.items()})
    return parsed


def _parse_slurm(path: Path, slurm: Any) -> dict[str, Any]:
    if slurm is None:
        return {}
    if not isinstance(slurm, dict):
        raise _fail(path, "`slurm` must be a mapping of resources (partition, gpus, time, mem, ...)")
    for key, value in slurm.items():
        if key not in SLURM_KEYS:
            raise _fail(path, f"slurm: unknown key {key!r} (allowed: {', '.join(SLURM_KEYS)}; "
                              "anything else goes in extra_sbatch)")
        types = SLURM_KEYS[key]
        if isinstance(value, bool) or not isinstance(value, types):
            raise _fail(path, f"slurm.{key}: {value!r} should be {' or '.join(t.__name__ for t in types)}")
        if key in ("extra_sbatch", "setup") and not all(isinstance(v, str) for v in value):
            raise _fail(path, f"slurm.{key} must be a list of strings")
        if (key == "gpus" and value < 0) or (key in ("nodes", "cpus_per_task", "ntasks_per_node") and value < 1):
            raise _fail(path, f"slurm.{key}: {value} is out of range")
    return dict(slurm)


def _fold_key(keys: list[str]) -> str | None:
    return next((k for k in keys if normalise_key(k) == "data.fold"), None)


def expand(axes: dict[str, list[Any]], runs: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    """Cartesian product of `axes`, crossed with each explicit run (or alone)."""
    points = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())] if axes else [{}]
    expanded = []
    for run in runs or [{}]:
        for point in points:
            clash = {normalise_key(k) for k in run} & {normalise_key(k) for k in point}
            if clash:
                raise _fail(path, f"{sorted(clash)} is both an axis and set in a `runs` entry; "
                                  "keep it in one place")
            expanded.append({**run, **point})
    return expanded


def load_grid(path: str | Path) -> Grid:
    """Read and validate a grid file; every problem raises GridError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise GridError(f"grid file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise _fail(path, f"not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise _fail(path, "must be a YAML mapping with `axes` and/or `runs`")
    unknown = [k for k in data if k not in GRID_KEYS]
    if unknown:
        raise _fail(path, f"unknown key(s) {unknown} (allowed: {', '.join(GRID_KEYS)})")
    if "axes" not in data and "runs" not in data:
        raise _fail(path, "needs `axes` (a product of values) and/or `runs` (explicit override sets)")
    axes = _parse_axes(path, data["axes"]) if "axes" in data else {}
    runs = _parse_runs(path, data["runs"]) if "runs" in data else []
    base_args = data.get("base_args") or []
    if not isinstance(base_args, list) or not all(isinstance(a, (str, int, float)) for a in base_args):
        raise _fail(path, "`base_args` must be a list of command-line strings, e.g. [--trainer.max_epochs, '5']")
    num_folds = data.get("num_folds")
    if num_folds is not None and (isinstance(num_folds, bool) or not isinstance(num_folds, int) or num_folds < 2):
        raise _fail(path, f"num_folds: {num_folds!r} must be an integer >= 2")
    expanded = expand(axes, runs, path)
    fold_key = _fold_key([k for run in expanded for k in run])
    if num_folds is not None and fold_key:
        bad = sorted({r[fold_key] for r in expanded if fold_key in r
                      and not (isinstance(r[fold_key], int) and 0 <= r[fold_key] < num_folds)}, key=str)
        if bad:
            raise _fail(path, f"{fold_key} values {bad} are not folds 0..{num_folds - 1} of num_folds={num_folds}")
    return Grid(path=path, runs=expanded, base_args=[str(a) for a in base_args],
                num_folds=num_folds, slurm=_parse_slurm(path, data.get("slurm")))


@dataclass
class PlannedRun:
    """One run of a sweep: its name, the grid overrides, its run directory and CLI arguments."""

    name: str
    overrides: dict[str, Any]
    run_dir: Path
    args: list[str]  # starts with the verb: ["fit", "--config", ...]

    @property
    def finished(self) -> bool:
        return runs.is_finished(self.run_dir)

    @property
    def command(self) -> str:
        """The run as one shell line: `synthmed fit --config ...`."""
        return "synthmed " + shlex.join(self.args)


def plan_runs(grid: Grid, configs: list[str], extra_args: list[str], out: Path,
              verb: str = "fit") -> list[PlannedRun]:
    """The CLI arguments of every run: configs, grid base_args, extra args, overrides, location.

    Later arguments win in LightningCLI, so the grid's overrides come after the shared ones. Each
    run logs to `<out>/<name>/` (logs_root=<out>.parent, experiment=<out>.name, run_version=name)
    and uses it as `trainer.default_root_dir`, where Lightning's SLURM requeue writes and finds
    its `hpc_ckpt_*.ckpt`.
    """
    keys = list(dict.fromkeys(k for run in grid.runs for k in run))
    labels = name_keys(keys)
    fold_key = _fold_key(keys)
    shared = TrainerRun.from_configs(verb, configs).with_args([*grid.base_args, *extra_args])
    if grid.num_folds is not None:
        prefix = fold_key.rsplit(".", 1)[0] if fold_key else "data.init_args"
        shared = shared.with_options({f"{prefix}.num_folds": grid.num_folds})
    planned, seen = [], {}
    for overrides in grid.runs:
        name = run_name(overrides, labels)
        if name in seen:
            raise _fail(grid.path, f"two runs get the same name {name!r} ({seen[name]} and {overrides}); "
                                   "each override set must appear once")
        seen[name] = overrides
        run_dir = out / name
        location = {"logs_root": out.parent, "experiment": out.name, "run_version": name,
                    "trainer.default_root_dir": run_dir}
        planned.append(PlannedRun(name, overrides, run_dir, shared.with_options(overrides).with_options(location).argv))
    return planned
