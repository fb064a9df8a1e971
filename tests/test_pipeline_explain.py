"""The `explain` stage kind: LIME on a fit stage's checkpoint inside `synthmed reproduce`.

A tiny real pipeline: two phantom trees, a fit trained on one and tested on the other
(experiments/phantoms/classifier_trts.yaml), then `explain` on the fit's best checkpoint. The
explained images are the fit run's own test split (read from its split_manifest.csv).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from synthmed.pipeline.kinds import STAGE_KINDS, kind_of
from synthmed.pipeline.runner import main as reproduce
from synthmed.pipeline.spec import Stage

REPO = Path(__file__).resolve().parents[1]
TRTS = REPO / "experiments" / "phantoms" / "classifier_trts.yaml"
PIPELINE = {
    "name": "explain-kind",
    "stages": [
        {"name": "train_tree", "verb": "make-phantoms", "args": ["--per-class", 8, "--size", 24, "--seed", 0]},
        {"name": "test_tree", "verb": "make-phantoms", "args": ["--per-class", 3, "--size", 24, "--seed", 5]},
        {"name": "fit", "verb": "fit", "config": [str(TRTS)],
         "args": ["--data.init_args.root", "${stages.train_tree.out}", "--data.init_args.test_root",
                  "${stages.test_tree.out}", "--data.init_args.image_size", 24, "--data.init_args.batch_size", 8,
                  "--trainer.max_epochs", 1, "--trainer.limit_train_batches", 2, "--trainer.accelerator", "cpu",
                  "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]},
        {"name": "lime", "verb": "explain",
         "args": ["--ckpt", "${stages.fit.best_ckpt}", "--num-images", 3, "--num-samples", 20]},
    ],
}


def test_explain_kind_marker_argv_and_outputs(tmp_path):
    kind = kind_of(tmp_path, Stage(name="lime", verb="explain", config=[], args=[]))
    assert STAGE_KINDS["explain"].outputs == ("dir", "run_dir", "out") and not kind.takes_config
    assert kind.argv([], ["--ckpt", "x.ckpt"]) == ["explain", "--ckpt", "x.ckpt", "--out", str(tmp_path / "lime")]
    kind.dir.mkdir()
    assert not kind.is_complete() and kind.prepare_rerun() is not None  # an unfinished folder is moved aside
    kind.dir.mkdir()
    (kind.dir / "explanations.json").write_text("{}")
    assert kind.is_complete() and kind.output("out") == str(tmp_path / "lime")


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    base = tmp_path_factory.mktemp("explain_stage")
    path = base / "pipeline.yaml"
    path.write_text(yaml.safe_dump(PIPELINE, sort_keys=False))
    out = base / "out"
    assert reproduce([str(path), "--out", str(out), "--in-process"]) == 0
    return path, out


def test_explain_stage_runs_on_the_fit_checkpoint_and_its_test_split(explained):
    _, out = explained
    record = json.loads((out / "lime" / "explanations.json").read_text())
    state = json.loads((out / "pipeline_state.json").read_text())
    lime = state["stages"]["lime"]
    assert lime["status"] == "complete" and lime["verb"] == "explain"
    ckpt = record["settings"]["ckpt"]
    assert lime["argv"] == ["explain", "--ckpt", ckpt, "--num-images", "3", "--num-samples", "20",
                            "--out", str(out / "lime")]
    assert Path(ckpt).parent == out / "fit" / "run" / "checkpoints"
    assert record["settings"]["split_manifest"] == str(out / "fit" / "run" / "split_manifest.csv")
    test_tree = (out / "test_tree").resolve()
    assert len(record["images"]) == 3 and all(Path(r["file"]).resolve().is_relative_to(test_tree)
                                              for r in record["images"])
    report = (out / "report.md").read_text()
    assert "| lime | explain | complete |" in report and "synthmed explain --ckpt" in report


def test_rerun_skips_the_explain_stage(explained, capsys):
    path, out = explained
    assert reproduce([str(path), "--out", str(out), "--in-process"]) == 0
    assert "skip lime: complete" in capsys.readouterr().out
