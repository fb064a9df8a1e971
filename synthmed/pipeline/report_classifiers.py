"""Per-image test results of the classifier rows of report.md: test-set intervals and paired comparisons.

Every classifier test run writes `test_predictions.csv` (lightning_modules/test_predictions.py: manifest
index, true and predicted label, probabilities); its split_manifest.csv gives each index's image path,
so rows of different runs are joined on the same test images. A cv stage is pooled over its folds by
averaging each fold's per-image correctness (all folds are tested on the same real test set), so the
pooled accuracy is the mean of the fold accuracies; McNemar's test, which needs one right/wrong answer
per image, compares the best folds (lowest val/loss: the checkpoint later stages use).

Paired comparisons: within rows that agree on every `row:` key but `protocol`, each protocol against
TRTR (e.g. TSTR − TRTR, TR+S − TRTR), on the images both were tested on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lightning_modules.test_predictions import PREDICTIONS_FILE
from synthmed import runs
from synthmed.evaluate.paired import (ROUNDS, AccuracyInterval, PairedDifference, accuracy_interval,
                                      paired_difference)
from synthmed.pipeline.kinds import CvKind, kind_of
from synthmed.pipeline.spec import Stage

REFERENCE_PROTOCOL = "TRTR"
POOLING = ("cv stages pool their folds by averaging each fold's per-image correctness (every fold is tested on "
           "the same real test set), so the interval is around the mean of the folds' test accuracies; McNemar's "
           "exact test compares the best folds (lowest val/loss)")


@dataclass
class RowPredictions:
    """Per-image test results of one classifier row (a fit/test run, or the folds of a cv stage), in one image order."""

    stage: Stage
    paths: list[str]
    labels: np.ndarray
    correct: np.ndarray         # mean over the runs of 1/0 correctness per image
    best_correct: np.ndarray    # bool per image: the best fold's (a single run's own) answers
    confusion: np.ndarray       # true x predicted counts, summed over the runs
    class_names: list[str]
    run_accuracies: list[float]
    notes: list[str] = field(default_factory=list)
    interval: AccuracyInterval | None = None

    @property
    def label(self) -> str:
        return " ".join(str(v) for v in (self.stage.row or {}).values())


def read_run_predictions(run_dir: Path) -> pd.DataFrame:
    """A run's test_predictions.csv with each row's image `path` (from split_manifest.csv; the manifest key or,
    without a manifest, the index otherwise). Raises FileNotFoundError naming the file."""
    table = pd.read_csv(run_dir / PREDICTIONS_FILE)
    manifest = runs.split_manifest(run_dir)
    if manifest is None:
        table["path"] = table["index"].astype(str)
        return table
    names = pd.read_csv(manifest, usecols=lambda c: c in ("index", "key", "path"))
    column = "path" if "path" in names.columns else "key"
    return table.merge(names[["index", column]].rename(columns={column: "path"}), on="index", how="left")


def _run_dirs(out: Path, stage: Stage) -> tuple[list[Path], Path]:
    """(every run of the stage, the best one)."""
    kind = kind_of(out, stage)
    if isinstance(kind, CvKind):
        folds = kind.results()[0]
        return [Path(str(p)) for p in folds["run_dir"]], runs.best_fold_run(kind.run_dir)
    return [kind.run_dir], kind.run_dir


def stage_predictions(out: Path, stage: Stage, rounds: int = ROUNDS, seed: int = 0) -> RowPredictions | str:
    """The stage's pooled per-image results with their test-set interval, or why there are none."""
    dirs, best = _run_dirs(out, stage)
    missing = [str(d / PREDICTIONS_FILE) for d in dirs if not (d / PREDICTIONS_FILE).is_file()]
    if missing:
        return f"no per-image test predictions ({', '.join(missing)} missing: a run from before synthmed wrote them)"
    tables = {d: read_run_predictions(d).drop_duplicates("path").set_index("path") for d in dirs}
    common = sorted(set.intersection(*(set(t.index) for t in tables.values())))
    notes = []
    if any(len(t) != len(common) for t in tables.values()):
        notes.append(f"{stage.name}: its runs were tested on different images; the {len(common)} common ones are used")
    if not common:
        return "its runs share no test image"
    first = tables[dirs[0]]
    class_names = [c[len("prob_"):] for c in first.columns if c.startswith("prob_")]
    labels = first.loc[common, "label"].to_numpy()
    k = len(class_names)
    correct = np.zeros(len(common))
    confusion = np.zeros((k, k), dtype=np.int64)
    accuracies = []
    for table in tables.values():
        rows = table.loc[common]
        right = (rows["pred"].to_numpy() == rows["label"].to_numpy()).astype(float)
        correct += right / len(tables)
        accuracies.append(float(right.mean() * 100))
        np.add.at(confusion, (rows["label"].to_numpy(), rows["pred"].to_numpy()), 1)
    best_rows = tables[best if best in tables else dirs[0]].loc[common]
    result = RowPredictions(stage, common, labels, correct, (best_rows["pred"] == best_rows["label"]).to_numpy(),
                            confusion, class_names, accuracies, notes)
    result.interval = accuracy_interval(correct, rounds, seed)
    return result


@dataclass(frozen=True)
class Comparison:
    """One paired line of the report: `protocol` − REFERENCE_PROTOCOL for one group of row keys."""

    name: str
    others: dict
    result: PairedDifference | None
    reason: str | None = None

    def line(self) -> str:
        where = ", ".join(f"{k} {v}" for k, v in self.others.items())
        head = f"**{self.name}**" + (f" ({where})" if where else "")
        if self.result is None:
            return f"- {head}: not computed: {self.reason}"
        r = self.result
        mc = ("" if r.mcnemar_p is None else
              f"; McNemar's exact test on the best folds: p = {r.mcnemar_p:.3g} ({r.a_only} images right only "
              f"with {self.name.split(' − ')[0]}, {r.b_only} only with {REFERENCE_PROTOCOL})")
        return f"- {head} = {r.text()} (paired bootstrap over the same {r.n} test images, {r.rounds} rounds){mc}"


def paired_comparisons(rows: list[RowPredictions], rounds: int = ROUNDS, seed: int = 0) -> list[Comparison]:
    """Every protocol against TRTR within rows that share their other `row:` keys (e.g. the same arch)."""
    groups: dict[tuple, dict[str, RowPredictions]] = {}
    for row in rows:
        keys = dict(row.stage.row or {})
        protocol = keys.pop("protocol", None)
        if protocol is not None:
            groups.setdefault(tuple(sorted((k, str(v)) for k, v in keys.items())), {})[str(protocol)] = row
    found = []
    for others, by_protocol in groups.items():
        reference = by_protocol.get(REFERENCE_PROTOCOL)
        if reference is None:
            continue
        for protocol, row in by_protocol.items():
            if protocol == REFERENCE_PROTOCOL:
                continue
            name = f"{protocol} − {REFERENCE_PROTOCOL}"
            common = sorted(set(row.paths) & set(reference.paths))
            if not common:
                found.append(Comparison(name, dict(others), None, "the two rows share no test image"))
                continue
            a_at = {p: i for i, p in enumerate(row.paths)}
            b_at = {p: i for i, p in enumerate(reference.paths)}
            ia, ib = [a_at[p] for p in common], [b_at[p] for p in common]
            result = paired_difference(row.correct[ia], reference.correct[ib], rounds, seed,
                                       binary_a=row.best_correct[ia], binary_b=reference.best_correct[ib])
            found.append(Comparison(name, dict(others), result))
    return found
