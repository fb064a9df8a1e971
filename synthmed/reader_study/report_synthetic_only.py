"""``report`` for a synthetic-only study (seed 001's protocol): what readers called the images.

Every image is synthetic, so there is no accuracy to compute; the numbers are those the paper
gives ("Specialist A determined that 14 images were genuine out of the 40 images ..."): per
reader and modality the answers real / phony / unclear, the images every reader called real
("Consensus among specialists"), and the notes (the paper's Table I). Added here: each
reader's background, the pooled fraction of answers that were "real" with a 95 % Wilson
interval, and, with ``--paper``, the paper's per-specialist counts beside ours.

Files written into the report folder:

    reader_study_report.md   everything below in one readable page
    counts.csv               per reader and modality: real, phony, unclear, fraction real + CI
    pooled.csv               the same over all readers' answers
    consensus.csv            per modality: images every reader called real / phony / unclear
    paper_comparison.csv     (with --paper) paper's counts and ours, one row per cell
    notes.csv, votes.csv     the readers' notes; every answer

Texts typed by readers are escaped in the Markdown page and made formula-safe in the CSVs,
as in the real-vs-synthetic report (``escaping.py``).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from . import db, stats
from .background import all_backgrounds
from .escaping import csv_safe, md_text
from .paper_counts import ANSWERS
from .report_common import REPORT_NAME, _prepare_out, md_table

ALL = "all"
# the stored vote of each answer of the synthetic-only page (pages.SYNTHETIC_ONLY_LABELS)
VOTE_TO_ANSWER = {"real": "real", "fake": "phony", "unclear": "unclear"}


def wilson_interval(successes: int, total: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (scipy's ``binomtest``); NaNs for 0."""
    if total == 0:
        return math.nan, math.nan
    from scipy.stats import binomtest

    ci = binomtest(successes, total).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def modality_of(class_name: str) -> str:
    """Class folder name as a modality key: lower case, '(flat)' for a flat folder."""
    return class_name.lower() if class_name else "(flat)"


def answers_frame(votes: pd.DataFrame) -> pd.DataFrame:
    """Votes with ``answer`` (real / phony / unclear) and ``modality`` columns."""
    return votes.assign(answer=votes.vote.map(VOTE_TO_ANSWER),
                        modality=votes.class_name.fillna("").map(modality_of))


def _count_row(part: pd.DataFrame) -> dict:
    row = {answer: int((part.answer == answer).sum()) for answer in ANSWERS}
    row["total"] = len(part)
    row["fraction_real"] = row["real"] / row["total"] if row["total"] else math.nan
    row["ci95_low"], row["ci95_high"] = wilson_interval(row["real"], row["total"])
    return row


def _groups(frame: pd.DataFrame):
    yield ALL, frame
    for modality in sorted(frame.modality.unique()) if frame.modality.nunique() > 1 else []:
        yield modality, frame[frame.modality == modality]


def reader_counts(answers: pd.DataFrame, backgrounds: dict) -> pd.DataFrame:
    """Per reader (with background) and modality: real / phony / unclear, fraction real, CI."""
    rows = []
    for reader in sorted(answers.reader.unique()):
        mine = answers[answers.reader == reader]
        described = backgrounds[reader].describe() if reader in backgrounds else "not given"
        for modality, part in _groups(mine):
            rows.append({"reader": reader, "background": described, "modality": modality,
                         **_count_row(part)})
    return pd.DataFrame(rows, columns=["reader", "background", "modality", *ANSWERS, "total",
                                       "fraction_real", "ci95_low", "ci95_high"])


def pooled_counts(answers: pd.DataFrame) -> pd.DataFrame:
    """All readers' answers together, overall and per modality."""
    return pd.DataFrame([{"modality": m, **_count_row(part)} for m, part in _groups(answers)],
                        columns=["modality", *ANSWERS, "total", "fraction_real", "ci95_low",
                                 "ci95_high"])


def consensus_counts(answers: pd.DataFrame) -> pd.DataFrame:
    """Per modality: images every reader answered, and how many all of them called real,
    phony or unclear (seed 001: "only three were identified as authentic by both")."""
    columns = ["modality", "n_readers", "n_images", *[f"all_{a}" for a in ANSWERS], "split"]
    wide = stats.fully_rated(answers.assign(vote=answers.answer))
    if not len(wide):
        return pd.DataFrame(columns=columns)
    outcome = wide.apply(lambda row: row.iloc[0] if row.nunique() == 1 else "split", axis=1)
    modality = answers.drop_duplicates("image_id").set_index("image_id").modality
    frame = pd.DataFrame({"outcome": outcome, "modality": modality.loc[wide.index]})
    rows = []
    for name, part in _groups(frame):
        rows.append({"modality": name, "n_readers": wide.shape[1], "n_images": len(part),
                     **{f"all_{a}": int((part.outcome == a).sum()) for a in ANSWERS},
                     "split": int((part.outcome == "split").sum())})
    return pd.DataFrame(rows, columns=columns)


def paper_comparison(paper: dict, counts: pd.DataFrame) -> pd.DataFrame:
    """One row per modality and answer: the paper's count per specialist, then ours per reader.

    Paper cells the text does not state are empty ('not stated' in the Markdown page).
    """
    specialists = paper["specialists"]
    modalities = [ALL] + sorted({m for entry in specialists.values()
                                 for m in entry.get("counts", {}) if m != ALL}
                                | set(counts.modality) - {ALL})
    ours = {(r.reader, r.modality): r for r in counts.itertuples(index=False)}
    readers = sorted(counts.reader.unique())
    rows = []
    for modality in modalities:
        for answer in (*ANSWERS, "total"):
            row = {"modality": modality, "answer": answer}
            for name, entry in specialists.items():
                cell = entry.get("counts", {}).get(modality, {})
                if answer == "total":
                    values = [cell.get(a) for a in ANSWERS]
                    shown = paper.get("images_shown", {}).get(modality)
                    value = shown if shown is not None else (
                        sum(values) if values and None not in values else None)
                else:
                    value = cell.get(answer)
                row[f"paper {name}"] = value
            for reader in readers:
                found = ours.get((reader, modality))
                row[f"ours {reader}"] = None if found is None else int(getattr(found, answer))
            rows.append(row)
    return pd.DataFrame(rows)


def _fraction(row) -> str:
    if row["total"] == 0:
        return "n/a"
    return (f"{row['fraction_real']:.2f} [{row['ci95_low']:.2f}, {row['ci95_high']:.2f}]")


def _with_ci_text(frame: pd.DataFrame) -> pd.DataFrame:
    shown = frame.drop(columns=["fraction_real", "ci95_low", "ci95_high"])
    shown["fraction real [95 % CI]"] = [_fraction(r) for r in frame.to_dict("records")]
    return shown


def _not_stated(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.astype(object).where(frame.notna(), "not stated")
    for column in out.columns:
        if column.startswith("ours "):
            out[column] = frame[column].astype(object).where(frame[column].notna(), "-")
    return out.map(lambda v: int(v) if isinstance(v, float) and v.is_integer() else v)


def _readers_line(reader_ids: list[str], backgrounds: dict, answers: pd.DataFrame) -> str:
    """Every reader of the study, with background and number of answers (even 0)."""
    described = []
    for reader in reader_ids:
        background = (backgrounds[reader].describe() if reader in backgrounds
                      else "background not given")
        n_answers = int((answers.reader == reader).sum())
        described.append(md_text(f"{reader} ({background}; {n_answers} answers)"))
    return "; ".join(described) or "none yet"


def write_synthetic_only_report(study: Path, out: Path | None, paper: dict | None) -> Path:
    """Compute the tables of a synthetic-only study and write the report folder."""
    with db.connection(study, readonly=True) as conn:
        meta = db.read_meta(conn)
        images, votes = stats.load_votes(conn)
        backgrounds = all_backgrounds(conn)
        reader_ids = [r[0] for r in conn.execute("SELECT reader_id FROM readers ORDER BY "
                                                 "reader_id")]
        changed = conn.execute("SELECT COUNT(*) FROM vote_history").fetchone()[0]
    out = _prepare_out(study, out)
    answers = answers_frame(votes)
    counts = reader_counts(answers, backgrounds)
    pooled = pooled_counts(answers)
    agreed = consensus_counts(answers)
    noted = (answers[answers.note.fillna("").str.len() > 0]
             .sort_values(["reader", "voted_at"])[["reader", "modality", "answer", "note"]]
             .reset_index(drop=True))
    comparison = paper_comparison(paper, counts) if paper else None
    (out / "paper_comparison.csv").unlink(missing_ok=True)
    tables = [(counts, "counts"), (pooled, "pooled"), (agreed, "consensus"), (noted, "notes"),
              (answers[["reader", "modality", "public_id", "source_path", "answer", "note",
                        "voted_at"]], "votes")]
    if comparison is not None:
        tables.append((comparison, "paper_comparison"))
    for frame, name in tables:
        csv_safe(frame).to_csv(out / f"{name}.csv", index=False)
    per_modality = ", ".join(f"{md_text(modality_of(c))}: {n}"
                             for c, n in images.groupby("class_name").size().items())
    parts = [
        "# Reader study report (synthetic-only, seed 001's protocol)\n",
        f"Study file {md_text(study.name)}, created {meta.get('created_at', '?')}, seed "
        f"{meta.get('seed')}: {len(images)} synthetic images ({per_modality}), re-encoded to "
        f"{meta.get('size')} x {meta.get('size')} {meta.get('mode')} PNG. Every image shown "
        "is synthetic (\"Every image we showed the specialists was artificial\"); readers "
        "answered real / phony / unclear with optional notes. Changed answers (kept in "
        f"vote_history): {changed}.\n",
        f"Readers: {_readers_line(reader_ids, backgrounds, answers)}.\n",
        "## Answers per reader\n",
        "Fraction real = real answers / all answers (unclear included in the denominator, as "
        "in \"14 images were genuine out of the 40\"), with a 95 % Wilson score interval "
        "(scipy `binomtest`).\n",
        md_table(_with_ci_text(counts)),
        "## All readers pooled\n",
        "The interval treats every answer as independent; answers of different readers on "
        "the same image are not, so it is narrower than a per-image analysis would give.\n",
        md_table(_with_ci_text(pooled)),
        "## Consensus\n",
        "Images every reader answered, by what all of them said (`split`: they disagreed). "
        "Seed 001: \"Out of the twenty CT scans, only three were identified as authentic by "
        "both specialists. In a similar vein, both specialists certified five MRI images as "
        "authentic.\"\n",
        md_table(agreed),
    ]
    if comparison is not None:
        parts += [
            f"## Paper's counts beside ours ({md_text(paper.get('source', 'paper'))})\n",
            "`paper X`: the count the paper gives for its specialist X (*not stated*: the text "
            "gives no number); `ours R`: the count of this study's reader R (`-`: no answer "
            "in that modality). Paper specialists and our readers are not the same people, "
            "so columns are set side by side, not matched.\n",
            md_table(_not_stated(comparison)),
        ]
        if paper.get("consensus_real"):
            text = ", ".join(f"{md_text(m)} {n}" for m, n in paper["consensus_real"].items())
            parts.append(f"Paper, images called real by every specialist: {text}.\n")
        notes_of_paper = [md_text(f"{name}: {d}") for name, entry in paper["specialists"].items()
                          for d in entry.get("derived", [])]
        if notes_of_paper:
            parts.append("Derived paper cells: " + "; ".join(notes_of_paper) + ".\n")
        if paper.get("inconsistencies"):
            parts.append("The paper's text is inconsistent: "
                         + " ".join(md_text(t) for t in paper["inconsistencies"]) + "\n")
    parts += ["## Notes (seed 001, Table I)\n", md_table(noted)]
    (out / REPORT_NAME).write_text("\n".join(parts), encoding="utf-8")
    return out
