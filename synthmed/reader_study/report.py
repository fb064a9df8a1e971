"""``report``: write the reader-study results as Markdown, CSV files and two PNGs.

Files written into the report folder:

    reader_study_report.md   everything below in one readable page
    answers.csv              per reader / class / source: real, fake, unclear answers (Fig. 5)
    detection.csv            accuracy, sensitivity, specificity per reader (and class)
    agreement.csv            Cohen's / Fleiss' kappa and pairwise Cohen's kappa
    consensus.csv            images every reader called real / fake / unclear
    taken_for_real.csv       synthetic images most often answered "real"
    notes.csv, votes.csv     the readers' notes; every answer with the true source
    answers_by_reader.png    stacked bar chart of answers.csv
    taken_for_real.png       contact sheet of taken_for_real.csv (when there are any)

Readers type the notes, and folder names come from the user's disk: in the Markdown page
every such text is escaped (``escaping.md_text``), and in every CSV a text cell that a
spreadsheet would run as a formula is prefixed with ``'`` (``escaping.csv_safe``).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd

from . import db, stats
from .escaping import csv_safe, md_text
from .report_common import REPORT_NAME, _fmt, _prepare_out, md_table

_COLOURS = {"real": "#4c956c", "fake": "#c44536", "unclear": "#b8bec6"}


def bar_chart(counts: pd.DataFrame, path: Path) -> None:
    """One panel per reader; per class and source a stacked bar of real/fake/unclear."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    classes = sorted(set(counts["class"]) - {stats.ALL}) or [stats.ALL]
    readers = sorted(counts.reader.unique())
    keys = [(c, s) for c in classes for s in stats.SOURCES]
    labels = [s if c == stats.ALL else f"{c}\n{s}" for c, s in keys]
    fig, axes = plt.subplots(1, len(readers), squeeze=False, sharey=True,
                             figsize=(1.5 + len(readers) * (0.8 * len(keys) + 0.6), 3.6))
    for ax, reader in zip(axes[0], readers):
        mine = counts[counts.reader == reader].set_index(["class", "source"])
        bottoms = [0] * len(keys)
        for vote in db.VOTES:
            heights = [int(mine.loc[k, vote]) if k in mine.index else 0 for k in keys]
            ax.bar(range(len(keys)), heights, bottom=bottoms, color=_COLOURS[vote],
                   label=f"answered {vote}", edgecolor="white", linewidth=.5)
            bottoms = [b + h for b, h in zip(bottoms, heights)]
        ax.set_xticks(range(len(keys)), labels, fontsize=8)
        ax.set_title(f"reader {reader}", fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("true source", fontsize=8)
    axes[0][0].set_ylabel("images")
    axes[0][-1].legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
    fig.suptitle("Answers per reader for real and synthetic images", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def contact_sheet(conn, table: pd.DataFrame, path: Path, thumb: int = 160) -> None:
    """Grid of the synthetic images most often taken for real, captioned with the counts."""
    from PIL import Image, ImageDraw, ImageFont

    columns = min(4, len(table))
    rows = math.ceil(len(table) / columns)
    caption_h, pad = 30, 6
    sheet = Image.new("RGB", (columns * (thumb + pad) + pad,
                              rows * (thumb + caption_h + pad) + pad), "white")
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default()
    for i, row in enumerate(table.to_dict("records")):
        img = Image.open(io.BytesIO(db.image_png(conn, row["public_id"])))
        img = img.convert("RGB").resize((thumb, thumb))
        x = pad + (i % columns) * (thumb + pad)
        y = pad + (i // columns) * (thumb + caption_h + pad)
        sheet.paste(img, (x, y))
        where = f" - {row['class']}" if row["class"] else ""
        draw.text((x, y + thumb + 2), f"{row['real_votes']}/{row['answers']} said real{where}",
                  fill="black", font=font)
        draw.text((x, y + thumb + 15), Path(row["source_path"]).name[:26], fill="#555555",
                  font=font)
    sheet.save(path)


def write_report(study: str | Path, out: str | Path | None = None, top: int = 16,
                 paper: dict | None = None) -> Path:
    """Compute every table from ``study`` and write the report folder; returns its path.

    A synthetic-only study gets its own report (``report_synthetic_only.py``); ``paper``
    (``paper_counts.load_paper_counts``) adds the paper's per-specialist counts to it.
    """
    study = Path(study)
    with db.connection(study, readonly=True) as conn:
        study_mode = db.study_mode(conn)
    if study_mode == "synthetic-only":
        from .report_synthetic_only import write_synthetic_only_report

        return write_synthetic_only_report(study, Path(out) if out else None, paper)
    if paper is not None:
        raise ValueError("--paper compares a synthetic-only study with the paper's counts; "
                         f"{study.name} is a real-vs-synthetic study")
    with db.connection(study, readonly=True) as conn:
        meta = db.read_meta(conn)
        images, votes = stats.load_votes(conn)
        changed = conn.execute("SELECT COUNT(*) FROM vote_history").fetchone()[0]
        out = _prepare_out(study, Path(out) if out else None)
        counts = stats.answer_counts(votes)
        detection = stats.detection_metrics(votes)
        agree = stats.agreement(votes)
        agree_frame = pd.DataFrame(
            [{"pair": "all readers", "method": agree["method"] or "n/a",
              "n_images": agree["n_images"], "kappa": agree["kappa"]}]
            + [{"pair": f"{a} vs {b}", "method": "Cohen", "n_images": agree["n_images"],
                "kappa": k} for a, b, k in agree["pairs"]])
        agreed = stats.consensus(votes)
        fooled = stats.taken_for_real(votes, top)
        noted = stats.notes(votes)
        for frame, name in [(counts, "answers"), (detection, "detection"),
                            (agree_frame, "agreement"), (agreed, "consensus"),
                            (fooled, "taken_for_real"), (noted, "notes"),
                            (votes.drop(columns=["image_id"]), "votes")]:
            csv_safe(frame).to_csv(out / f"{name}.csv", index=False)
        if len(counts):
            bar_chart(counts, out / "answers_by_reader.png")
        sheet = out / "taken_for_real.png"
        sheet.unlink(missing_ok=True)
        if len(fooled):
            contact_sheet(conn, fooled, sheet)
    text = _markdown(study, meta, images, votes, changed, counts, detection, agree, agree_frame,
                     agreed, fooled, noted, sheet.exists())
    (out / REPORT_NAME).write_text(text, encoding="utf-8")
    return out


def _markdown(study, meta, images, votes, changed, counts, detection, agree, agree_frame,
              agreed, fooled, noted, has_sheet) -> str:
    per_group = images.groupby(["class_name", "source"]).size()
    composition = ", ".join(f"{md_text(c or 'flat folder')} {s}: {n}"
                            for (c, s), n in per_group.items())
    readers = ", ".join(f"{md_text(r)} ({n} answers)"
                        for r, n in votes.groupby("reader").size().items())
    agree_line = ("Needs at least two readers who answered the same images."
                  if agree["method"] is None else
                  f"{agree['method']}'s kappa over the {agree['n_images']} images every reader "
                  f"answered (3 categories: real / fake / unclear): **{_fmt(agree['kappa'])}**.")
    parts = [
        "# Reader study report\n",
        f"Study file {md_text(study.name)}, created {meta.get('created_at', '?')}, seed "
        f"{meta.get('seed')}: {len(images)} images ({composition}), re-encoded to "
        f"{meta.get('size')} x {meta.get('size')} {meta.get('mode')} PNG.\n",
        f"Readers: {readers or 'none yet'}. Changed answers (kept in vote_history): {changed}.\n",
        "## Answers per reader (seed 001, Fig. 5)\n",
        "Rows with class `(all)` sum over the classes.\n",
        md_table(counts),
        "![answers per reader](answers_by_reader.png)\n" if len(counts) else "",
        "## Spotting fakes\n",
        "Positive = synthetic image. A *fake* answer is a positive call, *real* a negative one. "
        "Sensitivity = synthetic images called fake / synthetic images called real or fake; "
        "specificity = real images called real / real images called real or fake; accuracy = "
        "correct calls / all real-or-fake calls. **Unclear answers are no call**: they are left "
        "out of these three and counted in `unclear`; `accuracy_unclear_wrong` counts them as "
        "wrong instead. tp/fn/tn/fp: synthetic called fake / synthetic called real / real "
        "called real / real called fake. Reader `(all)` pools every answer.\n",
        md_table(detection),
        "## Agreement between readers\n",
        agree_line + "\n",
        md_table(agree_frame) if agree["method"] else "",
        "## Consensus\n",
        "Images that every reader answered, by what all of them said (`split`: they "
        "disagreed). Seed 001 reports e.g. how many CT images *both* specialists called real.\n",
        md_table(agreed),
        "## Synthetic images most often taken for real\n",
        md_table(fooled.drop(columns=["image_id", "public_id"], errors="ignore")),
        "![synthetic images taken for real](taken_for_real.png)\n" if has_sheet else "",
        "## Notes\n",
        md_table(noted),
    ]
    return "\n".join(parts)
