"""`synthmed cv`: k-fold cross-validation = one `fit` (+ test) per fold, then a summary table.

    synthmed cv --config X.yaml [--folds 5] [--name cv_run] [--keep-fold-checkpoints best|all] [--keep-last]
                [any fit override ...]

Fold k trains on the other folds of the training portion, early-stops on fold k and is tested
on the test split (the same for every fold). Runs land in logs/<experiment>/<name>/fold_<k>/;
`cv_summary.csv` and `cv_summary.md` go in logs/<experiment>/<name>/. A fold whose run directory
already has a metrics.json is not rerun, so rerunning the same command with the same --name
resumes an interrupted cross-validation: an interrupted fold continues from its own
checkpoints/last.ckpt, or, when it left none, restarts after its leftovers are moved to
`fold_<k>.incomplete-<time>`. The folder's `cv_config.json` records the resolved fit
configuration and the number of folds; a rerun whose configuration differs (another model.arch,
data.root, ...) is refused with the differing keys, since reusing those folds would mix two
experiments in one table. Keys that do not change what is trained are not compared: see
`HARMLESS_KEYS`.

Disk: once a fold is finished its best checkpoint is rewritten weights-only (no optimizer state)
and its resumable `last.ckpt` is deleted (`synthmed.finished_run_checkpoints`). Once all folds are
finished and cv_summary.csv is written, only the best fold (lowest val/loss: `runs.best_fold_run`,
the checkpoint a pipeline's `${stages.<cv>.best_ckpt}` names) keeps its checkpoint; the other
folds keep their metrics, test predictions and logs (`--keep-fold-checkpoints all` keeps every
fold's checkpoint). `--keep-last` keeps every fold's last.ckpt as it is, e.g. to extend the folds
later with `fit --ckpt_path`, and so implies `--keep-fold-checkpoints all` unless that is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from synthmed import runs
from synthmed.console_table import TextTable
from synthmed.finished_run_checkpoints import remove_checkpoints, slim_finished_run
from synthmed.runs import CLASSIFIER_METRIC_KEYS
from synthmed.trainer_run import TrainerRun, config_dict, flatten

CONFIG_RECORD = "cv_config.json"
# Resolved-config keys a rerun may change without making the finished folds a different experiment:
# where and how fast it runs, not what is trained on what.
HARMLESS_KEYS = ("trainer.devices", "trainer.num_nodes", "trainer.accelerator", "trainer.enable_progress_bar",
                 "trainer.enable_model_summary", "data.init_args.num_workers")


class CvConfigChanged(ValueError):
    """A cv folder holds folds of another configuration; the message names the keys and what to do."""



def summarise(rows: list[dict], metrics: list[str] = CLASSIFIER_METRIC_KEYS) -> pd.DataFrame:
    """Per-fold rows plus `mean` and `sd` rows (sample standard deviation, ddof=1)."""
    table = pd.DataFrame(rows)
    cols = [m for m in metrics if m in table.columns]
    mean = table[cols].mean()
    sd = table[cols].std(ddof=1) if len(table) > 1 else table[cols].std(ddof=0)
    out = pd.concat([table, pd.DataFrame([{"fold": "mean", **mean}, {"fold": "sd", **sd}])], ignore_index=True)
    return out[["fold", *cols, *[c for c in table.columns if c not in cols and c != "fold"]]]


# What cv prints of the summary (cv_summary.md / .csv have every metric): fits 120 columns.
CONSOLE_COLUMNS = ("fold", "val/loss", "val/acc", "test/loss", "test/acc", "test/f1_macro")


def summary_table(summary: pd.DataFrame) -> TextTable:
    """Each fold's metrics and a `mean ± sd` row, as text cells."""
    cols = [c for c in summary.columns if c in CLASSIFIER_METRIC_KEYS]
    table = TextTable(["fold", *cols])
    for _, row in summary[summary["fold"].astype(str) != "sd"].iterrows():
        if row["fold"] == "mean":
            sd = summary[summary["fold"] == "sd"].iloc[0]
            table.add(["mean ± sd", *(f"{row[c]:.4f} ± {sd[c]:.4f}" for c in cols)])
        else:
            table.add([row["fold"], *(f"{row[c]:.4f}" for c in cols)])
    return table


def format_table(summary: pd.DataFrame) -> str:
    """The Markdown table of cv_summary.md."""
    return summary_table(summary).markdown()


def keep_best_fold_checkpoint(cv_dir: Path, fold_dirs: list[Path]) -> str | None:
    """Delete the checkpoints of every fold but the best (`runs.best_fold_run`); what was done, or None."""
    best = runs.best_fold_run(cv_dir).resolve()
    freed, folds = 0, []
    for fold_dir in fold_dirs:
        if Path(fold_dir).resolve() == best:
            continue
        size, removed = remove_checkpoints(fold_dir)
        freed += size
        folds += [Path(fold_dir).name] if removed else []
    if not folds:
        return None
    return (f"{best.name} (lowest val/loss) keeps its checkpoint; removed those of {', '.join(folds)} "
            f"({freed / 1e6:.0f} MB; --keep-fold-checkpoints all keeps them)")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="synthmed cv", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, default=5, help="number of folds (>= 2)")
    parser.add_argument("--name", default=None, help="folder under logs/<experiment>/ (default cv_<time>)")
    parser.add_argument("--keep-last", action="store_true",
                        help="keep each finished fold's resumable last.ckpt (default: delete it and keep a "
                             "weights-only best checkpoint); implies --keep-fold-checkpoints all")
    parser.add_argument("--keep-fold-checkpoints", choices=("best", "all"), default=None,
                        help="best (default): once cv_summary.csv is written, only the best fold (lowest "
                             "val/loss, what a pipeline's best_ckpt names) keeps its checkpoint; all: every fold")
    parser.add_argument("--fold", type=int, default=None,
                        help="run only this fold and write no summary (one array task of a cluster launcher); "
                             "a later run without --fold reuses the finished folds and writes cv_summary.csv")
    args, fit_args = parser.parse_known_args(argv)
    if args.folds < 2:
        parser.error(f"--folds {args.folds}: need at least 2 folds")
    if not any(a == "--config" or a.startswith("--config=") for a in fit_args):
        parser.error("--config X.yaml is required (the fit configuration to cross-validate)")
    name = args.name or datetime.now().strftime("cv_%Y%m%d_%H%M%S")
    keep_folds = args.keep_fold_checkpoints or ("all" if args.keep_last else "best")

    base = TrainerRun("fit", tuple(fit_args))
    config = base.resolve()  # the real CLI parser: which --config wins, interpolations, defaults
    cv_dir = Path(str(config.logs_root)) / str(config.experiment) / name
    try:
        record_config(cv_dir, config, args.folds)
    except CvConfigChanged as exc:
        print(f"synthmed cv: error: {exc}", file=sys.stderr)
        return 2
    rows, summary_shown = [], False
    for fold in range(args.folds) if args.fold is None else [args.fold]:
        fold_dir = cv_dir / f"fold_{fold}"
        if runs.is_finished(fold_dir):
            print(f"fold {fold}: already finished, reusing {fold_dir}")
            run_dir, metrics = fold_dir, runs.read_metrics(fold_dir)
        else:
            print(f"=== fold {fold + 1}/{args.folds}", flush=True)
            # one model summary per cv: the folds train the same model
            quiet = {"trainer.enable_model_summary": False} if summary_shown else {}
            cli = base.with_options({"data.init_args.num_folds": args.folds, "data.init_args.fold": fold,
                                     "run_version": f"{name}/fold_{fold}", **quiet,
                                     **restart_options(fold_dir)}).run()
            summary_shown = True
            run_dir, metrics = cli.recorder.run_dir, cli.recorder.metrics
            freed, done = slim_finished_run(run_dir, keep_last=args.keep_last)
            if done:
                print(f"fold {fold}: {'; '.join(done)} ({freed / 1e6:.0f} MB freed)", flush=True)
        rows.append({"fold": fold, **{k: v for k, v in metrics.items() if not k.startswith("_")},
                     "run_dir": str(run_dir)})
    if args.fold is not None:
        print(f"fold {args.fold}: done ({run_dir}); rerun without --fold to write cv_summary.csv")
        return 0
    summary = summarise(rows)
    summary.to_csv(cv_dir / "cv_summary.csv", index=False)
    table = summary_table(summary)
    (cv_dir / "cv_summary.md").write_text(f"# Cross-validation, {args.folds} folds\n\n{table.markdown()}\n")
    print(table.select(CONSOLE_COLUMNS).console())
    print(f"(every metric: {cv_dir / 'cv_summary.md'})")
    if keep_folds == "best":
        done = keep_best_fold_checkpoint(cv_dir, [Path(r["run_dir"]) for r in rows])
        if done:
            print(done, flush=True)
    print(f"run_dir: {cv_dir}")
    return 0


def restart_options(fold_dir: Path) -> dict[str, str]:
    """An unfinished fold continues from its own checkpoint, else restarts (see runs.restart_options)."""
    options, done = runs.restart_options(fold_dir)
    if done:
        print(f"fold {fold_dir.name}: {done}", flush=True)
    return options


def record_config(cv_dir: Path, config, folds: int) -> None:
    """Write `<cv_dir>/cv_config.json` on the first run; on a rerun refuse a changed configuration."""
    now = {"folds": folds, "config": config_dict(config)}
    path = cv_dir / CONFIG_RECORD
    if path.is_file():
        changed = config_changes(json.loads(path.read_text()), now)
        if changed:
            listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changed.items())
            raise CvConfigChanged(
                f"{cv_dir} holds folds of another configuration ({listed}); reusing them would mix two "
                f"experiments. Use a new --name for this configuration, or delete {cv_dir} to rerun all folds.")
        return
    if any(cv_dir.glob("fold_*/metrics.json")):
        print(f"note: {cv_dir} has finished folds but no {CONFIG_RECORD} (written before this check existed); "
              "they are reused unchecked", flush=True)
    cv_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(now, indent=2, default=str) + "\n")


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{key: (old, new)} for every resolved-config key that differs, except `HARMLESS_KEYS`."""
    before = {"folds": old.get("folds"), **flatten(old.get("config") or {}, "")}
    after = {"folds": new.get("folds"), **flatten(new.get("config") or {}, "")}
    keys = sorted(set(before) | set(after))
    return {k: (before.get(k), after.get(k)) for k in keys
            if before.get(k) != after.get(k) and not k.startswith(HARMLESS_KEYS)}
