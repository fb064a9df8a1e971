"""The data-copying test of Meehan, Chaudhuri & Dasgupta (AISTATS 2020), statistic C_T.

"A Non-Parametric Test to Detect Data-Copying in Generative Models" (arXiv:2004.05675): the
training set T is partitioned into cells by k-means (as in the paper). In each cell pi, the
distances of held-out real images P_n(pi) and of generated images Q_m(pi) to their nearest
training image *of that cell* are compared by a Mann-Whitney U test, z-scored under the null:

    Z_U(pi) = (U - m n / 2) / sqrt(m n (m + n + 1) / 12),  U = #{(i, j): L(Q_j) > L(P_i)} (+ ties / 2)

C_T = sum over kept cells of P_n(pi) Z_U(pi) / sum of P_n(pi). C_T << 0: the generated images are
closer to the training set than new real images are (data copying); ~ 0: as close as new images;
>> 0: farther (underfitting). Cells are kept when they hold at least MIN_PER_CELL generated and
MIN_PER_CELL held-out images (the paper's tau; fixed counts here because the sets are small).

Hand-written after the authors' reference code (casey-meehan/data-copying, `C_T`): no maintained
package implements it; the U statistic itself is scipy's Mann-Whitney U.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import mannwhitneyu

MIN_PER_CELL = 5
MAX_CELLS = 10
IMAGES_PER_CELL = 20
REFERENCE = ("Meehan, Chaudhuri & Dasgupta, A Non-Parametric Test to Detect Data-Copying in Generative Models, "
             "AISTATS 2020")


def number_of_cells(n_train: int, n_heldout: int) -> int:
    """About IMAGES_PER_CELL held-out and training images per cell, at most MAX_CELLS."""
    return int(max(1, min(MAX_CELLS, n_train // IMAGES_PER_CELL, n_heldout // IMAGES_PER_CELL)))


def kmeans_cells(train_features: torch.Tensor, n_cells: int, seed: int):
    """scikit-learn KMeans fitted on the training features (the paper's partition)."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=n_cells, n_init=10, random_state=seed).fit(train_features.double().numpy())


class CellComparisons:
    """Per cell: in-cell nearest-training distances of held-out and fake images, and their pair comparisons."""

    def __init__(self, d_heldout: torch.Tensor, d_fake: torch.Tensor, train_cells: np.ndarray,
                 heldout_cells: np.ndarray, fake_cells: np.ndarray):
        self.cells = []
        for cell in np.unique(train_cells):
            in_train = torch.from_numpy(train_cells == cell)
            hi, fi = np.flatnonzero(heldout_cells == cell), np.flatnonzero(fake_cells == cell)
            lp = d_heldout[hi][:, in_train].min(dim=1).values if hi.size else torch.empty(0, dtype=torch.float64)
            lq = d_fake[fi][:, in_train].min(dim=1).values if fi.size else torch.empty(0, dtype=torch.float64)
            # wins[i, j] = 1 when fake j is farther than held-out i, 1/2 on ties (U counts these)
            wins = (lq[None, :] > lp[:, None]).double() + 0.5 * (lq[None, :] == lp[:, None]).double()
            self.cells.append({"cell": int(cell), "heldout": hi, "fake": fi, "lp": lp, "lq": lq, "wins": wins})

    def statistic(self, heldout_w: torch.Tensor | None = None, fake_w: torch.Tensor | None = None) -> dict:
        """C_T and the per-cell Z_U (weights: bootstrap multiplicities; None = every image once)."""
        total_heldout = float(heldout_w.sum()) if heldout_w is not None else sum(c["heldout"].size for c in self.cells)
        rows, num, den = [], 0.0, 0.0
        for c in self.cells:
            ones_p, ones_q = (torch.ones(c[k].size, dtype=torch.float64) for k in ("heldout", "fake"))
            wp = heldout_w[c["heldout"]] if heldout_w is not None else ones_p
            wq = fake_w[c["fake"]] if fake_w is not None else ones_q
            n, m = float(wp.sum()), float(wq.sum())
            row = {"cell": c["cell"], "n_heldout": int(n), "n_fake": int(m), "z_u": None}
            if n >= MIN_PER_CELL and m >= MIN_PER_CELL:
                u = float(wp @ c["wins"] @ wq)
                z = (u - m * n / 2) / math.sqrt(m * n * (m + n + 1) / 12)
                row["z_u"] = z
                share = n / total_heldout
                num, den = num + share * z, den + share
            rows.append(row)
        return {"c_t": num / den if den > 0 else None, "cells": rows}


def scipy_u(lq: torch.Tensor, lp: torch.Tensor) -> float:
    """Mann-Whitney U of the fakes against the held-out images (scipy), to check `CellComparisons`."""
    return float(mannwhitneyu(lq.numpy(), lp.numpy(), alternative="two-sided").statistic)
