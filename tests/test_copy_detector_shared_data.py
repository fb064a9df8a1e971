"""Calibration of the copy detector on a real dataset: ../shared/data/busi at 64 px.

BUSI lists 179 near-duplicate pairs (busi/near_duplicates.csv): a held-out image whose near twin
is in the training set *is* a near-copy, and a reference set holding such twins would say "new
images come that close". Like a careful split, every image named there goes to the training
side; the reference, fresh and blurred sets come from the rest. Fractions printed with -s.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from conftest import shared_dataset
from synthmed.evaluate.extractors import ClassifierExtractor
from synthmed.evaluate.images import load_image_set
from test_copy_detector import assert_calibrated, cases, flagged_fractions, image_set, print_table
from test_evaluate_cli import save_classifier_ckpt

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]  # ~70 s: 1,260 images through a ResNet-18 at 64 px
SIZE = 64


def _subset(images, labels, rows, name):
    return image_set(images[torch.from_numpy(rows)], name, [labels[i] for i in rows])


def test_copy_detector_is_calibrated_on_busi(tmp_path):
    busi = shared_dataset("busi")
    loaded = load_image_set(busi, SIZE, 1)
    with open(busi / "near_duplicates.csv", newline="") as handle:
        twins = {str(busi / row[key]) for row in csv.DictReader(handle) for key in ("path_a", "path_b")}
    has_twin = np.array([p in twins for p in loaded.paths])
    rest = np.random.default_rng(0).permutation(np.flatnonzero(~has_twin))
    reference, fresh, heldout = rest[:160], rest[160:220], rest[220:280]
    train = np.sort(np.concatenate([np.flatnonzero(has_twin), rest[280:]]))
    images, labels = loaded.images, loaded.labels
    sets = {name: _subset(images, labels, np.sort(rows), name)
            for name, rows in (("train", train), ("reference", reference), ("fresh", fresh), ("heldout", heldout))}
    extractor = ClassifierExtractor(save_classifier_ckpt(tmp_path / "clf.ckpt", size=SIZE)).eval()
    fractions = flagged_fractions(extractor, sets["train"], sets["reference"],
                                  cases(sets["train"], sets["heldout"], sets["fresh"], 60), tmp_path)
    print_table(f"busi {SIZE} px (train {len(train)}, held-out reference {len(reference)}, 60 per case)", fractions)
    assert_calibrated(fractions)
