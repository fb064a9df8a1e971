"""Reader study report: counts, detection metrics, kappas (Fleiss' against the textbook
example), consensus, taken-for-real ranking, notes and the files written."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from synthmed.reader_study import db
from synthmed.reader_study.cli import main
from synthmed.reader_study.create import create_study
from synthmed.reader_study.demo import make_demo_trees
from synthmed.reader_study.stats import fleiss_kappa


def test_fleiss_kappa_matches_the_textbook_example():
    # Fleiss (1971) as worked on Wikipedia "Fleiss' kappa": 10 subjects, 14 raters,
    # 5 categories; P-bar = 0.378, P-bar_e = 0.213, kappa = 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0],
             [2, 2, 8, 1, 1], [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2],
             [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.2099, abs=1e-4)
    assert fleiss_kappa([[3, 0], [0, 3], [3, 0]]) == pytest.approx(1.0)
    assert math.isnan(fleiss_kappa([[3, 0], [3, 0]]))
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([[2, 1], [1, 1]])


def _study(tmp_path: Path) -> tuple[Path, dict[int, tuple[str, int]]]:
    real, fake = make_demo_trees(tmp_path / "trees", per_class=3)
    study = create_study(real, fake, tmp_path / "study.sqlite", size=32, seed=0)
    with sqlite3.connect(study) as conn:
        rows = conn.execute("SELECT id, class_name, is_synthetic FROM images ORDER BY id")
        return study, {i: (c, s) for i, c, s in rows}


def _cast(study: Path, answers: dict[str, dict[int, str]], notes=None) -> None:
    with db.connection(study) as conn:
        for reader in answers:
            db.add_reader(conn, reader, "pass1234")
            for image_id, vote in answers[reader].items():
                db.cast_vote(conn, reader, image_id, vote, (notes or {}).get((reader, image_id),
                                                                             ""))


def _expected_counts(answers, truth, reader, cls, source):
    picked = [v for i, v in answers[reader].items()
              if truth[i][1] == (source == "synthetic") and cls in ("(all)", truth[i][0])]
    return [picked.count(v) for v in db.VOTES]


def test_report_numbers_equal_the_votes(tmp_path):
    study, truth = _study(tmp_path)
    ids = sorted(truth)
    rng = np.random.default_rng(0)
    answers = {"A": {i: "fake" if truth[i][1] else "real" for i in ids},   # perfect reader
               "B": {i: str(rng.choice(db.VOTES)) for i in ids}}
    synthetic_ids = [i for i in ids if truth[i][1]]
    answers["A"][synthetic_ids[0]] = "real"   # one fake fooled A ...
    answers["B"][synthetic_ids[0]] = "real"   # ... and B: top of the taken-for-real list
    answers["A"][ids[1]] = "unclear"
    _cast(study, answers, notes={("B", ids[2]): "ring artefact | odd skull"})
    out = tmp_path / "rep"
    assert main(["report", str(study), "--out", str(out)]) == 0

    counts = pd.read_csv(out / "answers.csv", keep_default_na=False)
    for row in counts.itertuples():
        assert [row.real, row.fake, row.unclear] == _expected_counts(
            answers, truth, row.reader, row._2, row.source)
    assert set(counts["class"]) == {"(all)", "MRI", "CT"} and len(counts) == 12

    detection = pd.read_csv(out / "detection.csv", keep_default_na=False)
    a = detection[(detection.reader == "A") & (detection["class"] == "(all)")].iloc[0]
    real_a = [answers["A"][i] for i in ids if not truth[i][1]]
    fake_a = [answers["A"][i] for i in ids if truth[i][1]]
    tp, fn = fake_a.count("fake"), fake_a.count("real")
    tn, fp = real_a.count("real"), real_a.count("fake")
    assert (a.tp, a.fn, a.tn, a.fp, a.unclear) == (tp, fn, tn, fp, 1)
    assert a.sensitivity == pytest.approx(tp / (tp + fn))
    assert a.specificity == pytest.approx(tn / (tn + fp))
    assert a.accuracy == pytest.approx((tp + tn) / (tp + tn + fp + fn))
    assert a.accuracy_unclear_wrong == pytest.approx((tp + tn) / 12)

    from sklearn.metrics import cohen_kappa_score
    agreement = pd.read_csv(out / "agreement.csv")
    kappa = cohen_kappa_score([answers["A"][i] for i in ids], [answers["B"][i] for i in ids])
    assert agreement.iloc[0].method == "Cohen"
    assert agreement.iloc[0].kappa == pytest.approx(kappa)

    consensus = pd.read_csv(out / "consensus.csv", keep_default_na=False)
    for row in consensus.itertuples():
        same = [i for i in ids if truth[i][1] == (row.source == "synthetic")
                and row._1 in ("(all)", truth[i][0])]
        assert row.all_real == sum(answers["A"][i] == answers["B"][i] == "real" for i in same)
        assert row.split == sum(answers["A"][i] != answers["B"][i] for i in same)

    fooled = pd.read_csv(out / "taken_for_real.csv")
    assert fooled.iloc[0].real_votes == 2 and fooled.iloc[0].answers == 2
    assert (fooled.real_votes >= 1).all() and list(fooled.real_votes) == sorted(
        fooled.real_votes, reverse=True)
    notes = pd.read_csv(out / "notes.csv")
    assert list(notes.note) == ["ring artefact | odd skull"]

    text = (out / "reader_study_report.md").read_text()
    assert "positive = synthetic" in text.lower() and "unclear answers are no call" in text.lower()
    assert "ring artefact \\| odd skull" in text and "Cohen's kappa" in text
    for png in ("answers_by_reader.png", "taken_for_real.png"):
        assert Image.open(out / png).size[0] > 100


def test_three_readers_use_fleiss_and_rerun_replaces_own_report(tmp_path):
    study, truth = _study(tmp_path)
    ids = sorted(truth)
    votes = {r: {i: ("fake" if truth[i][1] else "real") for i in ids} for r in "ABC"}
    votes["C"] = {i: "real" for i in ids}
    _cast(study, votes)
    out = tmp_path / "rep"
    assert main(["report", str(study), "--out", str(out)]) == 0
    assert main(["report", str(study), "--out", str(out)]) == 0  # its own folder: fine
    agreement = pd.read_csv(out / "agreement.csv")
    table = np.array([[sum(votes[r][i] == v for r in "ABC") for v in db.VOTES] for i in ids])
    assert agreement.iloc[0].method == "Fleiss"
    assert agreement.iloc[0].kappa == pytest.approx(fleiss_kappa(table))
    assert len(agreement) == 4  # all + 3 pairs
    consensus = pd.read_csv(out / "consensus.csv", keep_default_na=False)
    overall = consensus[consensus["class"] == "(all)"].set_index("source")
    assert overall.loc["real", "all_real"] == 6 and overall.loc["synthetic", "split"] == 6


def test_report_refuses_a_foreign_folder_and_a_non_study(tmp_path, capsys):
    study, _ = _study(tmp_path)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.md").write_text("keep me")
    assert main(["report", str(study), "--out", str(foreign)]) == 2
    assert "non-empty folder" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.md"]
    assert main(["report", str(foreign / "thesis.md")]) == 2
    assert "not a reader-study file" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "absent.sqlite")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "absent.sqlite").exists()


def test_report_without_votes_still_writes(tmp_path):
    study, _ = _study(tmp_path)
    assert main(["report", str(study)]) == 0
    text = (tmp_path / "study_report" / "reader_study_report.md").read_text()
    assert "Readers: none yet" in text
