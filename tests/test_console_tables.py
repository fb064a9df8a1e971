"""Console tables fit 120 columns (issue 16 item 2): wide columns stay in the files (report.md, cv_summary.md,
sweep_summary.md, evaluation.md); what a command prints is a chosen subset, long cells wrapped.

`reproduce`'s closing table is checked in tests/test_reproduce.py (test_rerun_skips_every_stage), evaluate's in
tests/test_metric_results.py; here the renderer itself, cv's summary and sweep-summary.
"""

from __future__ import annotations

import json
from pathlib import Path

from console_table_helpers import read_console_table

from synthmed import cv
from synthmed.console_table import CONSOLE_WIDTH, TextTable, console_table
from synthmed.sweep import summary as sweep_summary
from test_cv_fold_checkpoints import CONFIG, finished_folds


def widest(text: str) -> int:
    """The widest line of the table(s) in `text` (log lines around them may be longer)."""
    return max(len(line) for line in text.splitlines() if line.startswith("|"))


def test_long_cells_wrap_within_120_columns_and_read_back_whole():
    reason = "unreliable: 12 images < 512 feature dimensions (n_real 36, n_fake 12): read KID " * 3
    name = "`near_copy_fraction[classifier:resnet18@cc34250d]`"
    text = console_table(["metric", "value"], [[name, reason.strip()], ["`kid`", "0.1 [0.0, 0.2]"]], wrap=["value"])
    assert widest(text) <= CONSOLE_WIDTH and len(text.splitlines()) > 4  # the reason wrapped onto more lines
    assert read_console_table(text) == [["metric", "value"], [name, reason.strip()], ["`kid`", "0.1 [0.0, 0.2]"]]
    assert f"| {name} |" in text  # a column that may not wrap is kept whole
    wide = TextTable([f"column {i}" for i in range(12)], [[f"{i}.1234 ± 0.0123" for i in range(12)]])
    assert len(wide.markdown().splitlines()[0]) > CONSOLE_WIDTH and widest(wide.console()) <= CONSOLE_WIDTH
    assert wide.select(["column 3", "column 1", "absent"]).head == ["column 3", "column 1"]


def test_cv_prints_a_summary_within_120_columns_and_keeps_every_metric_in_the_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cv.yaml").write_text(CONFIG)
    cv_dir = Path("logs/cvk/c")
    finished_folds(cv_dir)
    metrics = {"train/loss": 1.1, "val/loss": 0.5, "test/loss": 1.2, "train/acc": 0.9, "val/acc": 0.8,
               "test/acc": 0.7, "test/precision": 0.6, "test/recall": 0.65, "test/f1_macro": 0.62}
    for fold in range(3):
        path = cv_dir / f"fold_{fold}" / "metrics.json"
        path.write_text(json.dumps({**metrics, "val/loss": 0.5 + fold / 10}))
    assert cv.main(["--config", str(tmp_path / "cv.yaml"), "--folds", "3", "--name", "c"]) == 0
    printed = capsys.readouterr().out
    assert widest(printed) <= CONSOLE_WIDTH
    rows = read_console_table(printed)
    assert rows[0] == list(cv.CONSOLE_COLUMNS) and rows[-1][0] == "mean ± sd" and rows[-1][4] == "0.7000 ± 0.0000"
    assert len((cv_dir / "cv_summary.md").read_text().splitlines()[2].split("|")) == 12  # fold + 9 metrics


def test_sweep_summary_prints_within_120_columns(tmp_path, capsys):
    for arch in ("resnet18", "mobilenet_v2_with_a_long_name"):
        for seed in (0, 1):
            run = tmp_path / f"arch={arch}__seed={seed}"
            run.mkdir()
            (run / "overrides.json").write_text(json.dumps({"name": run.name, "overrides": {"model.arch": arch}}))
            (run / "metrics.json").write_text(json.dumps({k: 0.5 + seed / 10 for k in (
                "train/loss", "val/loss", "test/loss", "train/acc", "val/acc", "test/acc", "test/precision",
                "test/recall", "test/f1_macro")}))
    assert sweep_summary.main([str(tmp_path), "--by", "model.arch"]) == 0
    printed = capsys.readouterr().out
    assert widest(printed) <= CONSOLE_WIDTH
    rows = read_console_table(printed)
    assert rows[0][:2] == ["model.arch", "n"] and sorted(rows[0][2:]) == sorted(sweep_summary.CONSOLE_METRICS)
    assert {r[0] for r in rows[1:]} == {"resnet18", "mobilenet_v2_with_a_long_name"}
    assert "test/precision" in (tmp_path / "sweep_summary.md").read_text()  # every metric in the file
