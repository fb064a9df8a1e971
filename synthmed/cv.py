"""`synthmed cv`: k-fold cross-validation = one `fit` (+ test) per fold, then a summary table.

    synthmed cv --config X.yaml [--folds 5] [--name cv_run] [any fit override ...]

Fold k trains on the other folds of the training portion, early-stops on fold k and is tested
on the test split (the same for every fold). Runs land in logs/<experiment>/<name>/fold_<k>/;
`cv_summary.csv` and `cv_summary.md` go in logs/<experiment>/<name>/. A fold whose run directory
already has a metrics.json is not rerun, so rerunning the same command with the same --name
resumes an interrupted cross-validation.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

import pandas as pd

from synthmed.runs import CLASSIFIER_METRIC_KEYS



def summarise(rows: list[dict], metrics: list[str] = CLASSIFIER_METRIC_KEYS) -> pd.DataFrame:
    """Per-fold rows plus `mean` and `sd` rows (sample standard deviation, ddof=1)."""
    table = pd.DataFrame(rows)
    cols = [m for m in metrics if m in table.columns]
    mean = table[cols].mean()
    sd = table[cols].std(ddof=1) if len(table) > 1 else table[cols].std(ddof=0)
    out = pd.concat([table, pd.DataFrame([{"fold": "mean", **mean}, {"fold": "sd", **sd}])], ignore_index=True)
    return out[["fold", *cols, *[c for c in table.columns if c not in cols and c != "fold"]]]


def format_table(summary: pd.DataFrame) -> str:
    cols = [c for c in summary.columns if c in CLASSIFIER_METRIC_KEYS]
    lines = ["| fold | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for _, row in summary[summary["fold"].astype(str) != "sd"].iterrows():
        if row["fold"] == "mean":
            sd = summary[summary["fold"] == "sd"].iloc[0]
            cells = [f"{row[c]:.4f} ± {sd[c]:.4f}" for c in cols]
            lines.append("| mean ± sd | " + " | ".join(cells) + " |")
        else:
            lines.append(f"| {row['fold']} | " + " | ".join(f"{row[c]:.4f}" for c in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="synthmed cv", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, default=5, help="number of folds (>= 2)")
    parser.add_argument("--name", default=None, help="folder under logs/<experiment>/ (default cv_<time>)")
    args, fit_args = parser.parse_known_args(argv)
    if args.folds < 2:
        parser.error(f"--folds {args.folds}: need at least 2 folds")
    if not any(a == "--config" or a.startswith("--config=") for a in fit_args):
        parser.error("--config X.yaml is required (the fit configuration to cross-validate)")
    name = args.name or datetime.now().strftime("cv_%Y%m%d_%H%M%S")

    from synthmed.lightning_cli import run_trainer_verb

    rows, cv_dir = [], None
    for fold in range(args.folds):
        fold_args = ["fit", *fit_args, "--data.init_args.num_folds", str(args.folds),
                     "--data.init_args.fold", str(fold), "--run_version", f"{name}/fold_{fold}"]
        existing = _finished_fold(fit_args, name, fold)
        if existing is not None:
            print(f"fold {fold}: already finished, reusing {existing}")
            run_dir, metrics = existing, json.loads((existing / "metrics.json").read_text())
        else:
            print(f"=== fold {fold + 1}/{args.folds}", flush=True)
            cli = run_trainer_verb(fold_args)
            run_dir, metrics = cli.recorder.run_dir, cli.recorder.metrics
        cv_dir = run_dir.parent
        rows.append({"fold": fold, **{k: v for k, v in metrics.items() if not k.startswith("_")},
                     "run_dir": str(run_dir)})
    summary = summarise(rows)
    summary.to_csv(cv_dir / "cv_summary.csv", index=False)
    table = format_table(summary)
    (cv_dir / "cv_summary.md").write_text(f"# Cross-validation, {args.folds} folds\n\n{table}\n")
    print(table)
    print(f"run_dir: {cv_dir}")
    return 0


def _option(args: list[str], name: str) -> list[str]:
    """All values given for `--name X` / `--name=X` in a LightningCLI argument list, in order."""
    values = []
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            values.append(args[i + 1])
        elif arg.startswith(name + "="):
            values.append(arg.split("=", 1)[1])
    return values


def run_location(fit_args: list[str]) -> tuple[str, str]:
    """(logs_root, experiment) as the CLI will resolve them: last --config wins, flags win last."""
    from omegaconf import OmegaConf

    found = {"logs_root": "logs", "experiment": "default"}
    for path in _option(fit_args, "--config"):
        cfg = OmegaConf.load(path)
        for key in found:
            if key in cfg:
                found[key] = str(cfg[key])
    for key in found:
        found[key] = (_option(fit_args, f"--{key}") or [found[key]])[-1]
    return found["logs_root"], found["experiment"]


def _finished_fold(fit_args: list[str], name: str, fold: int) -> Path | None:
    """The fold's run directory if a previous run with this --name completed it."""
    logs_root, experiment = run_location(fit_args)
    fold_dir = Path(logs_root) / experiment / name / f"fold_{fold}"
    return fold_dir if (fold_dir / "metrics.json").is_file() else None
