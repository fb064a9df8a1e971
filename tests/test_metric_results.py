"""Typed metric results (issue 11 item 6) and sample-size honesty (issue 12 item 2).

One dataclass, one reader (also of schema-1 files), one renderer; FID from fewer images than
feature dimensions is marked unreliable and never printed; KID is the whole-set unbiased estimate
(equal to torchmetrics'), and every metric carries n and a seeded bootstrap interval.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchmetrics.image.kid import KernelInceptionDistance

from datamodules.phantom_generator import render_batch, write_phantom_tree
from synthmed.evaluate import bootstrap
from synthmed.evaluate.cli import main
from synthmed.evaluate.degenerate import degenerate_result
from synthmed.evaluate.extractors import PrecomputedFeatures
from synthmed.evaluate.fidelity import fid_from_features, fid_result, frechet_from_counts, kid_from_features, kid_result
from synthmed.evaluate.report import format_value, json_safe, results_table
from synthmed.evaluate.results import MetricResult, find, from_json, not_computed, read_results
from console_table_helpers import read_console_table
from test_evaluate_cli import save_classifier_ckpt


def gaussian(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + shift


def test_results_round_trip_through_strict_json_and_one_reader():
    results = [
        MetricResult("kid", "classifier:resnet18@0123abcd", 0.012, 180, 300, False, (0.01, 0.014),
                     definition="KID", extra={"bootstrap_rounds": 200}),
        MetricResult("psnr", "nearest_real", math.inf, 24, 24, True, (math.inf, math.inf)),
        MetricResult("precision", "classifier:resnet18@0123abcd", 0.9, 60, 100, True, (0.8, 0.95), class_name="benign"),
        not_computed("lpips", "", "no local weights (pass --lpips-weights)", higher_is_better=False),
    ]
    text = json.dumps(json_safe({"metrics": [r.to_json() for r in results]}), allow_nan=False)
    assert read_results(json.loads(text)) == results
    assert find(results, "precision", class_name="benign").value == 0.9
    assert find(results, "precision") is None  # pooled only unless a class is asked for


def test_schema_1_records_stay_readable():
    old = {"inputs": {"real": {"n_images": 36}, "fake": {"n_images": 12}},
           "metrics": {"fid[classifier:resnet18@1a2b3c4d]": 41.5, "psnr[nearest_real]": "inf",
                       "lpips": {"computed": False, "reason": "not computed: no local weights"}}}
    fid, psnr, lpips = read_results(old)
    assert (fid.name, fid.space, fid.value, fid.n_real, fid.n_fake, fid.higher_is_better) == (
        "fid", "classifier:resnet18@1a2b3c4d", 41.5, 36, 12, False)
    assert psnr.value == math.inf and psnr.space == "nearest_real"
    assert lpips.value is None and lpips.reason == "not computed: no local weights"


def test_renderer_prints_reasons_for_unreliable_and_missing_values_never_the_number():
    unreliable = MetricResult("fid", "x", 123.456, 20, 20, False, reliable=False,
                              reason="unreliable: 20 images < 512 feature dimensions")
    ok = MetricResult("kid", "x", 0.0123456, 20, 20, False, (0.001, 0.02))
    assert format_value(unreliable) == "unreliable: 20 images < 512 feature dimensions"
    assert format_value(ok) == "0.01235 [0.001, 0.02]"
    table = results_table([unreliable, ok], lead_headers=["stage"], lead_cells=[["a"], ["b"]])
    assert "123.4" not in table
    assert "| a | `fid[x]` | all | unreliable: 20 images < 512 feature dimensions | 20 / 20 | lower |" in table
    assert "| b | `kid[x]` | all | 0.01235 [0.001, 0.02] | 20 / 20 | lower |" in table


def test_kid_is_torchmetrics_kid_on_the_whole_sets():
    real, fake = gaussian(40, 6, 0), gaussian(40, 6, 1, shift=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=PrecomputedFeatures(6), subsets=1, subset_size=40)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    assert kid_from_features(real, fake) == pytest.approx(float(metric.compute()[0]), rel=1e-9)


def test_fid_is_unreliable_below_the_feature_dimension_and_has_an_interval_above_it():
    small = fid_result(gaussian(30, 64, 0), gaussian(20, 64, 1), "f", rounds=20, seed=0)
    assert not small.reliable and small.interval is None and "20 images < 64 feature dimensions" in small.reason
    real, fake = gaussian(200, 8, 0), gaussian(150, 8, 1, shift=0.5)
    big = fid_result(real, fake, "f", rounds=30, seed=0)
    assert big.reliable and big.value == pytest.approx(fid_from_features(real, fake))
    ones_r, ones_f = torch.ones(200, dtype=torch.float64), torch.ones(150, dtype=torch.float64)
    assert frechet_from_counts(real.double(), fake.double(), ones_r, ones_f) == pytest.approx(big.value, rel=1e-6)
    assert big.interval[0] < big.value < big.interval[1]
    assert fid_result(real, fake, "f", rounds=30, seed=0).interval == big.interval  # seeded


def test_kid_interval_covers_zero_for_one_distribution_and_excludes_it_for_two():
    real = gaussian(60, 8, 0)
    same = kid_result(real, gaussian(60, 8, 1), "f", rounds=200, seed=0)
    other = kid_result(real, gaussian(60, 8, 2, shift=1.0), "f", rounds=200, seed=0)
    assert same.interval[0] < 0 < same.interval[1]
    assert 0 < other.interval[0] < other.value < other.interval[1]
    assert (same.n_real, same.n_fake, same.higher_is_better) == (60, 60, False)


def test_mean_interval_is_seeded_and_keeps_infinity():
    v = torch.tensor([1.0, 2.0, 3.0, 4.0, math.inf])
    lo, hi = bootstrap.mean_interval(v, 200, seed=0, salt=0)
    assert hi == math.inf and math.isfinite(lo)
    assert bootstrap.mean_interval(v[:4], 200, 0, 0) == bootstrap.mean_interval(v[:4], 200, 0, 0)


def test_degenerate_fraction_counts_white_and_constant_images():
    rng = np.random.default_rng(0)
    good = torch.from_numpy(rng.integers(0, 256, (8, 1, 16, 16), dtype=np.uint8))
    white, grey = torch.full((1, 1, 16, 16), 255, dtype=torch.uint8), torch.full((1, 1, 16, 16), 128, dtype=torch.uint8)
    result = degenerate_result(torch.cat([good, white, grey]), good, rounds=50, seed=0)
    assert result.value == pytest.approx(0.2) and result.extra["saturated"] == 1 and result.extra["near_constant"] == 2  # white is both
    assert result.extra["real_fraction"] == 0.0 and result.interval[0] <= 0.2 <= result.interval[1]


def test_evaluate_on_20_fakes_prints_fid_as_unreliable_and_kid_with_its_interval(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt = save_classifier_ckpt(tmp_path / "clf.ckpt")
    real = write_phantom_tree(tmp_path / "real", 10, 32, seed=0)
    fake = tmp_path / "fake"
    fake.mkdir()
    images, _ = render_batch([i % 3 for i in range(20)], 32, list(range(1000, 1020)))
    for i, image in enumerate(images):
        Image.fromarray(image).save(fake / f"{i}.png")
    assert main(["--real", str(real), "--fake", str(fake), "--extractor", f"classifier:{ckpt}",
                 "--bootstrap-rounds", "50"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 120  # console table fitted; evaluation.md has every column
    rows = read_console_table(out)  # metric | class | value | n, a long reason wrapped onto more lines
    (fid_row,) = [row for row in rows if row[0].startswith("`fid[") and row[1] == "all"]
    assert "unreliable: 20 images < 512 feature dimensions (n_real 30, n_fake 20)" in fid_row[2] and "read KID" in fid_row[2]
    (kid_row,) = [row for row in rows if row[0].startswith("`kid[") and row[1] == "all"]
    value_cell = kid_row[2]
    assert value_cell.count("[") == 1 and value_cell.endswith("]") and kid_row[3] == "30 / 20"
    record = json.loads((Path(out.strip().splitlines()[-1].removeprefix("run_dir: ")) / "evaluation.json").read_text())
    assert record["schema_version"] == 2
    for item in record["metrics"]:
        result = from_json(item)
        if result.computed and result.reliable:
            assert result.interval is not None and result.n_fake == 20, result.label
            assert result.n_real == 30 or result.name == "clip_score", result.label
