"""Synthetic-only reader study (seed 001's protocol): create from --fake only, readers give their
background once, answer real / phony / unclear with notes, and the report's counts equal the
answers cast, beside the paper's per-specialist counts."""

from __future__ import annotations

import json
import math
import re
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from synthmed.reader_study import db
from synthmed.reader_study.cli import main
from synthmed.reader_study.demo import make_demo_trees
from synthmed.reader_study.paper_counts import SEED001, load_paper_counts
from synthmed.reader_study.report_synthetic_only import wilson_interval
from reader_study_helpers import PASSCODE, add_readers, client_for

ANSWER_OF_VOTE = {"real": "real", "fake": "phony", "unclear": "unclear"}


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    return make_demo_trees(tmp_path_factory.mktemp("so_trees"), per_class=4)


def _create(tmp_path, fake, *extra) -> Path:
    out = tmp_path / "study.sqlite"
    assert main(["create", "--mode", "synthetic-only", "--fake", str(fake), "--size", "32",
                 "--out", str(out), *extra]) == 0
    return out


def test_create_draws_only_synthetic_images_balanced_over_modalities(tmp_path, trees, capsys):
    _, fake = trees
    study = _create(tmp_path, fake, "--per-source", "6", "--readers", "dr.a,dr.b",
                    "--background", "dr.a:neuro:radiology:12:yes")
    assert "reader dr.a  passcode" in capsys.readouterr().out
    with sqlite3.connect(study) as conn:
        rows = conn.execute("SELECT is_synthetic, class_name FROM images").fetchall()
        mode = conn.execute("SELECT value FROM meta WHERE key='study_mode'").fetchone()[0]
        background = conn.execute("SELECT * FROM backgrounds").fetchall()
    assert mode == "synthetic-only"
    assert len(rows) == 6 and all(synthetic == 1 for synthetic, _ in rows)
    assert sorted(name for _, name in rows) == ["CT"] * 3 + ["MRI"] * 3
    # a colon inside the specialty survives: id split off the front, years/yes off the back
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in background] == [
        ("dr.a", "neuro:radiology", 12, "yes", "owner")]


def test_create_refuses_real_images_and_bad_backgrounds_before_building(tmp_path, trees, capsys):
    real, fake = trees
    out = tmp_path / "s.sqlite"
    base = ["create", "--mode", "synthetic-only", "--fake", str(fake), "--out", str(out)]
    assert main([*base, "--real", str(real)]) == 2
    assert "leave out --real" in capsys.readouterr().err
    assert main([*base, "--readers", "a", "--background", "b:ct:3:no"]) == 2
    assert "neither in --readers" in capsys.readouterr().err
    assert main([*base, "--readers", "a", "--background", "a:ct:many:no"]) == 2
    assert "whole number" in capsys.readouterr().err
    assert not out.exists()
    # the default mode still needs --real, and the old `--mode L|RGB` still means the colour
    assert main(["create", "--fake", str(fake), "--out", str(out)]) == 2
    assert main(["create", "--real", str(real), "--fake", str(fake), "--mode", "RGB",
                 "--size", "32", "--per-source", "2", "--out", str(out)]) == 0
    with sqlite3.connect(out) as conn:
        meta = dict(conn.execute("SELECT key, value FROM meta"))
    assert (meta["study_mode"], meta["mode"]) == ("real-vs-synthetic", "RGB")


def _form(html: str, name: str) -> str:
    return re.search(rf'name="{name}" value="([^"]*)"', html).group(1)


def _answer(client, reader: str, vote: str, note: str):
    page = client.get("/study", follow_redirects=True)
    assert page.status_code == 200 and "Phony" in page.text
    return client.post("/vote", data={"reader_id": reader, "image": _form(page.text, "image"),
                                      "position": _form(page.text, "position"), "vote": vote,
                                      "note": note}, follow_redirects=False)


def test_vote_and_report_counts_equal_the_answers_cast(tmp_path, trees):
    _, fake = trees
    study = _create(tmp_path, fake)
    add_readers(study, "r1", "r2")
    cast: dict[str, list[str]] = {"r1": ["real", "fake", "fake", "unclear", "real"],
                                  "r2": ["fake"] * 3 + ["real"] * 5}
    for reader, answers in cast.items():
        client = client_for(study)
        client.post("/login", data={"reader_id": reader, "passcode": PASSCODE})
        # background first: the study page and /vote wait for it
        assert client.get("/study", follow_redirects=False).headers["location"] == "/background"
        early = client.post("/vote", data={"reader_id": reader, "image": "a" * 24,
                                           "position": "1", "vote": "real", "note": ""})
        assert early.status_code == 403 and "background" in early.text
        bad = client.post("/background", data={"specialty": "CT", "years": "99", "genai": "no"})
        assert bad.status_code == 400 and "0..70" in bad.text
        client.post("/background", data={"specialty": f"<i>{reader}</i> radiology",
                                         "years": "7", "genai": "yes"})
        for i, vote in enumerate(answers):
            assert _answer(client, reader, vote, f"=note {i} <script>").status_code == 303

    assert main(["add-readers", str(study), "--readers", "idle", "--background",
                 "idle:ct:3:yes"]) == 0
    out = tmp_path / "report"
    assert main(["report", str(study), "--out", str(out), "--paper", "seed001"]) == 0
    counts = pd.read_csv(out / "counts.csv")
    overall = counts[counts.modality == "all"].set_index("reader")
    for reader, answers in cast.items():
        for vote, answer in ANSWER_OF_VOTE.items():
            assert overall.loc[reader, answer] == answers.count(vote)
        assert overall.loc[reader, "total"] == len(answers)
    # per modality rows add up to the overall row
    per_modality = counts[counts.modality != "all"].groupby("reader")[["real", "phony"]].sum()
    assert per_modality.loc["r2", "real"] == 5 and per_modality.loc["r1", "phony"] == 2
    pooled = pd.read_csv(out / "pooled.csv").set_index("modality").loc["all"]
    assert (pooled.real, pooled.phony, pooled.unclear, pooled.total) == (7, 5, 1, 13)
    assert (pooled.ci95_low, pooled.ci95_high) == pytest.approx(wilson_interval(7, 13))

    comparison = pd.read_csv(out / "paper_comparison.csv").set_index(["modality", "answer"])
    assert comparison.loc[("all", "real"), "paper A"] == 14
    assert comparison.loc[("mri", "real"), "paper B"] == 10
    assert comparison.loc[("ct", "phony"), "paper A"] == 17
    assert math.isnan(comparison.loc[("ct", "real"), "paper A"])  # the paper does not say
    assert comparison.loc[("all", "phony"), "ours r2"] == 3

    text = (out / "reader_study_report.md").read_text()
    assert "synthetic-only" in text and "| r1 | &lt;i&gt;r1&lt;/i&gt; radiology, 7 years" in text
    assert "idle (ct, 3 years, knows generative AI; 0 answers)" in text
    assert "<script>" not in text and "<i>" not in text
    assert "| all | real | 14 | 12 | 2 | 5 |" in text
    assert "ct | real | not stated |" in text and "sum to 37" in text
    notes = pd.read_csv(out / "notes.csv", keep_default_na=False)
    assert len(notes) == 13 and notes.note.str.startswith("'=note").all()


def test_owner_background_skips_the_question_and_is_asked_only_once(tmp_path, trees):
    _, fake = trees
    study = _create(tmp_path, fake, "--per-source", "2")
    add_readers(study, "owner-set", "self")
    assert main(["add-readers", str(study), "--background", "owner-set:neuroradiology:20:no"]) == 0
    client = client_for(study)
    client.post("/login", data={"reader_id": "owner-set", "passcode": PASSCODE})
    assert client.get("/study", follow_redirects=False).headers["location"].startswith("/study/")
    # a reader cannot overwrite the owner's entry
    client.post("/background", data={"specialty": "other", "years": "1", "genai": "yes"})
    with db.connection(study) as conn:
        row = conn.execute("SELECT specialty, given_by FROM backgrounds WHERE reader_id = "
                           "'owner-set'").fetchone()
    assert tuple(row) == ("neuroradiology", "owner")


def test_foreign_origin_cannot_post_a_background(tmp_path, trees):
    _, fake = trees
    study = _create(tmp_path, fake, "--per-source", "2")
    add_readers(study, "r1")
    client = client_for(study)
    client.post("/login", data={"reader_id": "r1", "passcode": PASSCODE})
    refused = client.post("/background", data={"specialty": "x", "years": "1", "genai": "no"},
                          headers={"Origin": "http://evil.example"})
    assert refused.status_code == 403
    assert client.get("/study", follow_redirects=False).headers["location"] == "/background"


def test_real_vs_synthetic_pages_are_unchanged(tmp_path, trees):
    """The default mode keeps Real / Fake / Unclear and never asks for a background."""
    real, fake = trees
    study = tmp_path / "rvs.sqlite"
    assert main(["create", "--real", str(real), "--fake", str(fake), "--size", "32",
                 "--per-source", "2", "--out", str(study)]) == 0
    add_readers(study, "r1")
    client = client_for(study)
    client.post("/login", data={"reader_id": "r1", "passcode": PASSCODE})
    page = client.get("/study", follow_redirects=True)
    assert "/study/" in str(page.url) and "Fake" in page.text and "Phony" not in page.text
    assert main(["report", str(study), "--out", str(tmp_path / "rep"), "--paper",
                 "seed001"]) == 2  # the paper's counts belong to a synthetic-only study


def test_paper_table_from_a_file_and_wilson_interval(tmp_path):
    table = {"source": "my paper", "specialists": {"X": {"counts": {"all": {"real": 3}}}}}
    path = tmp_path / "paper.json"
    path.write_text(json.dumps(table))
    assert load_paper_counts(str(path)) == table
    path.write_text(json.dumps({"specialists": {"X": {"counts": {"all": {"genuine": 3}}}}}))
    with pytest.raises(ValueError, match="unknown answers"):
        load_paper_counts(str(path))
    assert load_paper_counts("seed001") is SEED001
    # Wilson score interval for 14 of 40 (seed 001's specialist A), by its closed form
    p, n, z = 14 / 40, 40, 1.959963984540054
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson_interval(14, 40) == pytest.approx((centre - half, centre + half))
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
