"""A stage's command and state questions that launchers share: is it complete, what its
`${stages.X.Y}` outputs resolve to, why it is skipped, and its `synthmed ...` argv.

Kept apart from the runner so the launchers (local loop, SLURM) can use them without importing
the runner, which imports the launchers (no cycle).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from synthmed.pipeline.kinds import kind_of
from synthmed.pipeline.spec import Pipeline, PipelineError, Stage, resolve_stage_refs, unmet_requirement


def is_complete(out: Path, stage: Stage) -> bool:
    return kind_of(out, stage).is_complete()


def stage_output(pipeline: Pipeline, out: Path, name: str, output: str) -> str:
    """The path behind `${stages.<name>.<output>}` (the stage has finished when this is called)."""
    kind = kind_of(out, pipeline.stage(name))
    if not kind.is_complete():
        raise PipelineError(f"pipeline {pipeline.path}: stage {name} has not finished, so ${{stages.{name}.{output}}} "
                            "has no value yet")
    return kind.output(output)


def skip_reason(stage: Stage, skipped: dict[str, str]) -> str | None:
    """Why a stage will not run: its own `requires:` is unmet, or a stage it references was skipped."""
    own = unmet_requirement(stage)
    if own:
        return own
    for ref, _ in stage.references:
        if ref in skipped:
            return f"needs stage {ref}, skipped: {skipped[ref]}"
    return None


# ---- commands -------------------------------------------------------------------------------------
def stage_argv(pipeline: Pipeline, out: Path, stage: Stage, dry_run: bool = False) -> list[str]:
    """The stage's `synthmed ...` argument list with every reference resolved."""
    def lookup(name: str, output: str) -> str:
        if dry_run and not is_complete(out, pipeline.stage(name)):
            return f"<stages.{name}.{output}>"
        return stage_output(pipeline, out, name, output)

    args = resolve_stage_refs(stage.args, lookup)
    configs = []
    for i, config in enumerate(stage.config):
        config = resolve_stage_refs(config, lookup)
        if isinstance(config, dict):  # inline overlay -> a YAML file the command can be rerun with
            path = out / "configs" / f"{stage.name}-{i}.yaml"
            if not dry_run:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(yaml.safe_dump(config, sort_keys=False))
            config = str(path)
        configs += ["--config", config]
    kind = kind_of(out, stage)
    if configs and not kind.takes_config:
        raise PipelineError(f"pipeline {pipeline.path}: stage {stage.name}: a {stage.verb} stage takes args only, "
                            "not config")
    return kind.argv(configs, args)
