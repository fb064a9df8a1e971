"""The same pipeline and seed into two `--out` folders gives byte-identical synthetic PNGs and equal
TSTR metrics (issue 14: the PNGs embedded the LDM checkpoint file's sha256, whose bytes name the
run's folders, so the file-hash fold units and the TSTR folds differed; measured TSTR train/loss
1.1416 vs 1.1056). Now they carry the sha256 of the checkpoint's weights (datamodules/weights_digest.py).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from synthmed.pipeline.runner import main

REPO = Path(__file__).resolve().parents[1]
STAGES = ("real_train", "real_test", "autoencoder", "ldm", "synthetic", "tstr")  # what TSTR reads, in order


def fold_metrics(out: Path) -> list[dict[str, str]]:
    with open(out / "tstr" / "cv" / "cv_summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    return [{k: v for k, v in row.items() if "dir" not in k and not v.startswith(str(out))} for row in rows]


@pytest.mark.slow
def test_quickstart_smoke_in_two_folders_writes_the_same_pngs_and_tstr_numbers(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    outs = [tmp_path / "first", tmp_path / "second" / "deeper"]  # other path lengths too
    for out in outs:
        for stage in STAGES:
            assert main(["experiments/quickstart/pipeline.yaml", "--scale", "smoke", "--out", str(out),
                         "--task", stage]) == 0, stage
    pngs = sorted(p.relative_to(outs[0]) for p in (outs[0] / "synthetic" / "images").rglob("*.png"))
    assert len(pngs) == 12  # 4 per class at smoke scale
    assert [(outs[0] / p).read_bytes() for p in pngs] == [(outs[1] / p).read_bytes() for p in pngs]
    first, second = fold_metrics(outs[0]), fold_metrics(outs[1])
    assert [r["fold"] for r in first][:2] == ["0", "1"] and "train/loss" in first[0]  # then summary rows
    assert first == second
