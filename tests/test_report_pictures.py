"""report.md's classifier intervals, paired comparisons and pictures (synthmed/pipeline/report*.py).

The fast tests build cv stage folders by hand (cv_summary.csv, split_manifest.csv, test_predictions.csv
with a known answer). `check_quickstart_report` is called by tests/test_reproduce_smokes.py's quickstart
smoke run, so the end-to-end check costs no second pipeline run.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from lightning_modules.test_predictions import PerImagePredictions, write_predictions_csv
from synthmed.pipeline import report_figures as figures
from synthmed.pipeline.report_classifiers import paired_comparisons, stage_predictions
from synthmed.pipeline.spec import Stage
from test_classifier import fitted  # noqa: F401  (the module-scoped fit/test of a tiny resnet18)

N = 60
CLASSES = ["a", "b"]


def _fold(run: Path, labels: np.ndarray, preds: np.ndarray, index_offset: int, val_loss: float) -> dict:
    """One fold's run directory: its manifest (test rows after index_offset train rows) and its predictions."""
    run.mkdir(parents=True)
    paths = [f"/data/test/{CLASSES[y]}/img_{i:03d}.png" for i, y in enumerate(labels)]
    pd.DataFrame({"index": index_offset + np.arange(N), "key": [p[11:] for p in paths], "path": paths,
                  "split": "test"}).to_csv(run / "split_manifest.csv", index=False)
    probs = np.eye(2)[preds]
    write_predictions_csv(str(run / "test_predictions.csv"),
                          {"index": torch.arange(N) + index_offset, "label": torch.as_tensor(labels),
                           "pred": torch.as_tensor(preds), "probs": torch.as_tensor(probs)}, CLASSES)
    return {"fold": run.name[-1], "run_dir": str(run), "val/loss": val_loss, "test/acc": float((labels == preds).mean())}


def _cv_stage(out: Path, name: str, protocol: str, labels, fold_preds, index_offset: int) -> Stage:
    folds = [_fold(out / name / "cv" / f"fold_{k}", labels, preds, index_offset, val_loss=1.0 - 0.1 * k)
             for k, preds in enumerate(fold_preds)]
    pd.DataFrame(folds).to_csv(out / name / "cv" / "cv_summary.csv", index=False)
    return Stage(name=name, verb="cv", config=[], args=[], row={"protocol": protocol, "arch": "resnet18"})


@pytest.fixture
def two_protocols(tmp_path):
    """TRTR right on all 60 test images in both folds; TSTR wrong on the first 20 in fold 0, on none in fold 1.
    The rows' manifests number the same images differently (other training rows before them)."""
    labels = np.arange(N) % 2
    wrong20 = labels.copy()
    wrong20[:20] = 1 - labels[:20]
    trtr = _cv_stage(tmp_path, "trtr", "TRTR", labels, [labels, labels], index_offset=100)
    tstr = _cv_stage(tmp_path, "tstr", "TSTR", labels, [wrong20, labels], index_offset=7)
    return tmp_path, tstr, trtr


def test_folds_are_pooled_by_averaging_per_image_correctness(two_protocols):
    out, tstr, trtr = two_protocols
    rows = stage_predictions(out, tstr), stage_predictions(out, trtr)
    assert rows[0].run_accuracies == pytest.approx([100 * 40 / 60, 100.0])
    assert rows[0].interval.value == pytest.approx(100 * 50 / 60)  # mean of the fold accuracies
    assert rows[0].interval.low < rows[0].interval.value < rows[0].interval.high
    assert rows[0].best_correct.all()  # fold 1 has the lower val/loss, and it is right everywhere
    assert rows[0].confusion.sum() == 2 * N and np.trace(rows[0].confusion) == N + 40
    assert rows[1].interval.text() == "100.00 [100.00, 100.00]"


def test_tstr_minus_trtr_on_the_same_images(two_protocols):
    out, tstr, trtr = two_protocols
    (comparison,) = paired_comparisons([stage_predictions(out, tstr), stage_predictions(out, trtr)])
    r = comparison.result
    assert comparison.name == "TSTR − TRTR" and r.n == N  # joined on path although the indices differ
    assert r.difference == pytest.approx(-100 * 10 / 60)  # 20 images at 0.5 vs 1: -10 of 60
    assert r.low < r.difference < r.high < 0
    assert (r.a_only, r.b_only, r.mcnemar_p) == (0, 0, 1.0)  # best folds agree everywhere
    assert comparison.line().startswith("- **TSTR − TRTR** (arch resnet18) = −16.7 points [95 % CI −")


def test_a_stage_without_predictions_says_why(two_protocols):
    out, tstr, _ = two_protocols
    (out / "tstr" / "cv" / "fold_0" / "test_predictions.csv").unlink()
    assert "test_predictions.csv missing" in stage_predictions(out, tstr)


def test_test_predictions_deduplicate_the_padding_of_a_distributed_sampler():
    metric = PerImagePredictions()
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    metric.update(logits, torch.tensor([0, 1, 1]), torch.tensor([5, 3, 5]))  # index 5 repeated (padding)
    values = metric.compute()
    assert values["index"].tolist() == [3, 5] and values["label"].tolist() == [1, 0]
    assert values["pred"].tolist() == [1, 0] and values["probs"].shape == (2, 2)


def test_pictures_draw_from_the_rows_and_the_audit(two_protocols, tmp_path):
    out, tstr, trtr = two_protocols
    rows = [stage_predictions(out, tstr), stage_predictions(out, trtr)]
    for png in (figures.accuracy_bars(rows, tmp_path / "bars.png"),
                figures.confusion_matrices(rows, tmp_path / "confusion.png")):
        assert Image.open(png).size[0] > 300
    audit = {"representations": {"pixel": {"fake_distances": [0.1] * 5, "heldout_distances": list(np.linspace(1, 2, 50))}}}
    assert figures.distance_histograms(audit, 0.025, tmp_path / "hist.png").is_file()
    assert figures.distance_histograms({"representations": {}}, 0.025, tmp_path / "none.png") is None


def check_quickstart_report(report: str, out: Path) -> None:
    """What issue 12 asks of the quickstart's report.md: per-protocol test-set intervals, the paired TSTR − TRTR
    line and links to existing pictures (called from tests/test_reproduce_smokes.py::test_quickstart_smoke)."""
    for protocol in ("TSTR", "TRTR", "TR+S"):
        (line,) = [l for l in report.splitlines() if l.startswith(f"| {protocol} | resnet18 | ours")]
        cell = line.strip().strip("|").split("|")[-1].strip()
        value, low, high, n = map(float, re.fullmatch(r"([\d.]+) \[([\d.]+), ([\d.]+)\] \(n (\d+)\)", cell).groups())
        assert 0 <= low <= value <= high <= 100 and n == 36  # 12 test phantoms per class at smoke scale
    paired = re.search(r"\*\*TSTR − TRTR\*\* \(arch resnet18\) = [−+][\d.]+ points \[95 % CI [−+][\d.]+, [−+][\d.]+\] "
                       r"\(paired bootstrap over the same 36 test images, 2000 rounds\); McNemar's exact test on the "
                       r"best folds: p = [\d.e-]+", report)
    assert paired, "report.md lacks the paired TSTR − TRTR line"
    assert "**TR+S − TRTR**" in report
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", report)
    for expected in ("report_test_accuracy.png", "report_confusion.png", "report_evaluate_distances.png",
                     "report_evaluate_real_vs_synthetic.png", "evaluate/closest_pairs_pixel-highpass.png"):
        assert expected in links, f"report.md does not link {expected}"
    for link in links:
        assert (out / link).is_file() and Image.open(out / link).size[0] > 100, f"{link} is missing or empty"


def test_a_classifier_test_run_writes_one_prediction_row_per_test_image(fitted):
    from test_classifier import CLASS_NAMES

    trainer, model = fitted["trainer"], fitted["model"]
    table = pd.read_csv(Path(trainer.log_dir) / "test_predictions.csv")
    assert list(table.columns) == ["index", "label", "pred", *[f"prob_{c}" for c in CLASS_NAMES]]
    assert table["index"].tolist() == list(range(12)) and table["label"].tolist() == [0] * 5 + [1] * 3 + [2] * 4
    probs = table[[f"prob_{c}" for c in CLASS_NAMES]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5) and (probs.argmax(axis=1) == table["pred"]).all()
    predicted = torch.cat([o["preds"] for o in trainer.predict(model, fitted["loader"])])
    assert table["pred"].tolist() == predicted.tolist()
    assert (table["pred"] == table["label"]).mean() == pytest.approx(fitted["test"]["test/acc"])
