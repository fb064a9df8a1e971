"""Pipeline stage kinds (synthmed/pipeline/kinds.py): markers, outputs, argv and resume rule per kind,
and that a new kind is one class plus one registry line (loader, runner and report need no edit)."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from synthmed.pipeline.errors import PipelineError
from synthmed.pipeline.kinds import STAGE_KINDS, StageKind, kind_of
from synthmed.pipeline.runner import main as reproduce
from synthmed.pipeline.spec import Stage, load_pipeline


def stage(name: str, verb: str) -> Stage:
    return Stage(name=name, verb=verb, config=[], args=[])


def test_every_kind_names_its_outputs_and_locations(tmp_path):
    assert list(STAGE_KINDS) == ["fit", "test", "predict", "cv", "evaluate", "make-phantoms", *list(STAGE_KINDS)[6:]]
    for verb, cls in STAGE_KINDS.items():
        kind = cls(tmp_path, stage("s", verb))
        assert cls.verb == verb and {"dir", "run_dir"} <= set(cls.outputs)
        assert kind.dir == tmp_path / "s" and kind.run_dir.is_relative_to(kind.dir)
        assert not kind.is_complete()  # nothing written yet
    assert kind_of(tmp_path, stage("s", "fit")).run_dir == tmp_path / "s" / "run"
    assert kind_of(tmp_path, stage("s", "cv")).run_dir == tmp_path / "s" / "cv"
    assert kind_of(tmp_path, stage("s", "predict")).output("out") == str(tmp_path / "s" / "images")


def test_completion_markers(tmp_path):
    fit, predict = kind_of(tmp_path, stage("f", "fit")), kind_of(tmp_path, stage("p", "predict"))
    cv, evaluate = kind_of(tmp_path, stage("c", "cv")), kind_of(tmp_path, stage("e", "evaluate"))
    phantoms = kind_of(tmp_path, stage("m", "make-phantoms"))
    for kind, marker in ((fit, "metrics.json"), (predict, "metrics.json"), (cv, "cv_summary.csv"),
                         (evaluate, "evaluation.json"), (phantoms, "benign/x.png")):
        path = kind.run_dir / marker
        path.parent.mkdir(parents=True)
        path.write_text("{}")
    assert fit.is_complete() and cv.is_complete() and evaluate.is_complete() and phantoms.is_complete()
    assert not predict.is_complete()  # also needs its images' metadata.csv
    (predict.out_dir).mkdir()
    (predict.out_dir / "metadata.csv").write_text("file_name\n")
    assert predict.is_complete()


def test_resume_rule_moves_only_restartable_stages_aside(tmp_path):
    for verb, moved in (("fit", True), ("test", True), ("evaluate", True), ("predict", False), ("cv", False),
                        ("make-phantoms", False)):
        kind = kind_of(tmp_path, stage(f"s-{verb}", verb))
        kind.dir.mkdir()
        (kind.dir / "partial").write_text("x")
        target = kind.prepare_rerun()
        assert (target is not None) == moved, verb
        assert kind.dir.exists() != moved
        if moved:
            assert target.name.startswith(f"s-{verb}.incomplete-") and (target / "partial").is_file()


def test_argv_per_kind(tmp_path):
    out = tmp_path
    cfg = ["--config", "a.yaml"]
    assert kind_of(out, stage("f", "fit")).argv(cfg, ["--x", "1"]) == [
        "fit", *cfg, "--x", "1", "--logs_root", str(out), "--experiment", "f", "--run_version", "run"]
    assert kind_of(out, stage("p", "predict")).argv(cfg, [])[-2:] == ["--data.init_args.output_dir",
                                                                      str(out / "p" / "images")]
    assert kind_of(out, stage("c", "cv")).argv(cfg, ["--folds", "2"]) == [
        "cv", *cfg, "--folds", "2", "--logs_root", str(out), "--experiment", "c", "--name", "cv"]
    assert kind_of(out, stage("e", "evaluate")).argv([], ["--real", "r"]) == ["evaluate", "--real", "r", "--out",
                                                                               str(out / "e")]
    assert kind_of(out, stage("m", "make-phantoms")).argv([], ["--size", "32"]) == ["make-phantoms", str(out / "m"),
                                                                                    "--size", "32"]


def test_checkpoint_outputs(tmp_path):
    fit = kind_of(tmp_path, stage("f", "fit"))
    ckpts = fit.run_dir / "checkpoints"
    ckpts.mkdir(parents=True)
    with pytest.raises(PipelineError, match="holds no checkpoint.*delete the stage's folder"):
        fit.output("best_ckpt")
    for name in ("best-epoch=1.ckpt", "best-epoch=3.ckpt", "last.ckpt"):
        (ckpts / name).write_bytes(b"x")
    os.utime(ckpts / "best-epoch=1.ckpt", (1, 1))
    assert fit.output("best_ckpt") == str(ckpts / "best-epoch=3.ckpt")  # newest non-last
    (fit.run_dir / "metrics.json").write_text(json.dumps({"_info": {"tested_checkpoint": str(ckpts / "best-epoch=1.ckpt")}}))
    assert fit.output("best_ckpt") == str(ckpts / "best-epoch=1.ckpt")  # the one the run tested
    assert fit.output("last_ckpt") == str(ckpts / "last.ckpt")
    cv = kind_of(tmp_path, stage("c", "cv"))
    folds = [cv.run_dir / f"fold_{k}" for k in range(2)]
    for k, fold in enumerate(folds):
        (fold / "checkpoints").mkdir(parents=True)
        (fold / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (cv.run_dir / "cv_summary.csv").write_text(
        f"fold,val/loss,run_dir\n0,0.9,{folds[0]}\n1,0.4,{folds[1]}\nmean,0.65,\nsd,0.3,\n")
    assert cv.output("last_ckpt") == str(folds[1] / "checkpoints" / "last.ckpt")  # lowest val/loss


class CopyTreeKind(StageKind):
    """A made-up kind: `make-phantoms` under another verb, with its own marker and output."""

    verb = "phantom-copy"
    outputs = ("dir", "run_dir", "out", "classes")

    def is_complete(self) -> bool:
        return (self.dir / "benign").is_dir()

    def argv(self, configs, args):
        return ["make-phantoms", str(self.dir), *args]

    def output(self, name):
        return str(self.dir / "benign") if name == "classes" else super().output(name)


def test_a_new_kind_is_one_class_and_one_registry_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(STAGE_KINDS, "phantom-copy", CopyTreeKind)  # the registry line
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"name": "newkind", "stages": [
        {"name": "tree", "verb": "phantom-copy", "args": ["--per-class", 2, "--size", 32]},
        {"name": "again", "verb": "make-phantoms",
         "args": ["--per-class", 1, "--size", 32, "--seed", "${stages.tree.classes}"]},
    ]}))
    with pytest.raises(PipelineError, match="a phantom-copy stage has outputs dir, run_dir, out, classes"):
        bad = yaml.safe_load(path.read_text())
        bad["stages"][1]["args"][-1] = "${stages.tree.nothing}"
        other = tmp_path / "bad.yaml"
        other.write_text(yaml.safe_dump(bad))
        load_pipeline(other, "mini", {})
    out = tmp_path / "out"
    # the second stage gets a path as --seed: make-phantoms refuses it, which shows the output was resolved
    assert reproduce([str(path), "--out", str(out), "--in-process"]) == 1
    assert len(list((out / "tree" / "benign").glob("*.png"))) == 2  # 2 images; their masks are a sibling tree
    assert len(list((out / "tree_masks" / "benign").glob("*.png"))) == 2
    state = json.loads((out / "pipeline_state.json").read_text())
    assert state["stages"]["tree"]["status"] == "complete" and state["stages"]["tree"]["verb"] == "phantom-copy"
    assert state["stages"]["again"]["argv"][-1] == str(out / "tree" / "benign")
    capsys.readouterr()
    reproduce([str(path), "--out", str(out), "--in-process"])
    assert "skip tree: complete" in capsys.readouterr().out

