"""`report.md` of a finished `synthmed reproduce` run: our classifier rows beside the paper's,
our generative metrics beside the paper's, the evaluation records with their extractors, and the
stages with their exact commands.

Classifier rows come from fit/test/cv stages with a `row:` mapping (cv: mean ± sd over folds from
cv_summary.csv; fit/test: the single run's metrics.json). Paper rows come from the pipeline's
`paper: rows:` and are matched on the row's keys (e.g. protocol + arch).

Generative rows come from evaluate stages with a `row:` mapping: for each paper column in
`report: metrics:` (e.g. `SSIM: [ssim]`) one line per metric of ours with that base name, so both
SSIM definitions and the extractor of every FID are named; the paper's value comes from the
`paper: metric_rows:` entry whose keys match the row. A stage skipped for missing data shows why.

Beside the fold spread, each classifier row has its accuracy on the test images with a bootstrap 95 %
interval, and each protocol is compared with TRTR on the same test images (paired bootstrap and
McNemar: `report_classifiers`). Pictures (`report_figures`) are written beside report.md as
`report_*.png` and linked with their captions.
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

from synthmed.pipeline import report_figures as figures
from synthmed.pipeline.kinds import STAGE_KINDS, kind_of, run_dir
from synthmed.pipeline.report_classifiers import (POOLING, RowPredictions, paired_comparisons,
                                                  stage_predictions)
from synthmed.pipeline.spec import Pipeline, Stage
from synthmed.console_table import TextTable
from synthmed.runs import CLASSIFIER_METRICS

# (metric key in cv_summary.csv / metrics.json, column title, shown as percent)
COLUMNS = [(m.key, m.title, m.percent) for m in CLASSIFIER_METRICS]
INTERVAL_COLUMN = "test acc % [95 % CI over test images]"
# What `reproduce` prints of the classifier table (after the row's keys): the rest is in report.md only.
CONSOLE_COLUMNS = ("source", "runs", "test acc %", "F1", INTERVAL_COLUMN)
NO_CLASSIFIER_ROW = "No stage of this pipeline produces a classifier row."


def _classifier_row(stage: Stage) -> bool:
    """Whether the stage's `row:` is a line of the classifier table (fit/test/cv; evaluate rows are metric lines)."""
    return STAGE_KINDS[stage.verb].classifier_row


def _fmt(value: float, percent: bool) -> str:
    return f"{value * 100:.2f}" if percent else f"{value:.4f}"


def _skipped(state: dict | None, stage: Stage) -> str | None:
    record = ((state or {}).get("stages") or {}).get(stage.name) or {}
    return record.get("reason") if record.get("status") == "skipped" else None


def _matching(rows: list[dict], ours: dict[str, Any], used: set[int]) -> list[tuple[int, dict]]:
    return [(i, r) for i, r in enumerate(rows)
            if i not in used and all(str(r.get(k)) == str(v) for k, v in ours.items())]


def ours_row(out: Path, stage: Stage) -> tuple[dict[str, str], str, list[str]]:
    """(cells, runs, notes) of one stage: 'mean ± sd' per column, how many runs, why cells are empty."""
    notes: list[str] = []
    folds, source, runs = kind_of(out, stage).results()
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


def _row_keys(stages: list[Stage]) -> list[str]:
    keys: list[str] = []
    for stage in stages:
        keys += [k for k in stage.row or {} if k not in keys]
    return keys


def classifier_predictions(pipeline: Pipeline, out: Path, state: dict | None = None
                           ) -> dict[str, RowPredictions | str]:
    """Per classifier-row stage that ran: its pooled per-image test results, or why there are none."""
    seed = int((pipeline.params or {}).get("seed", 0) or 0)
    return {s.name: stage_predictions(out, s, seed=seed) for s in pipeline.stages
            if s.row and _classifier_row(s) and not _skipped(state, s)}


def _interval_cell(found: RowPredictions | str | None) -> str:
    if isinstance(found, RowPredictions):
        return f"{found.interval.text()} (n {found.interval.n})"
    return f"not computed: {found}" if found else "-"


def classifier_table(pipeline: Pipeline, out: Path, state: dict | None = None,
                     predictions: dict[str, RowPredictions | str] | None = None) -> tuple[str, list[str]]:
    """Markdown table: for each of our rows (in stage order) the row, then the paper's matching row(s); the last
    column is the row's accuracy on the test images with its 95 % interval (`classifier_predictions`)."""
    tables, notes = classifier_tables(pipeline, out, state, predictions)
    return (tables[0].markdown() if tables else NO_CLASSIFIER_ROW), notes


def classifier_tables(pipeline: Pipeline, out: Path, state: dict | None = None,
                      predictions: dict[str, RowPredictions | str] | None = None
                      ) -> tuple[tuple[TextTable, TextTable] | None, list[str]]:
    """((every column, for report.md; the console's columns), notes) of `classifier_table`; None: no classifier row.

    The console keeps the row, source, runs, test accuracy, F1 and the test-set interval (`CONSOLE_COLUMNS`)
    so that `reproduce`'s closing table fits 120 columns; a skipped row shows its reason there."""
    stages = [s for s in pipeline.stages if s.row and _classifier_row(s)]
    if not stages:
        return None, []
    predictions = classifier_predictions(pipeline, out, state) if predictions is None else predictions
    row_keys = _row_keys(stages)
    table = TextTable([*row_keys, "source", "runs", *[title for _, title, _ in COLUMNS], INTERVAL_COLUMN])
    console_columns = [*row_keys, *CONSOLE_COLUMNS]
    short = TextTable(console_columns)
    notes: list[str] = []
    paper_rows = list((pipeline.paper or {}).get("rows") or [])
    used: set[int] = set()
    for stage in stages:
        ident = [str(stage.row.get(k, "")) for k in row_keys]
        reason = _skipped(state, stage)
        if reason:
            cells = [f"skipped: {reason}", *["-"] * len(COLUMNS)]
            table.add([*ident, f"ours ({stage.name})", "0 runs", *cells])
            short.add([*ident, f"ours ({stage.name})", "0 runs", f"skipped: {reason}",
                       *["-"] * (len(CONSOLE_COLUMNS) - 3)])
        else:
            cells, runs, stage_notes = ours_row(out, stage)
            notes += stage_notes
            found = predictions.get(stage.name)
            notes += found.notes if isinstance(found, RowPredictions) else []
            table.add([*ident, f"ours ({stage.name})", runs, *cells.values(), _interval_cell(found)])
            short.rows.append(table.select(console_columns).rows[-1])
        for i, prow in _matching(paper_rows, stage.row, used):
            used.add(i)
            ident = [str(prow.get(k, "")) for k in row_keys]
            table.add([*ident, "paper", "1 (single value)", *paper_cells(prow).values(), "not reported"])
            short.rows.append(table.select(console_columns).rows[-1])
    return (table, short), notes


def _link(path: Path, out: Path) -> str:
    """A report.md link to `path`: relative to the report's folder when inside it."""
    try:
        return str(path.relative_to(out))
    except ValueError:
        return str(path)


def picture(path: Path | None, out: Path, caption: str) -> list[str]:
    """Markdown lines of one linked picture and its caption (nothing when the picture could not be drawn)."""
    if path is None or not path.is_file():
        return []
    return [f"![{caption.split(':')[0]}]({_link(path, out)})", "", f"*{caption}*", ""]


def classifier_sections(pipeline: Pipeline, out: Path, predictions: dict[str, RowPredictions | str]) -> list[str]:
    """The text on the test-set intervals, the paired comparisons with TRTR, and the classifier pictures."""
    rows = [found for found in predictions.values() if isinstance(found, RowPredictions)]
    if not rows:
        return []
    seed = int((pipeline.params or {}).get("seed", 0) or 0)
    lines = [f"The last column is the accuracy on the test images with a seeded (seed {seed}) percentile bootstrap "
             f"95 % interval over those images ({rows[0].interval.rounds} rounds); {POOLING}.", ""]
    comparisons = paired_comparisons(rows, seed=seed)
    if comparisons:
        lines += ["### Paired comparisons on the same test images", "",
                  "Difference in test accuracy (points) of each protocol minus TRTR, on the images both were tested "
                  "on; the interval resamples those images once for both rows (paired bootstrap). An interval that "
                  "contains 0 (or McNemar p >= 0.05) means the difference is not distinguishable from test-set noise.",
                  ""]
        lines += [c.line() for c in comparisons] + [""]
    n_images = rows[0].interval.n
    lines += picture(figures.accuracy_bars(rows, out / "report_test_accuracy.png"), out,
                     f"Test accuracy per classifier row on the {n_images} real test images: bar = pooled accuracy, "
                     "error bar = its 95 % bootstrap interval over test images, dots = each run (fold), dashed = chance.")
    lines += picture(figures.confusion_matrices(rows, out / "report_confusion.png"), out,
                     "Confusion matrix of each classifier row on the test images (true class in rows, predicted in "
                     "columns; counts summed over the row's runs, colour = share of the true class).")
    return lines


def metric_table(pipeline: Pipeline, out: Path, state: dict | None = None) -> TextTable | None:
    """Table of evaluate rows: per paper column, each of our matching pooled results beside the paper's value.

    Our results are the typed `MetricResult`s of the stage's evaluation.json (`read_results`), drawn by
    the evaluation's one renderer: value with its 95 % interval, or why it is missing or unreliable
    (e.g. FID from fewer images than feature dimensions), and the images it was computed from.
    """
    from synthmed.evaluate.report import results_text_table
    from synthmed.evaluate.results import MetricResult, read_results

    stages = [s for s in pipeline.stages if s.row and s.verb == "evaluate"]
    if not stages:
        return None
    columns: dict[str, list[str]] = (pipeline.report or {}).get("metrics") or {}
    row_keys = _row_keys(stages)
    lead: list[list[str]] = []
    shown: list[MetricResult] = []
    paper_rows = list((pipeline.paper or {}).get("metric_rows") or [])
    for stage in stages:  # a paper row may match several stages (e.g. the same images under two extractors)
        ident = [str(stage.row.get(k, "")) for k in row_keys]
        match = _matching(paper_rows, stage.row, set())
        prow = match[0][1] if match else {}
        reason = _skipped(state, stage)
        if reason:
            paper = " · ".join(f"{c} {prow[c]}" for c in columns if prow.get(c) is not None) or "-"
            lead.append([*ident, f"all ({stage.name})", paper])
            shown.append(MetricResult(name="-", space="", value=None, reliable=False, reason=f"skipped: {reason}"))
            continue
        path = run_dir(out, stage) / "evaluation.json"
        pooled = [r for r in read_results(json.loads(path.read_text())) if r.class_name is None]
        for column, names in columns.items():
            paper = prow.get(column)
            paper = "not reported" if paper is None else str(paper)
            found = [r for r in pooled if r.name in names]
            found = found or [MetricResult(name=names[0], space="", value=None, reliable=False,
                                           reason=f"not in {path}")]
            for result in found:
                lead.append([*ident, column, paper])
                shown.append(result)
    return results_text_table(shown, columns=("metric", "value", "n"), lead_headers=[*row_keys, "metric", "paper"],
                              lead_cells=lead)


def evaluation_sections(pipeline: Pipeline, out: Path, state: dict) -> list[str]:
    """Per evaluate stage: every result (pooled, then per class) by the evaluation's renderer, and the copy audit."""
    from synthmed.evaluate.report import metrics_table

    parts = []
    for stage in pipeline.stages:
        if stage.verb != "evaluate":
            continue
        reason = _skipped(state, stage)
        if reason:
            parts += [f"### {stage.name}", "", f"Skipped: {reason}.", ""]
            continue
        folder = run_dir(out, stage)
        record = json.loads((folder / "evaluation.json").read_text())
        command = state["stages"].get(stage.name, {}).get("command", "")
        parts += [f"### {stage.name}", "", stage.description or "", "",
                  "Each feature-space metric names its extractor in brackets; pixel metrics name their "
                  "definition; values carry a seeded bootstrap 95 % interval, FID from fewer images than "
                  f"feature dimensions is marked unreliable. Full record: `{folder / 'evaluation.md'}`.", "",
                  metrics_table(record), ""]
        audit = record.get("copy_audit") or {}
        if audit.get("method"):
            parts += [f"Copy audit ({audit['n_heldout']} held-out reals, {audit['n_train']} training images): "
                      f"{audit['method']}.", ""]
            for space, rep in (audit.get("representations") or {}).items():
                parts += picture(folder / rep["closest_pairs_png"], out,
                                 f"Closest pairs of the copy audit in {space}: the 8 fakes nearest to the training "
                                 "set (top) above their nearest training image (bottom), distance below.")
            parts += picture(figures.distance_histograms(audit, audit.get("alpha", 0.0),
                                                         out / f"report_{stage.name}_distances.png"), out,
                             "Distance to the nearest training image, fakes vs held-out real images, per copy-audit "
                             "representation; a generator that copies puts fakes left of the held-out reals (dashed: "
                             "a fake left of it is flagged, drawn when there are enough held-out images).")
        inputs = record.get("inputs") or {}
        if "real" in inputs and "fake" in inputs:
            parts += picture(figures.real_fake_grid(Path(inputs["real"]["dir"]), Path(inputs["fake"]["dir"]),
                                                    list(record.get("classes") or []),
                                                    out / f"report_{stage.name}_real_vs_synthetic.png"), out,
                             f"Real (`--real`) above synthetic (`--fake`) images per class, the first "
                             f"{figures.PER_CLASS} files of each class folder.")
        parts += [f"Command: `{command}`" if command else "", ""]
    return parts


def write_report(pipeline: Pipeline, out: Path, state: dict, command: str) -> str:
    """Write `<out>/report.md`; returns the tables beside the paper as the runner prints them (at most 120
    characters wide: the classifier table's `CONSOLE_COLUMNS`, cells wrapped; report.md has every column)."""
    import torch

    paper = pipeline.paper or {}
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    machine = (f"{socket.gethostname()}, {platform.platform()}, Python {platform.python_version()}, "
               f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
               + (f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"))
    lines = [f"# {pipeline.name} — scale {pipeline.scale}", "", pipeline.description, "",
             f"- command: `{command}`", f"- finished: {when}", f"- machine: {machine}",
             f"- pipeline file: `{pipeline.path}`", f"- params: `{json.dumps(pipeline.params)}`", ""]
    has_rows = any(s.row for s in pipeline.stages)
    source = (f"Paper: {paper['source']}." if paper.get("source") else
              f"Paper: none — {paper.get('none_reason', 'this pipeline has no paper numbers to compare with')}.")
    printed: list[str] = []
    predictions = classifier_predictions(pipeline, out, state)
    tables, notes = classifier_tables(pipeline, out, state, predictions)
    table = tables[0].markdown() if tables else NO_CLASSIFIER_ROW
    metrics = metric_table(pipeline, out, state)
    if metrics is None or any(s.row and _classifier_row(s) for s in pipeline.stages):
        lines += ["## Classifiers", "",
                  "Ours: mean ± sd (sample sd, ddof 1) over cross-validation folds, each fold tested on the same "
                  "real test set (a fit stage is one run: no spread). Accuracies in %, precision / recall / F1 "
                  "macro-averaged over classes.", ""]
        lines += [source, ""] if has_rows else []
        lines += [table, ""]
        lines += classifier_sections(pipeline, out, predictions)
        printed.append(tables[1].console() + "\n(losses, train / val accuracy, precision, recall: report.md)"
                       if tables else NO_CLASSIFIER_ROW)
    if metrics is not None:
        lines += ["## Generated images beside the paper", "",
                  "One line per metric of ours under each paper column: feature-space metrics name their extractor "
                  "in brackets, pixel metrics their pairing (`nearest_real`: each fake vs its nearest real image; "
                  "`random_pairs`: each fake vs a random real image). The paper's value is repeated on each line.",
                  ""]
        lines += [] if printed else [source, ""]
        lines += [metrics.markdown(), ""]
        printed.append(metrics.console())
    for note in [*(paper.get("notes") or []), *notes]:
        lines.append(f"- {note}")
    lines += ["", "## Generated images", ""]
    evaluation = evaluation_sections(pipeline, out, state)
    lines += evaluation or ["No evaluate stage in this pipeline: no generative metrics were computed.", ""]
    lines += ["## Stages", "", "| stage | verb | status | seconds (last run) | directory |", "|---|---|---|---|---|"]
    for stage in pipeline.stages:
        rec = state["stages"].get(stage.name, {})
        seconds = rec.get("seconds")
        seconds = f"{seconds:g}" if isinstance(seconds, (int, float)) and math.isfinite(seconds) else "not recorded"
        status = f"skipped: {rec['reason']}" if rec.get("status") == "skipped" else rec.get("status", "not recorded")
        lines.append(f"| {stage.name} | {stage.verb} | {status} | {seconds} | `{out / stage.name}` |")
    lines += ["", "Exact commands (each can be rerun alone):", "", "```"]
    for s in pipeline.stages:
        rec = state["stages"].get(s.name, {})
        lines.append(f"(skipped {s.name}: {rec['reason']})" if rec.get("status") == "skipped" else rec.get(
            "command", f"(no command recorded for {s.name}: it was finished before this state file existed)"))
    lines += ["```", ""]
    (out / "report.md").write_text("\n".join(lines))
    return "\n\n".join(printed)
