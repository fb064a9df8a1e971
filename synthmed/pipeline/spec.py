"""Pipeline files for `synthmed reproduce`: loading, parameters, `${...}` references, stage outputs.

A pipeline YAML holds `name`, `params` (defaults), `scales` (per-scale parameter overrides),
`paper` (the paper's rows for the report), `report` (how evaluate rows are tabulated) and an
ordered list of `stages`. Every string in a stage may use `${params.<name>}` and
`${stages.<earlier stage>.<output>}`; `matrix` expands a stage once per value (`${matrix.<key>}`).
References nest and resolve inside-out, so a matrix value can pick a param or a sibling stage:
`${params.${matrix.modality}_root}`, `${stages.ddpm-${matrix.variant}.last_ckpt}`.

`requires: [PATH | {path: PATH, supply: TEXT}]` makes a stage conditional on data being there: when
a path is absent (or empty) the runner skips the stage, and every stage that references it, with
the note "PATH absent — supply TEXT" in the state and the report, instead of failing.

Why not omegaconf interpolation: stage outputs (a checkpoint file chosen after the stage ran)
are only known one stage at a time, so references are resolved lazily by the runner, and every
error must name the pipeline file and the stage. The strings are passed on to LightningCLI
(omegaconf mode) fully resolved, so no `${` ever reaches it.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from synthmed.pipeline.errors import PipelineError
from synthmed.pipeline.kinds import STAGE_KINDS

__all__ = ["PipelineError", "Pipeline", "Stage", "load_pipeline", "parse_value", "resolve_stage_refs",
           "unmet_requirement"]

STAGE_KEYS = {"name", "verb", "config", "args", "matrix", "row", "description", "requires"}
TOP_KEYS = {"name", "description", "params", "scales", "stages", "paper", "report", "templates",
            "resources"}  # resources: per-stage SLURM requests (synthmed/pipeline/launchers/resources.py)  # templates: YAML anchors only
REFERENCE = re.compile(r"\$\{([^${}]*)\}")  # innermost only: nested references resolve inside-out
MAX_NESTING = 8
STAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+.-]*$")


@dataclass
class Stage:
    """One stage after parameter and matrix expansion (stage references still unresolved)."""

    name: str
    verb: str
    config: list[Any]           # YAML paths (str) or inline mappings
    args: list[str]
    row: dict[str, Any] | None = None
    description: str = ""
    references: list[tuple[str, str]] = field(default_factory=list)  # (stage, output)
    requires: list[dict[str, str]] = field(default_factory=list)     # [{path, supply}]
    group: str = ""  # the YAML stage it came from (before matrix expansion): one SLURM job per group


@dataclass
class Pipeline:
    """A loaded pipeline: resolved parameters and the expanded, checked stage list."""

    path: Path
    name: str
    scale: str
    params: dict[str, Any]
    stages: list[Stage]
    paper: dict[str, Any]
    report: dict[str, Any]
    description: str = ""
    resources: dict[str, Any] = field(default_factory=dict)  # the YAML's `resources:` block, params resolved

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def _substitute(value: Any, lookup: Callable[[str], Any]) -> Any:
    """Replace every `${key}` in strings (recursively in lists/dicts) by `lookup(key)`.

    A string that is exactly one reference keeps the referenced value's type (a list stays a list).
    Innermost references go first and the result is scanned again, so `${a.${b}}` works; `lookup`
    returns `${key}` unchanged for references it leaves to a later pass.
    """
    if isinstance(value, list):
        return [_substitute(v, lookup) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, lookup) for k, v in value.items()}
    if not isinstance(value, str) or "${" not in value:
        return value
    for _ in range(MAX_NESTING):
        whole = REFERENCE.fullmatch(value)
        if whole:
            return lookup(whole.group(1).strip())
        new = REFERENCE.sub(lambda m: _as_text(lookup(m.group(1).strip())), value)
        if new == value:
            break
        value = new
    return value


def _as_text(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_value(text: str) -> Any:
    """A `--set` value: YAML scalar/list syntax (`3`, `0.2`, `[a, b]`, `true`), else the string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_pipeline(path: str | Path, scale: str, overrides: dict[str, Any]) -> Pipeline:
    """Read, parameterise, expand and check a pipeline file (see the module docstring)."""
    path = Path(path)
    where = f"pipeline {path}"
    if not path.is_file():
        raise PipelineError(f"{where}: no such file")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise PipelineError(f"{where}: not valid YAML: {exc}") from exc
    if not isinstance(spec, dict):
        raise PipelineError(f"{where}: the top level must be a mapping with name, params, scales, stages")
    unknown = set(spec) - TOP_KEYS
    if unknown:
        raise PipelineError(f"{where}: unknown top-level keys {sorted(unknown)}; allowed: {sorted(TOP_KEYS)}")
    for key in ("name", "stages"):
        if not spec.get(key):
            raise PipelineError(f"{where}: missing `{key}`")
    scales = spec.get("scales") or {}
    if scales and scale not in scales:
        raise PipelineError(f"{where}: --scale {scale} is not defined; scales: {sorted(scales)}")
    params = dict(spec.get("params") or {})
    params.update((scales.get(scale) or {}) if scales else {})
    unknown = set(overrides) - set(params)
    if unknown:
        raise PipelineError(f"{where}: --set {sorted(unknown)}: no such param; params: {sorted(params)}")
    params.update(overrides)

    def param_lookup(context: str) -> Callable[[str], Any]:
        def lookup(key: str) -> Any:
            if key.startswith("params."):
                name = key[len("params."):]
                if name not in params:
                    raise PipelineError(f"{where}: {context}: ${{{key}}}: no param {name!r}; "
                                        f"params: {sorted(params)} (add it under params: or pass --set {name}=...)")
                value = params[name]
                return _substitute(value, lookup) if isinstance(value, str) else value
            return "${" + key + "}"  # stage/matrix references are resolved later
        return lookup

    for name in list(params):  # params may reference other params
        params[name] = _substitute(params[name], param_lookup(f"params.{name}"))
    stages: list[Stage] = []
    for i, raw in enumerate(spec["stages"]):
        if not isinstance(raw, dict) or not raw.get("name"):
            raise PipelineError(f"{where}: stage #{i + 1} must be a mapping with a `name`")
        stages += _expand_stage(raw, where, param_lookup(f"stage {raw['name']}"))
    _check_stages(stages, where)
    paper = _substitute(spec.get("paper") or {}, param_lookup("paper"))
    report = _substitute(spec.get("report") or {}, param_lookup("report"))
    _check_report(stages, report, paper, where)
    resources = _substitute(spec.get("resources") or {}, param_lookup("resources"))
    if not isinstance(resources, dict):
        raise PipelineError(f"{where}: resources must map `default`, stage names and `scales` to SLURM requests")
    return Pipeline(path=path, name=str(spec["name"]), scale=scale, params=params, stages=stages,
                    paper=paper, report=report, description=str(spec.get("description") or ""),
                    resources=resources)


def _expand_stage(raw: dict, where: str, lookup: Callable[[str], Any]) -> list[Stage]:
    name = str(raw["name"])
    unknown = set(raw) - STAGE_KEYS
    if unknown:
        raise PipelineError(f"{where}: stage {name}: unknown keys {sorted(unknown)}; allowed: {sorted(STAGE_KEYS)}")
    if raw.get("verb") not in STAGE_KINDS:  # a stage's `verb:` names its kind (synthmed/pipeline/kinds.py)
        raise PipelineError(f"{where}: stage {name}: verb {raw.get('verb')!r}; use one of {', '.join(STAGE_KINDS)}")
    if isinstance(raw.get("args"), list):  # a YAML alias to a shared list (`[*common_args, --k, 3]`) nests it;
        raw = {**raw, "args": _flatten(raw["args"])}  # flattened before `${...}` can put a list value in an arg
    raw = _substitute(raw, lookup)
    matrix = raw.get("matrix") or {}
    if not isinstance(matrix, dict):
        raise PipelineError(f"{where}: stage {name}: matrix must map a key to a list of values")
    for key, values in matrix.items():
        if not isinstance(values, list) or not values:
            raise PipelineError(f"{where}: stage {name}: matrix.{key} must be a non-empty list (got {values!r})")
    combos = [dict(zip(matrix, combo)) for combo in itertools.product(*matrix.values())] if matrix else [{}]
    out = []
    for combo in combos:
        def matrix_lookup(key: str, combo=combo) -> Any:
            if key.startswith("matrix."):
                if key[7:] not in combo:
                    raise PipelineError(f"{where}: stage {name}: ${{{key}}}: matrix has {sorted(combo)}")
                return combo[key[7:]]
            return "${" + key + "}"
        body = _substitute({k: v for k, v in raw.items() if k != "matrix"}, matrix_lookup)
        body = _substitute(body, lookup)  # params whose name came from the matrix: ${params.${matrix.k}_root}
        full_name = "-".join([name, *(str(v) for v in combo.values())])
        config = body.get("config") or []
        args = body.get("args") or []
        if not isinstance(config, list) or not isinstance(args, list):
            raise PipelineError(f"{where}: stage {name}: config and args must be lists")
        out.append(Stage(name=full_name, verb=body["verb"], config=config, args=[_as_text(a) for a in args],
                         row=body.get("row"), description=str(body.get("description") or ""),
                         requires=_requirements(body.get("requires"), f"{where}: stage {full_name}"),
                         group=name))
    return out


def _flatten(items: list[Any]) -> list[Any]:
    return [x for item in items for x in (_flatten(item) if isinstance(item, list) else [item])]


def _requirements(raw: Any, where: str) -> list[dict[str, str]]:
    """`requires:` entries as [{path, supply}]; paths may use params and matrix values, not stage outputs."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise PipelineError(f"{where}: requires must be a list of paths or {{path, supply}} mappings")
    found = []
    for item in raw:
        if isinstance(item, dict) and "path" in item and set(item) <= {"path", "supply"}:
            entry = {"path": "" if item["path"] is None else str(item["path"]), "supply": str(item.get("supply") or "")}
        elif isinstance(item, str) or item is None:
            entry = {"path": item or "", "supply": ""}
        else:
            raise PipelineError(f"{where}: requires entry {item!r}: give a path or {{path: PATH, supply: TEXT}}")
        if "${" in entry["path"]:
            raise PipelineError(f"{where}: requires path {entry['path']!r}: only ${{params.*}} and ${{matrix.*}} "
                                "references can be checked before the stage runs")
        found.append(entry)
    return found


def unmet_requirement(stage: Stage) -> str | None:
    """Why the stage cannot run ("PATH absent — supply TEXT"), or None when every required path exists."""
    for need in stage.requires:
        path = need["path"].strip()
        if path and Path(path).expanduser().exists():
            continue
        what = f"{path} absent" if path else "no path given"
        return f"{what} — supply {need['supply'] or 'it'}"
    return None


def _check_stages(stages: list[Stage], where: str) -> None:
    """Names unique and path-safe; every ${stages.X.Y} names an earlier stage and one of its outputs."""
    seen: dict[str, Stage] = {}
    for stage in stages:
        if not STAGE_NAME.match(stage.name):
            raise PipelineError(f"{where}: stage name {stage.name!r}: use letters, digits, _ + . - only")
        if stage.name in seen:
            raise PipelineError(f"{where}: two stages are named {stage.name!r}")
        for config in stage.config:
            if isinstance(config, str) and "${" not in config and not Path(config).is_file():
                raise PipelineError(f"{where}: stage {stage.name}: config {config} does not exist "
                                    "(paths are relative to the directory you run from)")
            if not isinstance(config, (str, dict)):
                raise PipelineError(f"{where}: stage {stage.name}: config entries are YAML paths or mappings")
        for text in _strings(stage.config) + stage.args:
            for match in REFERENCE.finditer(text):
                key = match.group(1).strip()
                parts = key.split(".")
                if parts[0] != "stages" or len(parts) != 3:
                    raise PipelineError(f"{where}: stage {stage.name}: ${{{key}}}: references are "
                                        "${params.<name>}, ${matrix.<key>} or ${stages.<stage>.<output>}")
                _, ref, output = parts
                if ref not in seen:
                    later = any(s.name == ref for s in stages)
                    raise PipelineError(f"{where}: stage {stage.name}: ${{{key}}}: "
                                        + (f"stage {ref!r} runs later; a stage can only use earlier ones"
                                           if later else f"no stage named {ref!r}; stages: {list(seen)}"))
                outputs = STAGE_KINDS[seen[ref].verb].outputs
                if output not in outputs:
                    raise PipelineError(f"{where}: stage {stage.name}: ${{{key}}}: a {seen[ref].verb} stage "
                                        f"has outputs {', '.join(outputs)}")
                stage.references.append((ref, output))
        seen[stage.name] = stage


def _check_report(stages: list[Stage], report: dict, paper: dict, where: str) -> None:
    """A `row:` is a mapping (report.md tabulates those of fit/test/cv and evaluate stages); evaluate rows
    need `report: metrics:`."""
    for stage in stages:
        if stage.row is not None and not isinstance(stage.row, dict):
            raise PipelineError(f"{where}: stage {stage.name}: `row:` must be a mapping (it names the stage's line "
                                "in report.md)")
    metrics = report.get("metrics")
    if any(s.verb == "evaluate" and s.row for s in stages):
        if not isinstance(metrics, dict) or not all(isinstance(v, list) and v for v in metrics.values()):
            raise PipelineError(f"{where}: evaluate stages with `row:` need `report: metrics:` mapping each paper "
                                "column to our metric names, e.g. {FID: [fid], SSIM: [ssim]}")
    if not isinstance(paper.get("metric_rows") or [], list):
        raise PipelineError(f"{where}: paper.metric_rows must be a list of mappings")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return []


def resolve_stage_refs(value: Any, outputs: Callable[[str, str], str]) -> Any:
    """Replace `${stages.X.Y}` in `value` by `outputs(X, Y)` (a path string)."""
    return _substitute(value, lambda key: outputs(*key.split(".")[1:]))
