"""`synthmed explain` on a run: the images come from the run's split_manifest.csv, not a re-split tree.

The run is a real (tiny) `synthmed fit` of experiments/phantoms/classifier_trts.yaml: trained on one
phantom tree, tested on another (`data.test_root`). The run's test split is that second tree,
which no `--data-root --test-fraction` re-split of the first tree could reproduce.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datamodules.phantom_generator import write_phantom_tree
from synthmed import explain
from synthmed.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
TRTS = REPO / "experiments" / "phantoms" / "classifier_trts.yaml"
TINY_FIT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.enable_progress_bar",
            "false", "--trainer.enable_model_summary", "false", "--trainer.accelerator", "cpu",
            "--data.init_args.image_size", "24", "--data.init_args.batch_size", "8"]


@pytest.fixture(scope="module")
def fit_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(run_dir, train tree, test tree) of a finished tiny fit with a separate test tree."""
    base = tmp_path_factory.mktemp("explain_run")
    train = write_phantom_tree(base / "train_tree", per_class=8, size=24, seed=0)
    test = write_phantom_tree(base / "test_tree", per_class=3, size=24, seed=5)
    code = cli_main(["fit", "--config", str(TRTS), *TINY_FIT, "--data.init_args.root", str(train),
                     "--data.init_args.test_root", str(test), "--logs_root", str(base / "logs"),
                     "--experiment", "trts", "--run_version", "run"])
    assert code == 0
    run_dir = base / "logs" / "trts" / "run"
    assert (run_dir / "split_manifest.csv").is_file() and (run_dir / "metrics.json").is_file()
    return run_dir, train, test


def test_explain_run_uses_the_runs_own_test_split(fit_run, tmp_path, capsys):
    run_dir, _, test_tree = fit_run
    out = tmp_path / "lime"
    rc = explain.main(["--run", str(run_dir), "--num-images", "4", "--num-samples", "20", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    record = json.loads((out / "explanations.json").read_text())
    assert record["settings"]["split_manifest"] == str(run_dir / "split_manifest.csv")
    assert Path(record["settings"]["ckpt"]).parent == run_dir / "checkpoints"
    images = record["images"]
    assert len(images) == 4 and {r["true_class"] for r in images} == {"benign", "malignant", "normal"}
    # exactly the run's held-out images: the separate test tree, named as the manifest names them
    assert all(Path(r["file"]).resolve().is_relative_to(test_tree.resolve()) for r in images)
    assert all(r["key"].startswith("test_root/") for r in images)
    # masks were found beside the manifest's files, as in training (phantoms have a lesion except 'normal')
    assert all(r["has_mask"] for r in images)


def test_explain_ckpt_inside_run_reads_the_manifest_and_data_root_still_wins(fit_run, tmp_path, capsys):
    run_dir, train_tree, test_tree = fit_run
    ckpt = next((run_dir / "checkpoints").glob("best*.ckpt"))
    rc = explain.main(["--ckpt", str(ckpt), "--num-images", "2", "--num-samples", "20", "--out", str(tmp_path / "a")])
    assert rc == 0, capsys.readouterr().err
    files = [r["file"] for r in json.loads((tmp_path / "a" / "explanations.json").read_text())["images"]]
    assert all(Path(f).resolve().is_relative_to(test_tree.resolve()) for f in files)
    # --data-root: that tree, split again from the flags (the existing usage)
    rc = explain.main(["--ckpt", str(ckpt), "--data-root", str(train_tree), "--num-images", "2", "--num-samples",
                       "20", "--out", str(tmp_path / "b")])
    assert rc == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "b" / "explanations.json").read_text())
    assert record["settings"]["split_manifest"] is None
    assert all(Path(r["file"]).resolve().is_relative_to(train_tree.resolve()) for r in record["images"])


def test_checkpoint_outside_a_run_needs_data_root(fit_run, tmp_path, capsys):
    run_dir, _, _ = fit_run
    loose = tmp_path / "loose.ckpt"
    loose.write_bytes(next((run_dir / "checkpoints").glob("best*.ckpt")).read_bytes())
    assert explain.main(["--ckpt", str(loose), "--num-images", "1"]) == 2
    err = capsys.readouterr().err
    assert "not inside a run directory" in err and "--data-root" in err
    assert explain.main(["--run", str(tmp_path), "--num-images", "1"]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err
