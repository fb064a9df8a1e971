"""`synthmed sweep-summary`: every run's metrics.json in a sweep folder -> CSV + mean ± sd table.

    synthmed sweep-summary DIR [--by model.arch [--by ...]] [--metrics test/acc,test/f1_macro]

Finds every `metrics.json` under DIR and the `overrides.json` that `synthmed sweep` wrote next
to it. `--by` names grid options to group on (`model.arch` and `model.init_args.arch` are the
same); without `--by` all runs form one group. Writes DIR/sweep_summary.csv (one row per run,
all numeric metrics) and DIR/sweep_summary.md (per group: n, mean ± sample sd (ddof=1) of each
metric; sd is "–" when n = 1) and prints the table, at most 120 characters wide (without
--metrics only the validation and test metrics: the .md file has every one).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import textwrap
from pathlib import Path

import pandas as pd

from synthmed.console_table import CONSOLE_WIDTH, TextTable
from synthmed.runs import CLASSIFIER_METRIC_KEYS
from synthmed.sweep.grid import format_value, normalise_key


# What the console shows of the default metrics (sweep_summary.md / .csv have every one).
CONSOLE_METRICS = ("val/loss", "val/acc", "test/loss", "test/acc", "test/f1_macro")


class SummaryError(ValueError):
    """A sweep folder or option that cannot be summarised; the message says what to do."""


def collect_runs(sweep_dir: Path) -> tuple[list[dict], list[str]]:
    """(rows of finished runs, names of launched-but-unfinished runs) under `sweep_dir`."""
    rows = []
    for metrics_path in sorted(sweep_dir.rglob("metrics.json")):
        run_dir = metrics_path.parent
        metrics = json.loads(metrics_path.read_text())
        record_path = run_dir / "overrides.json"
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
        row = {"run": record.get("name", run_dir.name), "run_dir": str(run_dir),
               "_overrides": record.get("overrides", {})}
        row.update({k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not k.startswith("_")})
        rows.append(row)
    finished = {Path(r["run_dir"]) for r in rows}
    unfinished = sorted(p.parent.name for p in sweep_dir.rglob("overrides.json") if p.parent not in finished)
    return rows, unfinished


def override_value(overrides: dict, key: str) -> str:
    """The value of option `key` in a run's overrides, matching short and init_args forms."""
    for name, value in overrides.items():
        if normalise_key(name) == normalise_key(key):
            return format_value(value)
    return "–"


def choose_metrics(rows: list[dict], requested: list[str] | None) -> list[str]:
    available = list(dict.fromkeys(k for r in rows for k in r if k not in ("run", "run_dir", "_overrides")))
    if requested:
        missing = [m for m in requested if m not in available]
        if missing:
            raise SummaryError(f"--metrics {missing} not in any metrics.json (available: {', '.join(available)})")
        return requested
    preferred = [m for m in CLASSIFIER_METRIC_KEYS if m in available]
    return preferred or available


def run_table(rows: list[dict]) -> pd.DataFrame:
    """One row per run: its name, its grid options (as the grid wrote them), all metrics, its dir."""
    keys = list(dict.fromkeys(k for r in rows for k in r["_overrides"]))
    keys = [k for i, k in enumerate(keys) if normalise_key(k) not in map(normalise_key, keys[:i])]
    table = []
    for row in rows:
        entry = {"run": row["run"]}
        entry.update({key: override_value(row["_overrides"], key) for key in keys})
        entry.update({k: v for k, v in row.items() if k not in ("run", "run_dir", "_overrides")})
        entry["run_dir"] = row["run_dir"]
        table.append(entry)
    return pd.DataFrame(table)


def by_columns(table: pd.DataFrame, by: list[str]) -> list[str]:
    """The table column of each --by option (`model.arch` finds `model.init_args.arch`)."""
    found = []
    for key in by:
        matches = [c for c in table.columns if normalise_key(c) == normalise_key(key)]
        if not matches:
            options = [c for c in table.columns if c != "run" and c != "run_dir" and "/" not in c]
            raise SummaryError(f"--by {key}: not a grid option of these runs "
                               f"(options: {', '.join(options) or 'none, no overrides.json found'})")
        found.append(matches[0])
    return found


def _cell(mean: float, sd: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.4f} ± {sd:.4f}" if not math.isnan(sd) else f"{mean:.4f} ± –"


def group_table(table: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    """Per group of the --by columns: n, then mean and sd (ddof=1) of each metric."""
    keys = by or ["_all"]
    frame = table.assign(_all="all") if not by else table
    grouped = frame.groupby(keys, sort=True, dropna=False)
    stats = grouped[metrics].agg(["mean", "std"])
    stats.columns = [f"{m}/{s}" for m, s in stats.columns]
    stats.insert(0, "n", grouped.size())
    return stats.reset_index()


def group_text_table(groups: pd.DataFrame, by: list[str], metrics: list[str]) -> TextTable:
    """Per group: its --by values, n, and `mean ± sd` of each metric, as text cells."""
    keys = by or ["_all"]
    table = TextTable([*(by or ["runs"]), "n", *metrics])
    for _, g in groups.iterrows():
        cells = [str(g[k]) for k in keys] + [str(int(g["n"]))]
        cells += [_cell(float(g[f"{m}/mean"]), float(g[f"{m}/std"])) for m in metrics]
        table.add(cells)
    return table


def markdown(groups: pd.DataFrame, by: list[str], metrics: list[str]) -> str:
    return group_text_table(groups, by, metrics).markdown()


def summarise_sweep(sweep_dir: Path, by: list[str], metrics: list[str] | None) -> str:
    """Write sweep_summary.csv / .md in `sweep_dir`; returns the table and notes as printed (<= 120 wide)."""
    if not sweep_dir.is_dir():
        raise SummaryError(f"{sweep_dir} is not a folder (give the sweep's --out folder)")
    rows, unfinished = collect_runs(sweep_dir)
    if not rows:
        raise SummaryError(f"no finished runs (metrics.json) under {sweep_dir}")
    chosen = choose_metrics(rows, metrics)
    table = run_table(rows)
    by = by_columns(table, by)
    table.to_csv(sweep_dir / "sweep_summary.csv", index=False)
    groups = group_table(table, by, chosen)
    text = group_text_table(groups, by, chosen)
    notes = f"{len(rows)} finished runs; mean ± sample sd (ddof=1) per group."
    if unfinished:
        notes += f" Not finished (no metrics.json): {', '.join(unfinished)}."
    (sweep_dir / "sweep_summary.md").write_text(f"# Sweep summary: {sweep_dir}\n\n{notes}\n\n{text.markdown()}\n")
    # the console: at most 120 wide; without --metrics only the CONSOLE_METRICS (the file has every one)
    shown = text
    if not metrics and any(m in CONSOLE_METRICS for m in chosen):
        lead = text.head[:len(by or ["runs"]) + 1]  # the --by values and n
        shown = text.select([*lead, *(m for m in chosen if m in CONSOLE_METRICS)])
    shown.wrap = tuple(shown.head[len(by or ["runs"]) + 1:])  # a long group name stays whole, its numbers wrap
    more = f" Every metric: {sweep_dir / 'sweep_summary.md'}." if shown.head != text.head else ""
    return shown.console() + "\n\n" + textwrap.fill(notes + more, CONSOLE_WIDTH)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="synthmed sweep-summary", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", help="the sweep folder (synthmed sweep --out)")
    parser.add_argument("--by", action="append", default=[], help="grid option to group on (repeatable)")
    parser.add_argument("--metrics", default=None, help="comma-separated metric names (default: the "
                        "usual loss/acc/f1 keys present, else all)")
    args = parser.parse_args(argv)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    sweep_dir = Path(args.dir)
    try:
        text = summarise_sweep(sweep_dir, args.by, metrics)
    except SummaryError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(text)
    print(f"run_dir: {sweep_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
