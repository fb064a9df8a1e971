"""Every shipped `synthmed reproduce` pipeline at `--scale smoke`, end to end, then rerun (all skipped).

The smoke scales make every stage run for seconds; on the real datasets the data loading alone would
take minutes (every stage decodes its whole tree), so the tests run each pipeline on a small copy of
its dataset made from ../shared/data (the first files of every class folder, the same real images),
and skip with a reason when ../shared/data lacks it. The quickstart needs no data. The numbers mean
nothing at this scale; what is checked is that every stage runs, that report.md has our rows beside
the paper's with real numbers in them, and that a rerun skips every stage.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from synthmed.pipeline.runner import main
from test_report_pictures import check_quickstart_report

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def tiny_copy(name: str, per_folder: int, dest: Path) -> Path:
    """The first `per_folder` images (sorted names, masks left out) of every folder of ../shared/data/<name>,
    plus its top-level CSV files (captions), under dest/<name>; skips the test when the dataset is absent."""
    source = SHARED_DATA / name
    if not source.is_dir():
        pytest.skip(f"{source} is absent (the shared copy of the {name} dataset)")
    target = dest / name
    if target.is_dir():
        return target
    for folder in sorted(p for p in [source, *source.rglob("*")] if p.is_dir()):
        images = sorted(f for f in folder.iterdir()
                        if f.suffix.lower() in IMAGE_SUFFIXES and "_mask" not in f.name)[:per_folder]
        for image in images:
            out = target / image.relative_to(source)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image, out)
    for csv in source.glob("*.csv"):
        shutil.copyfile(csv, target / csv.name)
    return target


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny_data")


def run_twice(pipeline: str, out: Path, capsys, *extra: str) -> str:
    """Run a shipped pipeline at --scale smoke, check the rerun skips every stage; return report.md."""
    path = REPO / "experiments" / pipeline / "pipeline.yaml"
    argv = [str(path), "--scale", "smoke", "--out", str(out), "--in-process", *extra]
    assert main(argv) == 0, f"{pipeline} smoke failed; see the output above"
    report = (out / "report.md").read_text()
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    stages = [line for line in printed if line.startswith("skip ")]
    assert stages and not any(line.startswith("=== stage") for line in printed), "a rerun ran a stage again"
    stage_table = report.partition("## Stages")[2].partition("Exact commands")[0]
    assert len(stages) == len([line for line in stage_table.splitlines() if line.startswith("| ")]) - 1
    assert printed[-1] == f"run_dir: {out}"
    return report


def number(cell: str) -> float:
    """The leading number of a report cell ('0.31 ± 0.02' -> 0.31); fails on text."""
    match = re.match(r"\s*(-?\d+(?:\.\d+)?(?:e[-+]?\d+)?)", cell)
    assert match, f"expected a number, got {cell!r}"
    return float(match.group(1))


def lines_with(report: str, prefix: str) -> list[list[str]]:
    """Cells of every table line that starts with `prefix`."""
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in report.splitlines()
            if line.startswith(prefix)]


@pytest.fixture(autouse=True)
def repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)  # the pipelines name their stage YAMLs relative to the repository root


def test_quickstart_smoke(tmp_path, capsys):
    out = tmp_path / "quickstart"
    report = run_twice("quickstart", out, capsys)
    for protocol in ("TSTR", "TRTR", "TR+S"):
        (row,) = lines_with(report, f"| {protocol} | resnet18 | ours")
        assert 0 <= number(row[9]) <= 100  # test acc %
    assert len(list((out / "synthetic" / "images").glob("*/*.png"))) == 3 * 4
    assert "fid[classifier:resnet18@" in report
    check_quickstart_report(report, out)  # test-set intervals, paired TSTR − TRTR, linked pictures (issue 12)


def test_nafi_smoke(tmp_path, data_dir, capsys):
    data = tiny_copy("brain_tumor_mri", 10, data_dir)  # Training + Testing, 4 classes: 80 images
    # 20 % of 80 images leaves ~4 per class for the generator; 30 % keeps every class in both CV folds
    report = run_twice("nafi2024_tstr", tmp_path / "nafi", capsys, "--data.root", str(data),
                       "--set", "real_fraction=0.3")
    for protocol in ("TSTR", "TRTR", "TR+S"):
        (row,) = lines_with(report, f"| {protocol} | resnet18 | ours ({protocol.lower().replace('+', '')}-resnet18)")
        assert 0 <= number(row[9]) <= 100
    assert "| TSTR | resnet18 | paper | 1 (single value) | 0.0179 |" in report


def test_abd_smoke(tmp_path, data_dir, capsys):
    data = tiny_copy("busi", 12, data_dir)  # 36 images + all_captions.csv
    report = run_twice("abd2024_ultrasound_ldm", tmp_path / "abd", capsys, "--data.root", str(data))
    (ours,) = lines_with(report, "| real | real | ours (classifier) | 1 run (no spread) |")
    assert number(ours[6]) > 0 and 0 <= number(ours[9]) <= 100  # test loss, test acc %
    assert "| real | real | paper | 1 (single value) | 0.0346 | not reported | 0.0868 | 97.47 |" in report
    (fid,) = lines_with(report, "| proposed | FID | 2.870 | `fid[classifier:resnet18@")
    assert fid[4].startswith("unreliable: ") and "feature dimensions" in fid[4]  # smoke sets are far below 512 images
    ssim = lines_with(report, "| proposed | SSIM | 0.4728 (Table 1); 0.9923 (abstract) |")
    assert [row[3] for row in ssim] == ["`ssim[nearest_real]`", "`ssim[random_pairs]`"]
    assert all(-1 <= number(row[4]) <= 1 for row in ssim)
    assert ("| proposed | CLIP | 0.209 (cosine scale; = 20.9 on ours, 100 × cosine) | `clip_score` | "
            "not computed: no local weights") in report  # the paper's cosine vs torchmetrics' 100 x cosine
    assert "| proposed | LPIPS | 0.92 | `lpips` | not computed: no local weights" in report
    assert "| all (evaluate_inception) |" in report and "supply torch-fidelity's weights-inception" in report


def test_nguyen_smoke(tmp_path, data_dir, capsys):
    data = tiny_copy("sars_cov2_ct", 20, data_dir)  # 2 classes: 40 images
    report = run_twice("nguyen2023_unet_ablation", tmp_path / "nguyen", capsys, "--data.root", str(data))
    paper = {"encoder_decoder": "548.73", "unet_time_once": "73.234", "unet_time_first_half": "76.294",
             "unet_time_every_stage": "45.627"}
    for variant, fid in paper.items():
        (row,) = lines_with(report, f"| {variant} | FID | {fid} | `fid[classifier:resnet18@")
        assert row[4].startswith("unreliable: ") and "feature dimensions" in row[4]
        assert lines_with(report, f"| {variant} | all (evaluate_inception-{variant}) | FID {fid} |")
        assert len(list((tmp_path / "nguyen" / f"samples-{variant}" / "images").glob("*/*.png"))) == 2 * 3


def test_team29_smoke_skips_absent_modalities(tmp_path, data_dir, capsys):
    root = tmp_path / "two_modalities"  # ultrasound and CT present, X-ray and MRI absent
    root.mkdir()
    for name in ("busi", "brain_stroke_ct"):
        shutil.copytree(tiny_copy(name, 12, data_dir), root / name)
    report = run_twice("team29_ddim", tmp_path / "team29", capsys, "--data.root", str(root))
    for modality, ssim in (("ultrasound", "0.7664"), ("ct", "0.4056")):
        rows = lines_with(report, f"| {modality} | SSIM | {ssim} |")
        assert [row[3] for row in rows] == ["`ssim[nearest_real]`", "`ssim[random_pairs]`"]
        assert all(-1 <= number(row[4]) <= 1 for row in rows)
    for modality, ssim, dataset in (("xray", "0.4600", "chest_xray"), ("mri", "0.4172", "brain_tumor_mri")):
        (row,) = lines_with(report, f"| {modality} | all (evaluate-{modality}) | SSIM {ssim} |")
        assert f"{root / dataset} absent — supply {dataset}" in row[4]
