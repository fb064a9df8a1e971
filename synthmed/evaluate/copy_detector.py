"""Calibrated copy detector: is a generated image closer to a training image than new real images come?

Per fake image: its distance to the nearest training image (`--train`) in a representation where
blur and noise do not pass for closeness (`copy_representations`: fine-detail pixels searched over
shifts and a flip, and the named extractor's features), turned into a conformal p-value against
the held-out real images (`--real`, minus any file byte-identical to a training file):

    p = (1 + #{held-out images at most as close to the training set}) / (n_heldout + 1)

and flagged as a copy when p <= ALPHA. A fake drawn from the same distribution as the held-out
images, never seen by the generator, is flagged with probability <= ALPHA whatever the data or the
representation (the p-value is exchangeable with the held-out ones): calibrated by construction.
`near_copy_fraction` is the flagged share; the global number is the data-copying statistic C_T of
Meehan, Chaudhuri & Dasgupta (AISTATS 2020, `data_copying`), on cells from k-means of the
training features. Calibration on phantoms and on a real dataset: tests/test_copy_detector*.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from synthmed.evaluate import bootstrap, copy_representations as reps, data_copying
from synthmed.evaluate.pictures import closest_pairs, draw_pairs_png
from synthmed.evaluate.results import MetricResult, not_computed

ALPHA = 0.025  # fresh images are flagged at about this rate; copies need >= 39 held-out images to be flaggable
MIN_HELDOUT = int(np.ceil(1 / ALPHA)) - 1  # with fewer, no p-value can reach ALPHA
METHOD = ("conformal nearest-training-distance test: a fake is a copy when its distance to the nearest training "
          "image is smaller than held-out real images' distances almost always, p = (1 + #held-out at most as close) "
          f"/ (n_heldout + 1) <= {ALPHA:g}; global number: the data-copying statistic C_T of {data_copying.REFERENCE}")
COPY_DEFINITION = (f"share of fakes flagged as copies (conformal p <= {ALPHA:g} against held-out reals; a generator "
                   f"that does not copy scores about {ALPHA:g} or less, one that copies up to 1)")
C_T_DEFINITION = ("data-copying z-statistic C_T (Meehan et al. 2020): << 0 copying, ~ 0 as close as new real images, "
                  ">> 0 farther (underfitting)")


def summary(values: torch.Tensor) -> dict[str, float]:
    """min / percentiles / median / max / mean of a 1-d tensor."""
    v = values.double()
    q = torch.quantile(v, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64))
    return {"n": int(v.numel()), "min": float(v.min()), "p5": float(q[0]), "p25": float(q[1]), "median": float(q[2]),
            "p75": float(q[3]), "p95": float(q[4]), "max": float(v.max()), "mean": float(v.mean())}


def conformal_p(d_fake: torch.Tensor, d_heldout: torch.Tensor, heldout_w: torch.Tensor | None = None) -> torch.Tensor:
    """p-value of each fake's nearest-training distance among the held-out ones (weights: bootstrap counts)."""
    at_most = (d_heldout[:, None] <= d_fake[None, :]).double()
    w = heldout_w if heldout_w is not None else torch.ones(d_heldout.numel(), dtype=torch.float64)
    return (1 + w @ at_most) / (w.sum() + 1)


def flagged(d_fake: torch.Tensor, d_heldout: torch.Tensor) -> torch.Tensor:
    """Bool per fake: flagged as a copy of a training image."""
    return conformal_p(d_fake, d_heldout) <= ALPHA


def _copy_fraction(d_fake, d_heldout, space, rounds, seed, class_name) -> MetricResult:
    n, m = d_heldout.numel(), d_fake.numel()
    common = dict(n_real=n, n_fake=m, higher_is_better=False, class_name=class_name, definition=COPY_DEFINITION)
    if n < MIN_HELDOUT:
        return not_computed("near_copy_fraction", space, f"{n} held-out real images; at least {MIN_HELDOUT} are "
                            f"needed for a p-value of {ALPHA:g}", **common)
    if m < 1:
        return not_computed("near_copy_fraction", space, "no fake images", **common)
    value = float(flagged(d_fake, d_heldout).double().mean())

    def stat(hw, fw):
        return float(fw @ (conformal_p(d_fake, d_heldout, hw) <= ALPHA).double() / fw.sum())

    ci = bootstrap.replicate(stat, n, m, rounds, seed, salt=11) if m >= 2 else None
    return MetricResult(name="near_copy_fraction", space=space, value=value, interval=ci,
                        extra={"alpha": ALPHA, "bootstrap_rounds": rounds}, **common)


def _c_t(comparisons: data_copying.CellComparisons, space, n_heldout, n_fake, rounds, seed, class_name,
         n_cells) -> MetricResult:
    common = dict(n_real=n_heldout, n_fake=n_fake, higher_is_better=None, class_name=class_name,
                  definition=C_T_DEFINITION)
    full = comparisons.statistic()
    if full["c_t"] is None:
        return not_computed("data_copying_z", space, f"no k-means cell holds >= {data_copying.MIN_PER_CELL} fakes "
                            f"and >= {data_copying.MIN_PER_CELL} held-out reals", **common)
    reps_: list[float] = []
    if rounds > 0 and n_heldout >= 2 and n_fake >= 2:
        g = bootstrap.generator(seed, salt=12)
        hc, fc = bootstrap.counts(n_heldout, rounds, g), bootstrap.counts(n_fake, rounds, g)
        for b in range(rounds):
            value = comparisons.statistic(hc[b], fc[b])["c_t"]
            reps_.append(float("nan") if value is None else value)
    return MetricResult(name="data_copying_z", space=space, value=full["c_t"],
                        interval=bootstrap.interval(reps_) if reps_ else None,
                        extra={"cells": n_cells, "cells_used": sum(c["z_u"] is not None for c in full["cells"]),
                               "min_per_cell": data_copying.MIN_PER_CELL, "per_cell": full["cells"],
                               "bootstrap_rounds": rounds}, **common)


def copy_audit(fake_set, real_set, train_set, features: dict[str, torch.Tensor], feature_space: str,
               out_dir: Path, rounds: int, seed: int,
               classes: list[str] | None = None) -> tuple[list[MetricResult], dict]:
    """All copy-audit results (pooled and, with `classes`, per class) and the report section.

    fake_set / real_set / train_set: `images.ImageSet`s; features: {"fake", "real", "train"} rows of the
    named extractor. classes: class names shared by fakes and reals (per-class rows), or None.
    Writes closest_pairs_<representation>.png into out_dir.
    """
    train_hashes = set(train_set.sha256)
    keep = torch.tensor([h not in train_hashes for h in real_set.sha256], dtype=torch.bool)
    held_idx = torch.nonzero(keep).flatten()
    spaces = {
        reps.PIXEL_SPACE: (reps.pixel_distances(reps.highpass(fake_set.images), reps.highpass(train_set.images)),
                           reps.pixel_distances(reps.highpass(real_set.images[held_idx]),
                                                reps.highpass(train_set.images)),
                           reps.PIXEL_DESCRIPTION),
        feature_space: (reps.feature_distances(features["fake"], features["train"]),
                        reps.feature_distances(features["real"][held_idx], features["train"]),
                        "Euclidean distance between the extractor's features"),
    }
    n_cells = data_copying.number_of_cells(len(train_set), int(held_idx.numel()))
    kmeans = data_copying.kmeans_cells(features["train"], n_cells, seed)
    cells = {"train": kmeans.labels_, "fake": kmeans.predict(features["fake"].double().numpy()),
             "held": kmeans.predict(features["real"][held_idx].double().numpy())}
    fake_labels = np.array(fake_set.labels)
    held_labels = np.array(real_set.labels)[held_idx.numpy()]
    groups: list[tuple[str | None, np.ndarray, np.ndarray]] = [
        (None, np.arange(len(fake_set)), np.arange(held_idx.numel()))]
    for name in classes or []:
        f_cls, r_cls = fake_set.class_names.index(name), real_set.class_names.index(name)
        groups.append((name, np.flatnonzero(fake_labels == f_cls), np.flatnonzero(held_labels == r_cls)))

    results: list[MetricResult] = []
    section: dict = {"method": METHOD, "reference": data_copying.REFERENCE, "alpha": ALPHA,
                     "fake_files_identical_to_train": sum(h in train_hashes for h in fake_set.sha256),
                     "real_files_identical_to_train": int((~keep).sum()), "n_heldout": int(held_idx.numel()),
                     "n_train": len(train_set), "kmeans_cells": n_cells, "representations": {}}
    for space, (d_fake_all, d_held_all, description) in spaces.items():
        d_fake, nn_idx = d_fake_all.min(dim=1)
        d_held = d_held_all.min(dim=1).values
        for class_name, f_rows, h_rows in groups:
            fr, hr = torch.from_numpy(f_rows), torch.from_numpy(h_rows)
            results.append(_copy_fraction(d_fake[fr], d_held[hr], space, rounds, seed, class_name))
            comparisons = data_copying.CellComparisons(d_held_all[hr], d_fake_all[fr], cells["train"],
                                                       cells["held"][h_rows], cells["fake"][f_rows])
            results.append(_c_t(comparisons, space, len(h_rows), len(f_rows), rounds, seed, class_name, n_cells))
        safe = space.split(":")[0].split("@")[0]
        png = out_dir / f"closest_pairs_{safe}.png"
        pairs = closest_pairs(fake_set.paths, train_set.paths, d_fake, nn_idx)
        draw_pairs_png(pairs, fake_set.images, train_set.images, png, f"8 fakes closest to the training set, {space}")
        median_held = float(d_held.median()) if d_held.numel() else float("nan")
        section["representations"][space] = {
            "distance": description, "fake_to_train": summary(d_fake),
            "heldout_to_train": summary(d_held) if d_held.numel() else None,
            "fake_over_heldout_median": summary(d_fake / median_held) if d_held.numel() and median_held > 0 else None,
            "closest_pairs": [{k: v for k, v in p.items() if not k.endswith("_index")} for p in pairs],
            "closest_pairs_png": png.name,
            # every fake's / held-out real's nearest-training distance (the report's histogram)
            "fake_distances": [round(float(d), 6) for d in d_fake],
            "heldout_distances": [round(float(d), 6) for d in d_held]}
    return results, section
