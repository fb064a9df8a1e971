"""`synthmed reproduce`: pipeline loading/references, a tiny classifier-only run, skip and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from synthmed.pipeline_stages import PipelineError, load_pipeline
from synthmed.reproduce import main

REPO = Path(__file__).resolve().parent.parent
TINY_TRAINER = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
                "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def tiny_pipeline(tmp: Path) -> dict:
    """make-phantoms (train / test trees) -> 2-fold cv on real -> evaluate with the cv classifier."""
    return {
        "name": "tiny",
        "params": {"per_class": 12, "size": 24},
        "paper": {"source": "a made-up paper row for the test",
                  "rows": [{"protocol": "TRTR", "arch": "resnet18", "test/acc": 50.0}]},
        "stages": [
            {"name": "real_train", "verb": "make-phantoms",
             "args": ["--per-class", "${params.per_class}", "--size", "${params.size}", "--seed", 0]},
            {"name": "real_test", "verb": "make-phantoms",
             "args": ["--per-class", "${params.per_class}", "--size", "${params.size}", "--seed", 1]},
            {"name": "trtr", "verb": "cv", "row": {"protocol": "TRTR", "arch": "resnet18"},
             "config": [str(REPO / "experiments/quickstart/classifier.yaml"),
                        {"data": {"class_path": "datamodules.image_folder.ImageFolderDataModule",
                                  "init_args": {"root": "${stages.real_train.out}",
                                                "test_root": "${stages.real_test.out}",
                                                "image_size": "${params.size}", "channels": 1, "batch_size": 8,
                                                "seed": 0}}}],
             "args": ["--folds", 2, *TINY_TRAINER]},
            {"name": "evaluate", "verb": "evaluate",
             "args": ["--real", "${stages.real_test.out}", "--fake", "${stages.real_train.out}",
                      "--extractor", "classifier:${stages.trtr.best_ckpt}"]},
        ],
    }


def write(tmp: Path, spec: dict, name: str = "pipeline.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Run the tiny pipeline once (in-process: one import of Lightning for the whole module)."""
    tmp = tmp_path_factory.mktemp("reproduce")
    path, out = write(tmp, tiny_pipeline(tmp)), tmp / "out"
    code = main([str(path), "--out", str(out), "--in-process"])
    return code, path, out


def test_tiny_pipeline_writes_report_with_our_and_paper_rows(tiny_run, capsys):
    code, _, out = tiny_run
    assert code == 0
    report = (out / "report.md").read_text()
    assert "| TRTR | resnet18 | ours (trtr) | 2 folds |" in report
    ours = next(line for line in report.splitlines() if "ours (trtr)" in line)
    cells = [c.strip() for c in ours.strip("|").split("|")]
    assert len(cells) == 13 and all("±" in c for c in cells[4:])  # 9 metric columns, mean ± sd
    test_acc = float(cells[9].split("±")[0])
    summary = (out / "trtr" / "cv" / "cv_summary.csv").read_text().splitlines()
    header, mean = summary[0].split(","), next(r for r in summary if r.startswith("mean")).split(",")
    assert test_acc == pytest.approx(100 * float(mean[header.index("test/acc")]), abs=0.006)
    paper = next(line for line in report.splitlines() if "| paper |" in line)
    assert "| 50 |" in paper and "not reported" in paper
    assert "fid[classifier:resnet18@" in report and "synthmed evaluate --real" in report
    state = json.loads((out / "pipeline_state.json").read_text())
    assert {s: r["status"] for s, r in state["stages"].items()} == dict.fromkeys(
        ["real_train", "real_test", "trtr", "evaluate"], "complete")


def test_rerun_skips_every_stage(tiny_run, capsys):
    _, path, out = tiny_run
    summary = out / "trtr" / "cv" / "cv_summary.csv"
    before = summary.stat().st_mtime_ns
    capsys.readouterr()
    assert main([str(path), "--out", str(out), "--in-process"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    for stage in ("real_train", "real_test", "trtr", "evaluate"):
        assert f"skip {stage}: complete" in printed
    assert not any(line.startswith("=== stage") for line in printed)
    assert printed[-1] == f"run_dir: {out}"
    assert summary.stat().st_mtime_ns == before


def test_failed_and_killed_stage_is_rerun(tiny_run, tmp_path, capsys):
    _, _, first = tiny_run
    ckpt = next((first / "trtr" / "cv").glob("fold_*/checkpoints/*.ckpt"))
    spec = {"name": "resume", "params": {"k": 0, "ckpt": str(ckpt)},
            "stages": [{"name": "fake", "verb": "make-phantoms", "args": ["--per-class", 6, "--size", 24]},
                       {"name": "evaluate", "verb": "evaluate",
                        "args": ["--real", str(first / "real_test"), "--fake", "${stages.fake.out}",
                                 "--extractor", "classifier:${params.ckpt}", "--k", "${params.k}"]}]}
    path, out = write(tmp_path, spec), tmp_path / "out"
    assert main([str(path), "--out", str(out), "--in-process"]) == 1  # --k 0 is refused by evaluate
    state = json.loads((out / "pipeline_state.json").read_text())
    assert state["stages"]["fake"]["status"] == "complete" and state["stages"]["evaluate"]["status"] == "failed"
    (out / "evaluate").mkdir()
    (out / "evaluate" / "partial.txt").write_text("left by a killed run")  # no evaluation.json
    capsys.readouterr()
    assert main([str(path), "--out", str(out), "--in-process", "--set", "k=2"]) == 0
    printed = capsys.readouterr().out
    assert "skip fake: complete" in printed and "=== stage 2/2 evaluate" in printed
    assert (out / "evaluate" / "evaluation.json").is_file()
    aside = list(out.glob("evaluate.incomplete-*"))
    assert len(aside) == 1 and (aside[0] / "partial.txt").is_file()  # moved, never deleted


def _error(tmp_path, capsys, spec, *extra) -> str:
    path = write(tmp_path, spec)
    assert main([str(path), "--out", str(tmp_path / "out"), "--dry-run", *extra]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    return err


def _two_stages(ref: str) -> dict:
    return {"name": "bad", "params": {"size": 24},
            "stages": [{"name": "first", "verb": "make-phantoms", "args": ["--per-class", 2]},
                       {"name": "second", "verb": "evaluate", "args": ["--real", ref, "--fake", ref]}]}


def test_unknown_stage_reference_names_file_and_stage(tmp_path, capsys):
    err = _error(tmp_path, capsys, _two_stages("${stages.nope.out}"))
    assert "no stage named 'nope'" in err and "stage second" in err


def test_later_stage_and_unknown_output_are_refused(tmp_path, capsys):
    spec = _two_stages("${stages.first.out}")
    spec["stages"][0]["args"] = ["--real", "${stages.second.out}"]
    assert "runs later" in _error(tmp_path, capsys, spec)
    assert "has outputs" in _error(tmp_path, capsys, _two_stages("${stages.first.best_ckpt}"))


def test_missing_param_names_file_and_param(tmp_path, capsys):
    err = _error(tmp_path, capsys, _two_stages("${params.data_root}"))
    assert "no param 'data_root'" in err and "--set data_root=" in err
    assert "no such param" in _error(tmp_path, capsys, _two_stages("x"), "--set", "nope=1")


def test_params_scales_overrides_and_matrix(tmp_path):
    spec = {"name": "m", "params": {"archs": ["a"], "data_root": "d", "folds": 5},
            "scales": {"mini": {"archs": ["a", "b"], "folds": 2}, "paper": {}},
            "stages": [{"name": "cls", "verb": "make-phantoms", "matrix": {"arch": "${params.archs}"},
                        "row": {"arch": "${matrix.arch}"},
                        "args": ["--x", "${matrix.arch}", "--f", "${params.folds}", "--r", "${params.data_root}/x"]}]}
    path = write(tmp_path, spec)
    pipe = load_pipeline(path, "mini", {"data_root": "/data", "folds": 3})
    assert [s.name for s in pipe.stages] == ["cls-a", "cls-b"]
    assert pipe.stages[1].args == ["--x", "b", "--f", "3", "--r", "/data/x"] and pipe.stages[1].row == {"arch": "b"}
    assert [s.name for s in load_pipeline(path, "paper", {}).stages] == ["cls-a"]
    with pytest.raises(PipelineError, match="--scale huge is not defined"):
        load_pipeline(path, "huge", {})


def test_data_root_option_is_the_data_root_param(tmp_path, capsys):
    spec = _two_stages("${params.data_root}")
    spec["params"]["data_root"] = "default"
    path = write(tmp_path, spec)
    assert main([str(path), "--out", str(tmp_path / "o"), "--dry-run", "--data.root", "/my/data"]) == 0
    assert "--real /my/data --fake /my/data" in capsys.readouterr().out


@pytest.mark.parametrize("pipeline,scales", [("quickstart", ["mini", "smoke"]),
                                             ("nafi2024_tstr", ["mini", "paper", "smoke"])])
def test_shipped_pipelines_resolve(pipeline, scales, tmp_path, capsys):
    path = REPO / "experiments" / pipeline / "pipeline.yaml"
    for scale in scales:
        pipe = load_pipeline(path, scale, {})
        assert {s.row["protocol"] for s in pipe.stages if s.row} == {"TSTR", "TRTR", "TR+S"}
        assert main([str(path), "--scale", scale, "--out", str(tmp_path / scale), "--dry-run"]) == 0
        assert "${" not in capsys.readouterr().out
    if pipeline == "nafi2024_tstr":
        paper = load_pipeline(path, "paper", {})
        assert len([s for s in paper.stages if s.row]) == 3 * 8 and len(paper.paper["rows"]) == 8


@pytest.mark.slow
def test_quickstart_smoke_end_to_end(tmp_path, capsys):
    path = REPO / "experiments" / "quickstart" / "pipeline.yaml"
    out = tmp_path / "qs"
    assert main([str(path), "--scale", "smoke", "--out", str(out), "--in-process"]) == 0
    report = (out / "report.md").read_text()
    for protocol in ("TSTR", "TRTR", "TR+S"):
        assert f"| {protocol} | resnet18 | ours" in report
    assert len(list((out / "synthetic" / "images").glob("*/*.png"))) == 3 * 4
    capsys.readouterr()
    assert main([str(path), "--scale", "smoke", "--out", str(out), "--in-process"]) == 0
    assert capsys.readouterr().out.count(": complete") == 9


@pytest.mark.slow
def test_nafi_smoke_on_brain_tumor_mri(tmp_path, capsys):
    data = REPO.parent / "shared" / "data" / "brain_tumor_mri"
    if not data.is_dir():
        pytest.skip(f"{data} is absent (the seed-004 Brain Tumor MRI copy)")
    path, out = REPO / "experiments" / "nafi2024_tstr" / "pipeline.yaml", tmp_path / "nafi"
    assert main([str(path), "--scale", "smoke", "--data.root", str(data), "--out", str(out), "--in-process"]) == 0
    report = (out / "report.md").read_text()
    for protocol in ("TSTR", "TRTR", "TR+S"):
        assert f"| {protocol} | resnet18 | ours ({protocol.lower().replace('+', '')}-resnet18)" in report
    assert "| TSTR | resnet18 | paper | 1 (single value) | 0.0179 |" in report
