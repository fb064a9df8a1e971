"""Write an evaluation record as evaluation.json + evaluation.md; render typed results as Markdown.

`result_cells` is the one place a `MetricResult` becomes text (value with its 95 % interval, or
the reason it is missing / unreliable; n; direction); `results_table` puts rows of them into a
Markdown table, optionally after leading columns of the caller's (the pipeline report puts the
paper's column and value there).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from synthmed.console_table import TextTable
from synthmed.evaluate.results import MetricResult, read_results

HEADERS = {"metric": "metric [feature space / definition]", "class": "class", "value": "value [95 % CI]",
           "n": "n real / fake", "direction": "better", "definition": "definition"}
DEFAULT_COLUMNS = ("metric", "class", "value", "n", "direction", "definition")
CONSOLE_COLUMNS = ("metric", "class", "value", "n")  # what `synthmed evaluate` prints; evaluation.md has all


def json_safe(value: Any) -> Any:
    """Replace non-finite floats by the strings 'inf' / '-inf' / 'nan' (strict JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _number(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def format_value(result: MetricResult) -> str:
    """'0.123 [0.101, 0.145]', or the reason when the value is missing or unreliable."""
    if result.value is None or not result.reliable:
        return result.reason or "not computed"
    text = _number(result.value)
    if result.interval is not None:
        text += f" [{_number(result.interval[0])}, {_number(result.interval[1])}]"
    return text


def _direction(result: MetricResult) -> str:
    if result.higher_is_better is None:
        return "see definition"
    return "higher" if result.higher_is_better else "lower"


def result_cells(result: MetricResult, columns: Sequence[str] = DEFAULT_COLUMNS) -> list[str]:
    """The table cells of one result (the one place a result is turned into text)."""
    n = f"{result.n_real if result.n_real is not None else '-'} / {result.n_fake if result.n_fake is not None else '-'}"
    cells = {"metric": f"`{result.name}[{result.space}]`" if result.space else f"`{result.name}`",
             "class": result.class_name or "all", "value": format_value(result), "n": n,
             "direction": _direction(result), "definition": result.definition}
    return [cells[c] for c in columns]


def results_table(results: Sequence[MetricResult], columns: Sequence[str] = DEFAULT_COLUMNS,
                  lead_headers: Sequence[str] = (), lead_cells: Sequence[Sequence[str]] | None = None) -> str:
    """Markdown table of results; lead_cells[i] (under lead_headers) precede result i's cells."""
    return results_text_table(results, columns, lead_headers, lead_cells).markdown()


def results_text_table(results: Sequence[MetricResult], columns: Sequence[str] = DEFAULT_COLUMNS,
                       lead_headers: Sequence[str] = (), lead_cells: Sequence[Sequence[str]] | None = None
                       ) -> TextTable:
    """The cells of `results_table` (for a Markdown file or, fitted to 120 columns, the console)."""
    table = TextTable([*lead_headers, *(HEADERS[c] for c in columns)])
    for i, result in enumerate(results):
        lead = list(lead_cells[i]) if lead_cells is not None else []
        table.add([*lead, *result_cells(result, columns)])
    return table


def _ordered(record: dict) -> list[MetricResult]:
    results = read_results(record)
    return [r for r in results if r.class_name is None] + [r for r in results if r.class_name is not None]


def metrics_table(record: dict) -> str:
    """The metric table of an evaluation record: pooled rows, then the per-class rows."""
    return results_table(_ordered(record))


def console_metrics_table(record: dict) -> str:
    """`metrics_table` for the terminal: without the direction and definition columns (evaluation.md has them),
    at most 120 characters wide."""
    table = results_text_table(_ordered(record), CONSOLE_COLUMNS)
    table.wrap = (HEADERS["value"],)  # a reason (unreliable, not computed) wraps; metric names stay whole
    return table.console()


def _copy_md(audit: dict) -> list[str]:
    if audit.get("computed") is False:
        return [f"Copy audit: {audit['reason']}."]
    lines = [f"Method: {audit['method']}.", "",
             f"Held-out real images: {audit['n_heldout']} (real files byte-identical to a training file, left out: "
             f"{audit['real_files_identical_to_train']}); training images: {audit['n_train']}; fake files "
             f"byte-identical to a training file: {audit['fake_files_identical_to_train']}; k-means cells for C_T: "
             f"{audit['kmeans_cells']}.", "",
             "| representation | distance | fake-to-train median | held-out-to-train median | closest pairs |",
             "| --- | --- | --- | --- | --- |"]
    for space, r in audit["representations"].items():
        held = r["heldout_to_train"]["median"] if r.get("heldout_to_train") else float("nan")
        lines.append(f"| `{space}` | {r['distance']} | {r['fake_to_train']['median']:.4g} | {held:.4g} | "
                     f"![]({r['closest_pairs_png']}) |")
    return lines


def _ms_ssim_text(cfg: dict | None) -> str:
    if not cfg:
        return "not computed (images too small)"
    return (f"kernel_size={cfg['kernel_size']}, betas={tuple(cfg['betas'])} ({cfg['scales']} scales), "
            f"data_range={cfg['data_range']}, normalize={cfg['normalize']}")


def markdown(record: dict) -> str:
    ex = record["extractor"]
    source = ex.get("checkpoint") or ex.get("weights") or ""
    lines = ["# Generative evaluation", "",
             f"Created {record['created_utc']} at {record['image_size']} px, {record['channels']} channel(s), "
             f"device {record['device']}.", "",
             f"Feature extractor: `{ex['name']}` ({ex.get('features', '')}; {source}, sha256 "
             f"{ex.get('sha256', '-')}).", "",
             "| set | folder | images | classes |", "| --- | --- | --- | --- |"]
    for name, info in record["inputs"].items():
        classes = ", ".join(f"{c} {n}" for c, n in info["class_counts"].items()) or "flat"
        lines.append(f"| {name} | `{info['dir']}` | {info['n_images']} | {classes} |")
    settings = record["settings"]
    boot = settings["bootstrap"]
    lines += ["", "## Metrics", "",
              f"Intervals: {boot['level']:.0%} {boot['method']} ({boot['rounds']} rounds, seed {settings['seed']}; "
              f"FID at most {boot['fid_max_rounds']}). FID from fewer images than feature dimensions is not "
              "printed: KID (unbiased) is the small-sample number. Per-class rows follow the pooled ones when "
              "fakes and reals share class folders.", "", metrics_table(record), "",
              f"k-NN metrics use k={settings['feature_space']['k_nearest_neighbours']}.",
              f"MS-SSIM settings: {_ms_ssim_text(settings['pixel']['ms_ssim'])}.",
              f"Resize mode: {settings['resize_mode']}; max images per set {settings['max_images']}.", "",
              "## Copy audit", ""]
    lines += _copy_md(record["copy_audit"])
    return "\n".join(lines) + "\n"


def write_reports(record: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "evaluation.json", out_dir / "evaluation.md"
    json_path.write_text(json.dumps(json_safe(record), indent=2, allow_nan=False) + "\n")
    md_path.write_text(markdown(record))
    return json_path, md_path
