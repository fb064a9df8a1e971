"""`synthmed reproduce`: pipeline loading/references, a tiny classifier-only run, skip and resume."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from synthmed.evaluate.report import format_value
from synthmed.evaluate.results import find, read_results
from synthmed.pipeline.spec import PipelineError, load_pipeline
from synthmed.pipeline.runner import main

REPO = Path(__file__).resolve().parent.parent
TINY_TRAINER = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
                "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def tiny_pipeline(tmp: Path) -> dict:
    """make-phantoms (train / test trees) -> 2-fold cv on real -> evaluate with the cv classifier."""
    return {
        "name": "tiny",
        "params": {"per_class": 12, "size": 24},
        "paper": {"source": "a made-up paper row for the test",
                  "rows": [{"protocol": "TRTR", "arch": "resnet18", "test/acc": 50.0}],
                  "metric_rows": [{"sets": "train-vs-test", "SSIM": "0.50"}]},
        "report": {"metrics": {"SSIM": ["ssim"], "FID": ["fid"]}},
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
            {"name": "evaluate", "verb": "evaluate", "row": {"sets": "train-vs-test"},
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
    assert len(cells) == 14 and all("±" in c for c in cells[4:13])  # 9 metric columns, mean ± sd
    assert re.fullmatch(r"[\d.]+ \[[\d.]+, [\d.]+\] \(n \d+\)", cells[13])  # test-set accuracy [95 % CI] (n images)
    test_acc = float(cells[9].split("±")[0])
    summary = (out / "trtr" / "cv" / "cv_summary.csv").read_text().splitlines()
    header, mean = summary[0].split(","), next(r for r in summary if r.startswith("mean")).split(",")
    assert test_acc == pytest.approx(100 * float(mean[header.index("test/acc")]), abs=0.006)
    paper = next(line for line in report.splitlines() if "| paper |" in line)
    assert "| 50 |" in paper and "not reported" in paper
    assert "fid[classifier:resnet18@" in report and "synthmed evaluate --real" in report
    results = read_results(json.loads((out / "evaluate" / "evaluation.json").read_text()))
    ssim = [line for line in report.splitlines() if line.startswith("| train-vs-test | SSIM | 0.50 |")]
    assert ssim == [f"| train-vs-test | SSIM | 0.50 | `ssim[{d}]` | {format_value(find(results, 'ssim', d))} | 36 / 36 |"
                    for d in ("nearest_real", "random_pairs")]
    assert all(" [" in line for line in ssim)  # each value with its 95 % interval
    (fid,) = [line for line in report.splitlines() if line.startswith("| train-vs-test | FID | not reported |")]
    assert "| `fid[classifier:resnet18@" in fid and "unreliable: 36 images < 512 feature dimensions" in fid
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
    table = [line for line in printed if line.startswith("|")]  # the closing table fits 120 columns (issue 16)
    assert any("ours (trtr)" in line for line in table) and max(map(len, table)) <= 120
    assert printed[-1] == f"run_dir: {out}"
    assert summary.stat().st_mtime_ns == before


def test_rerun_survives_deleted_upstream_checkpoints(tiny_run, capsys):
    """Checkpoints of a finished stage deleted to free disk: later finished stages are still
    skipped (with a note), and a stage that needs them says which file is missing."""
    _, path, out = tiny_run
    moved = {ckpt: ckpt.with_suffix(".moved") for ckpt in (out / "trtr").rglob("*.ckpt")}
    evaluate = out / "evaluate"
    try:
        for ckpt, aside in moved.items():
            ckpt.rename(aside)
        capsys.readouterr()
        assert main([str(path), "--out", str(out), "--in-process"]) == 0
        printed = capsys.readouterr().out
        assert "skip evaluate: complete" in printed
        assert "note: evaluate's command cannot be rebuilt" in printed and "holds no checkpoint" in printed
        evaluate.rename(out / "evaluate.moved")
        assert main([str(path), "--out", str(out), "--in-process"]) == 2
        err = capsys.readouterr().err
        assert "trtr/cv/fold_" in err and "holds no checkpoint" in err
    finally:  # the module's other tests share this run
        for ckpt, aside in moved.items():
            aside.rename(ckpt)
        if (out / "evaluate.moved").exists():
            assert not evaluate.exists()  # the refused rerun created nothing
            (out / "evaluate.moved").rename(evaluate)


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


SHIPPED_ROWS = {  # pipeline -> (scales, the set of (row key, value) naming its report lines)
    "quickstart": (["mini", "smoke"], {("protocol", p) for p in ("TSTR", "TRTR", "TR+S")}),
    "nafi2024_tstr": (["mini", "paper", "smoke"], {("protocol", p) for p in ("TSTR", "TRTR", "TR+S")}),
    "abd2024_ultrasound_ldm": (["mini", "paper", "smoke"], {("trained_on", "real"), ("method", "proposed")}),
    "nguyen2023_unet_ablation": (["mini", "paper", "smoke"], {("variant", v) for v in (
        "encoder_decoder", "unet_time_once", "unet_time_first_half", "unet_time_every_stage")}),
    "team29_ddim": (["mini", "paper", "smoke"], {("modality", m) for m in ("xray", "mri", "ultrasound", "ct")}),
}


@pytest.mark.parametrize("pipeline", sorted(SHIPPED_ROWS))
def test_shipped_pipelines_resolve(pipeline, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    path = REPO / "experiments" / pipeline / "pipeline.yaml"
    scales, rows = SHIPPED_ROWS[pipeline]
    for scale in scales:
        pipe = load_pipeline(path, scale, {})
        found = {(k, v) for s in pipe.stages if s.row for k, v in s.row.items() if k in {k for k, _ in rows}}
        assert found == rows
        assert main([str(path), "--scale", scale, "--out", str(tmp_path / scale), "--dry-run"]) == 0
        assert "${" not in capsys.readouterr().out
    if pipeline == "nafi2024_tstr":
        paper = load_pipeline(path, "paper", {})
        assert len([s for s in paper.stages if s.row]) == 3 * 8 and len(paper.paper["rows"]) == 8


def test_shipped_paper_numbers_are_the_seed_tables():
    """The paper rows as printed in the seeds (strings keep the printed digits, e.g. 2.870)."""
    def load(name):
        return load_pipeline(REPO / "experiments" / name / "pipeline.yaml", "paper", {}).paper

    abd = load("abd2024_ultrasound_ldm")
    assert abd["metric_rows"] == [{"method": "proposed", "FID": "2.870", "CLIP": "0.209 (cosine scale; = 20.9 on ours, 100 × cosine)",
                                   "SSIM": "0.4728 (Table 1); 0.9923 (abstract)", "LPIPS": "0.92"}]
    assert abd["rows"] == [{"trained_on": "real", "tested_on": "real", "train/loss": "0.0346", "test/loss": "0.0868",
                            "train/acc": "97.47", "test/acc": "97.00"}]
    assert {r["variant"]: r["FID"] for r in load("nguyen2023_unet_ablation")["metric_rows"]} == {
        "encoder_decoder": "548.73", "unet_time_once": "73.234", "unet_time_first_half": "76.294",
        "unet_time_every_stage": "45.627"}
    assert {r["modality"]: r["SSIM"] for r in load("team29_ddim")["metric_rows"]} == {
        "xray": "0.4600", "mri": "0.4172", "ultrasound": "0.7664", "ct": "0.4056"}


def _requires_pipeline(tmp: Path) -> dict:
    """make-phantoms per kind (matrix); kind b needs a folder that starts absent; `judge` needs make-b's output."""
    return {"name": "req", "params": {"kinds": ["a", "b"], "a_root": str(tmp), "b_root": str(tmp / "b_data"),
                                      "a_size": 16, "b_size": 20},
            "stages": [
                {"name": "make", "verb": "make-phantoms", "matrix": {"kind": "${params.kinds}"},
                 "requires": [{"path": "${params.${matrix.kind}_root}", "supply": "the ${matrix.kind} dataset"}],
                 "args": [["--per-class", 1], "--size", "${params.${matrix.kind}_size}"]},
                {"name": "judge", "verb": "evaluate",
                 "args": ["--real", "${stages.make-a.out}", "--fake", "${stages.make-b.out}",
                          "--extractor", "inception"]},
                {"name": "clf", "verb": "cv", "row": {"protocol": "TRTR"},
                 "config": [str(REPO / "experiments/quickstart/classifier.yaml")],
                 "args": ["--data.init_args.root", "${stages.make-b.out}"]}]}


def test_requires_skips_stage_and_dependents(tmp_path, capsys):
    path, out = write(tmp_path, _requires_pipeline(tmp_path)), tmp_path / "out"
    pipe = load_pipeline(path, "mini", {})
    assert [s.name for s in pipe.stages] == ["make-a", "make-b", "judge", "clf"]
    assert pipe.stages[1].args == ["--per-class", "1", "--size", "20"]  # nested param ref + flattened alias list
    assert pipe.stages[1].requires == [{"path": str(tmp_path / "b_data"), "supply": "the b dataset"}]
    assert main([str(path), "--out", str(out), "--in-process"]) == 0
    printed = capsys.readouterr().out
    reason = f"{tmp_path / 'b_data'} absent — supply the b dataset"
    assert f"skip make-b: {reason}" in printed and f"skip judge: needs stage make-b, skipped: {reason}" in printed
    assert "=== stage 1/4 make-a" in printed and "=== stage" not in printed.split("make-a", 2)[-1]
    state = json.loads((out / "pipeline_state.json").read_text())
    assert {k: v["status"] for k, v in state["stages"].items()} == {"make-a": "complete", "make-b": "skipped",
                                                                     "judge": "skipped", "clf": "skipped"}
    report = (out / "report.md").read_text()
    assert f"| make-b | make-phantoms | skipped: {reason} |" in report
    assert "### judge" in report and f"Skipped: needs stage make-b, skipped: {reason}." in report
    assert f"| TRTR | ours (clf) | 0 runs | skipped: needs stage make-b, skipped: {reason} | - |" in report
    assert (out / "make-a").is_dir() and not (out / "make-b").exists()


def test_skipped_stage_runs_once_its_data_appears(tmp_path, capsys):
    spec = _requires_pipeline(tmp_path)
    spec["stages"] = spec["stages"][:1]
    path, out = write(tmp_path, spec), tmp_path / "out"
    assert main([str(path), "--out", str(out), "--in-process"]) == 0
    capsys.readouterr()
    assert main([str(path), "--out", str(out), "--in-process"]) == 0  # still absent: nothing runs
    printed = capsys.readouterr().out
    assert "=== stage" not in printed and "skip make-b: " in printed and "skip make-a: complete" in printed
    (tmp_path / "b_data").mkdir()
    assert main([str(path), "--out", str(out), "--in-process"]) == 0
    printed = capsys.readouterr().out
    assert "skip make-a: complete" in printed and "=== stage 2/2 make-b" in printed
    assert len([p for p in (out / "make-b").glob("*/*.png") if "_mask" not in p.name]) == 3
    assert "| make-b | make-phantoms | complete |" in (out / "report.md").read_text()


def test_requires_path_may_not_use_stage_outputs(tmp_path, capsys):
    spec = _requires_pipeline(tmp_path)
    spec["stages"][1]["requires"] = ["${stages.make-a.out}"]
    assert "only ${params.*} and ${matrix.*}" in _error(tmp_path, capsys, spec)


def test_evaluate_rows_need_report_metrics(tmp_path, capsys):
    spec = _two_stages("${stages.first.out}")
    spec["stages"][1]["row"] = {"variant": "x"}
    assert "need `report: metrics:`" in _error(tmp_path, capsys, spec)
