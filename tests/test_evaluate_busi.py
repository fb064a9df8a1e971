"""Acceptance on real data: two halves of ../shared/data/busi score far better than BUSI vs noise.

The extractor is a randomly initialised ResNet-18 ClassifierModule (no training, no download):
even random convolutional features separate ultrasound images from noise by orders of magnitude.
The default run uses 120 images per set; the full halves (391 + 389 images) run with -m slow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import shared_dataset
from synthmed.evaluate.cli import main
from synthmed.evaluate.results import find, read_results
from test_evaluate_cli import save_classifier_ckpt

pytestmark = pytest.mark.shared_data
SIZE = 64


def split_halves(busi: Path, out: Path) -> dict[str, Path]:
    """half_a / half_b: every other image of each class (symlinks); noise: as many uniform-noise images."""
    rng = np.random.default_rng(0)
    for cls in sorted(p.name for p in busi.iterdir() if p.is_dir()):
        images = sorted(p for p in (busi / cls).iterdir() if p.suffix == ".png" and "_mask" not in p.name)
        for i, path in enumerate(images):
            target = out / ("half_a" if i % 2 == 0 else "half_b") / cls / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(path.resolve(), target)
        (out / "noise" / cls).mkdir(parents=True)
        for i in range((len(images) + 1) // 2):
            Image.fromarray(rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)).save(out / "noise" / cls / f"n{i}.png")
    return {name: out / name for name in ("half_a", "half_b", "noise")}


@pytest.mark.parametrize("max_images", [pytest.param(120, id="120-per-set"),
                                        pytest.param(None, id="full-halves", marks=pytest.mark.slow)])
def test_busi_halves_score_far_better_than_noise(tmp_path, capsys, max_images):
    sets = split_halves(shared_dataset("busi"), tmp_path / "sets")
    ckpt = save_classifier_ckpt(tmp_path / "clf.ckpt", size=SIZE)
    records = {}
    subset = ["--max-images", str(max_images)] if max_images else []
    for fake in ("half_b", "noise"):
        rc = main(["--real", str(sets["half_a"]), "--fake", str(sets[fake]), "--extractor", f"classifier:{ckpt}",
                   "--out", str(tmp_path / fake), *subset])
        assert rc == 0, capsys.readouterr().err
        records[fake] = json.loads((tmp_path / fake / "evaluation.json").read_text())
    halves, noise = records["half_b"], records["noise"]
    n_images = halves["inputs"]["real"]["n_images"] + halves["inputs"]["fake"]["n_images"]
    assert n_images == (2 * max_images if max_images else 780)
    name = halves["extractor"]["name"]

    def m(record, base):
        return find(read_results(record), base, name).value

    assert m(halves, "fid") * 10 < m(noise, "fid")
    assert m(halves, "kid") * 10 < m(noise, "kid")
    for base in ("precision", "recall", "density", "coverage"):
        assert m(halves, base) > 0.8 > 0.2 > m(noise, base), base
    for definition in ("nearest_real", "random_pairs"):
        ssim = {r: find(read_results(records[r]), "ssim", definition).value for r in ("half_b", "noise")}
        assert ssim["half_b"] > ssim["noise"] + 0.1
