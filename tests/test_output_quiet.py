"""Console output (issue 16 items 2 and 7): no Lightning lines that do not apply; --print_config linked.

A 32-px quickstart printed 25 warning lines of 7 kinds and 9 logger adverts; each is filtered in
synthmed/lightning_output.py with its reason, or fixed where it arose.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml

from synthmed.lightning_cli import run_trainer_verb
from synthmed.lightning_output import IGNORED_WARNINGS, quiet_lightning_output

REPO = Path(__file__).resolve().parents[1]
CLASSIFIER = REPO / "experiments" / "quickstart" / "classifier.yaml"
TINY = ["--data.init_args.num_per_class", "12", "--data.init_args.image_size", "24", "--data.init_args.batch_size", "8",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.accelerator", "cpu", "--model.init_args.arch", "resnet18", "--experiment", "quiet"]

# The texts the quickstart printed (copied from its console output, Lightning 2.6.6).
SEEN_IN_QUICKSTART = [
    "Found 154 module(s) in eval mode at the start of training. This may lead to unexpected behavior during training.",
    "Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided during "
    "`Trainer` instantiation. Please add the following callbacks: ['ResumeRandomState'].",
    "The dirpath has changed from '/q/ldm/run/checkpoints' to '/q/synthetic/run/checkpoints', therefore "
    "`best_model_score` ... won't be reloaded.",
    "You're using the WeightAveraging callback, but loading a checkpoint outside the 'fit' stage. The "
    "WeightAveraging state cannot be restored.",
    "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and treespec.is_leaf()`",
    "The number of training batches (2) is smaller than the logging interval Trainer(log_every_n_steps=10).",
    "The `srun` command is available on your system but is not used. HINT: If your intention is to run Lightning on "
    "SLURM, prepend your python command with `srun`",
]
UNWANTED = ["module(s) in eval mode", "Please add the following callbacks", "dirpath has changed", "WeightAveraging",
            "LeafSpec", "smaller than the logging interval", "`srun` command", "💡 Tip", "litlogger"]


@pytest.mark.parametrize("text", SEEN_IN_QUICKSTART)
def test_each_quickstart_warning_is_filtered(text):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_lightning_output()
        warnings.warn(text, UserWarning)
        warnings.warn("an unrelated warning stays visible", UserWarning)
    assert [str(w.message) for w in caught] == ["an unrelated warning stays visible"]
    assert all(why for _, why in IGNORED_WARNINGS)  # every filter says why it does not apply


def test_tiny_fit_prints_none_of_the_lightning_noise(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    run_trainer_verb(["fit", "--config", str(CLASSIFIER), *TINY])
    out = "".join(capfd.readouterr())
    assert "run_dir:" in out
    assert [u for u in UNWANTED if u in out] == []
    assert out.count("Total params") <= 1  # one model summary per fit


def test_print_config_shows_linked_values(tmp_path, monkeypatch, capsys):
    """--print_config printed num_classes: 2 (the model's default) for the 3-class phantoms."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run_trainer_verb(["fit", "--config", str(CLASSIFIER), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    init_args = printed["model"]["init_args"]
    assert init_args["num_classes"] == 3 and init_args["in_channels"] == 1 and init_args["image_size"] == 64
    assert init_args["class_names"] == ["benign", "malignant", "normal"]
    assert not Path("logs").exists()  # printing started nothing
