"""`report.md` of a finished `synthmed reproduce` run: our classifier rows beside the paper's,
the evaluation metrics with their extractors, and the stages with their exact commands.

Classifier rows come from stages with a `row:` mapping (cv: mean ± sd over folds from
cv_summary.csv; fit/test: the single run's metrics.json). Paper rows come from the pipeline's
`paper: rows:` and are matched on the row's keys (e.g. protocol + arch).
"""

from __future__ import annotations

import json
import math
import platform
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from synthmed.pipeline_stages import Pipeline, Stage

# (metric key in cv_summary.csv / metrics.json, column title, shown as percent)
COLUMNS = [
    ("train/loss", "train loss", False), ("val/loss", "val loss", False), ("test/loss", "test loss", False),
    ("train/acc", "train acc %", True), ("val/acc", "val acc %", True), ("test/acc", "test acc %", True),
    ("test/precision", "precision", False), ("test/recall", "recall", False), ("test/f1_macro", "F1", False),
]


def _fmt(value: float, percent: bool) -> str:
    return f"{value * 100:.2f}" if percent else f"{value:.4f}"


def ours_row(out: Path, stage: Stage) -> tuple[dict[str, str], str, list[str]]:
    """(cells, runs, notes) of one stage: 'mean ± sd' per column, how many runs, why cells are empty."""
    from synthmed.reproduce import run_dir

    rd = run_dir(out, stage)
    notes: list[str] = []
    if stage.verb == "cv":
        table = pd.read_csv(rd / "cv_summary.csv")
        folds = table[~table["fold"].astype(str).isin(["mean", "sd"])]
        source, runs = rd / "cv_summary.csv", f"{len(folds)} folds"
    else:
        metrics = json.loads((rd / "metrics.json").read_text())
        folds = pd.DataFrame([{k: v for k, v in metrics.items() if not k.startswith("_")}])
        source, runs = rd / "metrics.json", "1 run (no spread)"
    cells = {}
    for key, _, percent in COLUMNS:
        values = pd.to_numeric(folds[key], errors="coerce").dropna() if key in folds.columns else pd.Series([])
        if values.empty:
            cells[key] = "not logged"
            notes.append(f"`{key}` is not in {source} for {stage.name}: the run did not log it")
            continue
        mean = float(values.mean())
        if len(values) > 1:
            sd = float(values.std(ddof=1))
            cells[key] = f"{_fmt(mean, percent)} ± {_fmt(sd, percent)}"
        else:
            cells[key] = _fmt(mean, percent)
    return cells, runs, notes


def paper_cells(row: dict[str, Any]) -> dict[str, str]:
    """The paper's numbers as printed (accuracies are already percent in the YAML)."""
    cells = {}
    for key, _, _percent in COLUMNS:
        value = row.get(key)
        cells[key] = "not reported" if value is None else (f"{value:g}" if isinstance(value, (int, float)) else str(value))
    return cells


def classifier_table(pipeline: Pipeline, out: Path) -> tuple[str, list[str]]:
    """Markdown table: for each of our rows (in stage order) the row, then the paper's matching row(s)."""
    row_keys: list[str] = []
    for stage in pipeline.stages:
        for key in stage.row or {}:
            if key not in row_keys:
                row_keys.append(key)
    head = [*row_keys, "source", "runs", *[title for _, title, _ in COLUMNS]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes: list[str] = []
    paper_rows = list((pipeline.paper or {}).get("rows") or [])
    used = set()
    for stage in pipeline.stages:
        if not stage.row:
            continue
        cells, runs, stage_notes = ours_row(out, stage)
        notes += stage_notes
        ident = [str(stage.row.get(k, "")) for k in row_keys]
        lines.append("| " + " | ".join([*ident, f"ours ({stage.name})", runs, *cells.values()]) + " |")
        for i, prow in enumerate(paper_rows):
            if i not in used and all(str(prow.get(k)) == str(v) for k, v in stage.row.items()):
                used.add(i)
                ident = [str(prow.get(k, "")) for k in row_keys]
                pcells = paper_cells(prow)
                lines.append("| " + " | ".join([*ident, "paper", "1 (single value)", *pcells.values()]) + " |")
    if not any(stage.row for stage in pipeline.stages):
        return "No stage of this pipeline produces a classifier row.", notes
    return "\n".join(lines), notes


def evaluation_sections(pipeline: Pipeline, out: Path, state: dict) -> list[str]:
    from synthmed.evaluate.report import metrics_table
    from synthmed.reproduce import run_dir

    parts = []
    for stage in pipeline.stages:
        if stage.verb != "evaluate":
            continue
        record = json.loads((run_dir(out, stage) / "evaluation.json").read_text())
        command = state["stages"].get(stage.name, {}).get("command", "")
        parts += [f"### {stage.name}", "", stage.description or "", "",
                  "Each feature-space metric names its extractor in brackets; pixel metrics name their "
                  f"definition. Full record: `{run_dir(out, stage) / 'evaluation.md'}`.", "",
                  metrics_table(record), "", f"Command: `{command}`" if command else "", ""]
    return parts


def write_report(pipeline: Pipeline, out: Path, state: dict, command: str) -> str:
    """Write `<out>/report.md`; returns the classifier table (printed by the runner)."""
    import torch

    table, notes = classifier_table(pipeline, out)
    paper = pipeline.paper or {}
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    machine = (f"{socket.gethostname()}, {platform.platform()}, Python {platform.python_version()}, "
               f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
               + (f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"))
    lines = [f"# {pipeline.name} — scale {pipeline.scale}", "", pipeline.description, "",
             f"- command: `{command}`", f"- finished: {when}", f"- machine: {machine}",
             f"- pipeline file: `{pipeline.path}`", f"- params: `{json.dumps(pipeline.params)}`", "",
             "## Classifiers", "",
             "Ours: mean ± sd (sample sd, ddof 1) over cross-validation folds, each fold tested on the same "
             "real test set. Accuracies in %, precision / recall / F1 macro-averaged over classes.", ""]
    if paper.get("source"):
        lines += [f"Paper: {paper['source']}.", ""]
    elif any(stage.row for stage in pipeline.stages):
        lines += [f"Paper: none — {paper.get('none_reason', 'this pipeline has no paper numbers to compare with')}.", ""]
    lines += [table, ""]
    for note in [*(paper.get("notes") or []), *notes]:
        lines.append(f"- {note}")
    lines += ["", "## Generated images", ""]
    evaluation = evaluation_sections(pipeline, out, state)
    lines += evaluation or ["No evaluate stage in this pipeline: no generative metrics were computed.", ""]
    lines += ["## Stages", "", "| stage | verb | seconds (last run) | directory |", "|---|---|---|---|"]
    for stage in pipeline.stages:
        rec = state["stages"].get(stage.name, {})
        seconds = rec.get("seconds")
        seconds = f"{seconds:g}" if isinstance(seconds, (int, float)) and math.isfinite(seconds) else "not recorded"
        lines.append(f"| {stage.name} | {stage.verb} | {seconds} | `{out / stage.name}` |")
    lines += ["", "Exact commands (each can be rerun alone):", "", "```"]
    lines += [state["stages"].get(s.name, {}).get("command", f"(no command recorded for {s.name}: "
                                                   "it was finished before this state file existed)")
              for s in pipeline.stages]
    lines += ["```", ""]
    (out / "report.md").write_text("\n".join(lines))
    return table
