"""The benchmark scripts still run: each with its tiniest options, checking the printed ratio table.

These are not timings (the numbers are meaningless at this size); they keep benchmarks/ from
rotting when the modules, CLI or YAMLs they drive change.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pytest
import torch

# benchmarks/ is not an installed package: make the checkout importable under a bare `pytest` too
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import classifiers, latent_caching, ldm_fit_vs_plain_loop, ldm_overhead_parts, sampling  # noqa: E402

CASES = {
    "ldm_fit_vs_plain_loop": (ldm_fit_vs_plain_loop.main,
                              ["--num-per-class", "12", "--batch-size", "8", "--warmup-steps", "1", "--steps", "2",
                               "--repeats", "1", "--synthmed-args", "--trainer.enable_progress_bar false"]),
    "latent_caching": (latent_caching.main,
                       ["--num-per-class", "12", "--batch-size", "8", "--epochs", "2", "--repeats", "1",
                        "--synthmed-args", "--trainer.enable_progress_bar false"]),
    "ldm_overhead_parts": (ldm_overhead_parts.main,
                           ["--num-per-class", "12", "--iterations", "2", "--repeats", "1"]),
    "sampling": (sampling.main, ["--num-images", "2", "--ddim-steps", "2", "--train-timesteps", "4", "--repeats", "1"]),
    "classifiers": (classifiers.main,
                    ["--archs", "resnet18,mobilenet_v2", "--image-size", "32", "--batch-size", "4", "--per-class", "4",
                     "--warmup-steps", "1", "--steps", "1", "--loader-batches", "2", "--repeats", "1"]),
}


def markdown_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """(header cells, rows) of every Markdown table in `text`."""
    tables, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            cells = lambda s: [c.strip() for c in s.strip().strip("|").split("|")]  # noqa: E731
            rows = []
            for body in lines[i + 2:]:
                if not body.startswith("| "):
                    break
                rows.append(cells(body))
            tables.append((cells(line), rows))
    return tables


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def check_ldm_sides_match(tables) -> None:
    """The plain loop must train the YAML's U-Net on as many images, or the ratio compares different work."""
    header, rows = tables[0]
    params = [row[header.index("U-Net params")] for row in rows]
    images = [row[header.index("images in window")] for row in rows]
    assert len(rows) == 2 and params[0] == params[1] and int(params[0]) > 1_000_000, rows
    assert images[0] == images[1] == "16", rows  # 2 timed steps of batch 8 on both sides


EXTRA_CHECKS = {"ldm_fit_vs_plain_loop": check_ldm_sides_match}


@pytest.mark.parametrize("name", list(CASES))
def test_benchmark_prints_a_ratio_table(name, capsys, tmp_path, monkeypatch, restore_threads):
    monkeypatch.chdir(tmp_path)  # nothing may be written into the checkout
    main, argv = CASES[name]
    assert main(argv + ["--threads", "1"]) == 0
    out = capsys.readouterr().out
    report = out[out.index("### "):]
    assert f"`python -m benchmarks.{name} " in report and "load average (1/5/15 min) before:" in report
    tables = markdown_tables(report)
    ratios = [(header, rows) for header, rows in tables if any(h.startswith("ratio") for h in header)]
    assert ratios, f"no ratio column in {[h for h, _ in tables]}"
    for header, rows in ratios:
        assert rows, header
        for column in [j for j, h in enumerate(header) if h.startswith("ratio")]:
            for row in rows:
                value = float(re.match(r"[-\d.]+", row[column]).group())
                assert math.isfinite(value) and value > 0, (header, row)
    EXTRA_CHECKS.get(name, lambda tables: None)(tables)
    assert list(tmp_path.iterdir()) == [], "a benchmark left files in the working directory"


def test_bad_options_fail_with_a_clear_message(restore_threads):
    with pytest.raises(SystemExit, match="--archs: unknown"):
        classifiers.main(["--archs", "resnet19"])
    with pytest.raises(SystemExit, match="--epochs 1: needs >= 2"):
        latent_caching.main(["--epochs", "1"])
    with pytest.raises(SystemExit, match="--steps 0: must be >= 1"):
        ldm_fit_vs_plain_loop.main(["--steps", "0"])
