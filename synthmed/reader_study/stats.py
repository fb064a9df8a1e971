"""Numbers of the reader-study report, computed from a table of votes.

The votes table (``load_votes``) has one row per reader and image with the columns
``reader, image_id, public_id, source ('real'|'synthetic'), class_name, source_path, vote,
note``. Detection metrics treat spotting a synthetic image as the task:

* positive = synthetic image; a "fake" answer is a positive call, "real" a negative one;
* sensitivity = synthetic images called fake / synthetic images called real or fake;
* specificity = real images called real / real images called real or fake;
* accuracy    = correct calls / all real-or-fake calls;
* "unclear" answers are left out of these three (they are no call) and counted separately;
  ``accuracy_unclear_wrong`` counts them as wrong answers instead.
"""

from __future__ import annotations

import math
import sqlite3

import numpy as np
import pandas as pd

from .db import VOTES

SOURCES = ("real", "synthetic")
ALL = "(all)"


def load_votes(conn: sqlite3.Connection) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(images, votes) as DataFrames; images without the PNG bytes."""
    images = pd.read_sql_query(
        "SELECT id AS image_id, public_id, CASE is_synthetic WHEN 1 THEN 'synthetic' "
        "ELSE 'real' END AS source, class_name, source_path FROM images ORDER BY id", conn)
    votes = pd.read_sql_query(
        "SELECT v.reader_id AS reader, v.image_id, v.vote, v.note, v.voted_at FROM votes v "
        "ORDER BY v.reader_id, v.image_id", conn)
    votes = votes.merge(images, on="image_id", how="left")
    return images, votes


def answer_counts(votes: pd.DataFrame) -> pd.DataFrame:
    """Per reader, class and source the number of real / fake / unclear answers (Fig. 5).

    Rows for every class plus an ``(all)`` class row per reader and source.
    """
    both = pd.concat([votes, votes.assign(class_name=ALL)]) if len(votes) else votes
    table = (both.groupby(["reader", "class_name", "source", "vote"]).size()
             .unstack("vote", fill_value=0).reindex(columns=list(VOTES), fill_value=0))
    table["total"] = table.sum(axis=1)
    return table.reset_index().rename(columns={"class_name": "class"})


def _rates(group: pd.DataFrame) -> dict[str, float | int]:
    synthetic, real = group[group.source == "synthetic"], group[group.source == "real"]
    tp = int((synthetic.vote == "fake").sum())
    fn = int((synthetic.vote == "real").sum())
    tn = int((real.vote == "real").sum())
    fp = int((real.vote == "fake").sum())
    unclear = int((group.vote == "unclear").sum())
    ratio = lambda a, b: a / b if b else math.nan
    return {"n_answers": len(group), "tp": tp, "fn": fn, "tn": tn, "fp": fp,
            "unclear": unclear,
            "accuracy": ratio(tp + tn, tp + tn + fp + fn),
            "sensitivity": ratio(tp, tp + fn),
            "specificity": ratio(tn, tn + fp),
            "accuracy_unclear_wrong": ratio(tp + tn, len(group)),
            "unclear_rate": ratio(unclear, len(group))}


def detection_metrics(votes: pd.DataFrame) -> pd.DataFrame:
    """Accuracy, sensitivity, specificity per reader (and pooled), overall and per class."""
    rows = []
    classes = sorted(votes.class_name.unique()) if len(votes) else []
    per_class = len(classes) > 1
    for reader in sorted(votes.reader.unique()) + [ALL]:
        mine = votes if reader == ALL else votes[votes.reader == reader]
        rows.append({"reader": reader, "class": ALL, **_rates(mine)})
        for name in classes if per_class else []:
            rows.append({"reader": reader, "class": name,
                         **_rates(mine[mine.class_name == name])})
    return pd.DataFrame(rows)


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa for an N subjects x k categories table of rating counts.

    Hand-written because statsmodels is not a dependency; formula of Fleiss (1971):
    P_i = (sum_j n_ij^2 - n) / (n (n - 1)),  p_j = sum_i n_ij / (N n),
    kappa = (mean P_i - sum_j p_j^2) / (1 - sum_j p_j^2). Every subject needs the same
    number n >= 2 of ratings. NaN when all ratings fall in one category.
    """
    counts = np.asarray(counts, dtype=float)
    n = counts.sum(axis=1)
    if counts.ndim != 2 or len(counts) == 0 or not np.all(n == n[0]) or n[0] < 2:
        raise ValueError("fleiss_kappa needs a non-empty table with the same number (>= 2) "
                         "of ratings in every row")
    raters, subjects = n[0], len(counts)
    p_j = counts.sum(axis=0) / (subjects * raters)
    p_i = (np.square(counts).sum(axis=1) - raters) / (raters * (raters - 1))
    p_bar, p_e = p_i.mean(), np.square(p_j).sum()
    return math.nan if math.isclose(p_e, 1.0) else float((p_bar - p_e) / (1 - p_e))


def _cohen(a: list[str], b: list[str]) -> float:
    from sklearn.metrics import cohen_kappa_score

    if len(set(a) | set(b)) < 2:  # one category only: chance agreement 1, kappa undefined
        return math.nan
    return float(cohen_kappa_score(a, b, labels=list(VOTES)))


def fully_rated(votes: pd.DataFrame) -> pd.DataFrame:
    """Reader x image table of answers, only images every reader answered."""
    if not len(votes):
        return pd.DataFrame()
    wide = votes.pivot(index="image_id", columns="reader", values="vote")
    return wide.dropna()


def agreement(votes: pd.DataFrame) -> dict:
    """Inter-reader agreement on the 3 answers over images every reader answered.

    Two readers: Cohen's kappa. More: Fleiss' kappa, plus Cohen's kappa for each pair.
    """
    wide = fully_rated(votes)
    readers = list(wide.columns)
    result = {"readers": readers, "n_images": len(wide), "method": None, "kappa": math.nan,
              "pairs": []}
    if len(readers) < 2 or not len(wide):
        return result
    for i, first in enumerate(readers):
        for second in readers[i + 1:]:
            result["pairs"].append((first, second,
                                    _cohen(list(wide[first]), list(wide[second]))))
    if len(readers) == 2:
        result["method"], result["kappa"] = "Cohen", result["pairs"][0][2]
    else:
        table = np.stack([(wide == v).sum(axis=1).to_numpy() for v in VOTES], axis=1)
        result["method"], result["kappa"] = "Fleiss", fleiss_kappa(table)
    return result


def consensus(votes: pd.DataFrame) -> pd.DataFrame:
    """Per class and source: images every reader called real / fake / unclear, or split."""
    wide = fully_rated(votes)
    if not len(wide):
        return pd.DataFrame(columns=["class", "source", "n_images", *[f"all_{v}" for v in VOTES],
                                     "split"])
    info = votes.drop_duplicates("image_id").set_index("image_id")[["class_name", "source"]]
    unanimous = wide.apply(lambda row: row.iloc[0] if row.nunique() == 1 else "split", axis=1)
    frame = info.loc[wide.index].assign(outcome=unanimous)
    rows = []
    groups = [(ALL, frame)] + ([(c, frame[frame.class_name == c])
                                for c in sorted(frame.class_name.unique())]
                               if frame.class_name.nunique() > 1 else [])
    for name, part in groups:
        for source in SOURCES:
            sub = part[part.source == source]
            rows.append({"class": name, "source": source, "n_images": len(sub),
                         **{f"all_{v}": int((sub.outcome == v).sum()) for v in VOTES},
                         "split": int((sub.outcome == "split").sum())})
    return pd.DataFrame(rows)


def taken_for_real(votes: pd.DataFrame, top: int) -> pd.DataFrame:
    """Synthetic images with at least one "real" answer, most "real" answers first."""
    synthetic = votes[votes.source == "synthetic"]
    if not len(synthetic):
        return pd.DataFrame(columns=["image_id", "public_id", "class", "source_path",
                                     "real_votes", "answers"])
    table = (synthetic.assign(is_real=synthetic.vote == "real")
             .groupby(["image_id", "public_id", "class_name", "source_path"])
             .agg(real_votes=("is_real", "sum"), answers=("vote", "size")).reset_index())
    table = table[table.real_votes > 0].rename(columns={"class_name": "class"})
    table["real_share"] = table.real_votes / table.answers
    table = table.sort_values(["real_votes", "real_share", "image_id"],
                              ascending=[False, False, True])
    return table.head(top).reset_index(drop=True)


def notes(votes: pd.DataFrame) -> pd.DataFrame:
    """Every non-empty note with its reader, answer and the image's true source."""
    cols = ["reader", "class_name", "source", "vote", "note", "source_path"]
    picked = votes[votes.note.fillna("").str.len() > 0].sort_values(["reader", "voted_at"])
    picked = picked[cols]
    return picked.rename(columns={"class_name": "class"}).reset_index(drop=True)
