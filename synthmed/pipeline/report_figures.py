"""The PNG pictures of report.md (written beside it as `report_*.png`), each with the caption the report prints.

- `accuracy_bars`: test accuracy per classifier row (TSTR / TRTR / TR+S ...) with its 95 % test-set interval
  and each run's (fold's) accuracy as a dot.
- `confusion_matrices`: one true x predicted matrix per classifier row, summed over its runs.
- `real_fake_grid`: per class, a row of real images above a row of synthetic ones (an evaluate stage's sets).
- `distance_histograms`: per copy-audit representation, nearest-training distances of the fakes vs the
  held-out reals, with the distance below which a fake is flagged as a copy.

Object-oriented matplotlib (Figure + Agg canvas, no pyplot): no global backend state, works headless.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthmed.pipeline.report_classifiers import RowPredictions

PER_CLASS = 6
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    return path


def accuracy_bars(rows: list[RowPredictions], path: Path) -> Path:
    """Bar per classifier row: pooled test accuracy, 95 % interval as error bar, each run's accuracy as a dot."""
    fig = _figure(1.6 + 1.1 * len(rows), 3.6)
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    values = [r.interval.value for r in rows]
    err = np.array([[r.interval.value - r.interval.low, r.interval.high - r.interval.value] for r in rows]).T
    ax.bar(x, values, yerr=err, capsize=6, color="#9ecae1", edgecolor="#3182bd", label="pooled, 95 % CI")
    for i, row in enumerate(rows):
        ax.scatter([i] * len(row.run_accuracies), row.run_accuracies, color="black", s=14, zorder=3,
                   label="each run (fold)" if i == 0 else None)
        ax.text(i, row.interval.high + 1.5, f"{row.interval.value:.1f}", ha="center", fontsize=8)
    chance = 100 / max(1, len(rows[0].class_names))
    ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({chance:.0f} %)")
    ax.set(xticks=x, ylim=(0, 105), ylabel="test accuracy %", title=f"test accuracy on {rows[0].interval.n} real images")
    ax.set_xticklabels([r.label for r in rows], rotation=20, ha="right", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def confusion_matrices(rows: list[RowPredictions], path: Path) -> Path:
    """One confusion matrix (counts, summed over the row's runs; colour = share of the true class) per row."""
    k = len(rows[0].class_names)
    fig = _figure(0.4 + (1.4 + 0.55 * k) * len(rows), 1.4 + 0.55 * k)
    for i, row in enumerate(rows):
        ax = fig.add_subplot(1, len(rows), i + 1)
        counts = row.confusion
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        n = len(row.class_names)
        ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", title=f"{row.label}\n({len(row.run_accuracies)} runs)")
        ax.set_xticklabels(row.class_names, rotation=45, ha="right", fontsize=7)
        ax.set_yticklabels(row.class_names if i == 0 else [], fontsize=7)
        if i == 0:
            ax.set_ylabel("true")
        for (a, b), count in np.ndenumerate(counts):
            ax.text(b, a, int(count), ha="center", va="center", fontsize=7,
                    color="white" if share[a, b] > 0.5 else "black")
    return _save(fig, path)


def _images_of(folder: Path, n: int) -> list[Path]:
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and "_mask" not in p.name)
    return found[:n]


def real_fake_grid(real: Path, fake: Path, classes: list[str], path: Path, per_class: int = PER_CLASS) -> Path | None:
    """Per class (or for the whole flat set): `per_class` real images (first names) above as many synthetic ones."""
    from PIL import Image

    groups = [(c, real / c, fake / c) for c in classes] or [("all", real, fake)]
    groups = [(c, _images_of(r, per_class), _images_of(f, per_class)) for c, r, f in groups if r.is_dir() and f.is_dir()]
    groups = [g for g in groups if g[1] or g[2]]
    if not groups:
        return None
    fig = _figure(1.2 + 1.0 * per_class, 0.3 + 2.0 * len(groups))
    for g, (name, reals, fakes) in enumerate(groups):
        for r, (kind, files) in enumerate((("real", reals), ("synthetic", fakes))):
            for j in range(per_class):
                ax = fig.add_subplot(2 * len(groups), per_class, (2 * g + r) * per_class + j + 1)
                ax.set_xticks([]), ax.set_yticks([])
                if j < len(files):
                    with Image.open(files[j]) as im:
                        arr = np.asarray(im.convert("L") if im.mode in ("L", "I", "I;16", "F") else im.convert("RGB"))
                    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=255)  # no per-image stretch
                else:
                    ax.axis("off")
                if j == 0:
                    ax.set_ylabel(f"{name}\n{kind}", fontsize=8)
    return _save(fig, path)


def distance_histograms(audit: dict, alpha: float, path: Path) -> Path | None:
    """Per representation: histograms of nearest-training distances, fakes vs held-out reals, and the flag threshold."""
    spaces = {s: rep for s, rep in (audit.get("representations") or {}).items()
              if rep.get("fake_distances") and rep.get("heldout_distances")}
    if not spaces:
        return None
    fig = _figure(4.2 * len(spaces), 3.2)
    for i, (space, rep) in enumerate(spaces.items()):
        ax = fig.add_subplot(1, len(spaces), i + 1)
        fakes, held = np.asarray(rep["fake_distances"]), np.asarray(rep["heldout_distances"])
        bins = np.histogram_bin_edges(np.concatenate([fakes, held]), bins=20)
        ax.hist(held, bins=bins, alpha=0.6, density=True, color="#3182bd", label=f"held-out reals (n {held.size})")
        ax.hist(fakes, bins=bins, alpha=0.6, density=True, color="#e6550d", label=f"fakes (n {fakes.size})")
        # flagged when p = (1 + #{held-out <= d}) / (n + 1) <= alpha, i.e. #{held-out <= d} <= k: d below the
        # (k+1)-th smallest held-out distance
        k = int(np.floor(alpha * (held.size + 1))) - 1
        if 0 <= k < held.size:
            threshold = np.sort(held)[k]
            ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label="copy flag below")
        ax.set(xlabel="distance to the nearest training image", ylabel="density", title=space)
        ax.title.set_fontsize(8)
        ax.legend(fontsize=7)
    return _save(fig, path)
