"""Datasets interop (issue 16 item 5): synthmed's synthetic sets and phantom trees as other tools read them.

- metadata.csv has an integer `label` and `class_name`; with `imagefolder_features` the `datasets`
  imagefolder builder gives `label` as a ClassLabel with the set's class names (offline);
- HFDataModule reads a synthmed synthetic set (it failed on `int('benign')`) and a fit trains on it;
- make-phantoms' masks live in `<out>_masks/`: torchvision's ImageFolder counts images only, and
  ImageFolderDataModule / explain still find each image's mask.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from datamodules.generation import SEED_KEY, image_path, write_metadata
from datamodules.hf import HFDataModule, imagefolder_features
from datamodules.image_folder import ImageFolderDataModule
from datamodules.mask_files import mask_files
from datamodules.phantom_generator import write_phantom_tree
from synthmed.lightning_cli import run_trainer_verb

CLASSES = ["benign", "malignant", "normal"]


@pytest.fixture()
def synthetic_set(tmp_path, monkeypatch) -> Path:
    """A synthetic set as SyntheticSetWriter leaves it: PNGs with their text chunks + metadata.csv."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    out = tmp_path / "synthetic"
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        for index in range(8):
            info = PngInfo()
            for key, value in {SEED_KEY: index, "synthmed_sampler": "ddim", "synthmed_steps": 20,
                               "synthmed_guidance": 1.0, "synthmed_checkpoint_sha256": "abc"}.items():
                info.add_text(key, str(value))
            path = image_path(out, name, index)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((rng.random((24, 24)) * 80 + 60 * label).astype(np.uint8)).save(path, pnginfo=info)
    write_metadata(out, CLASSES)
    return out


def test_metadata_has_integer_labels_and_datasets_gives_a_classlabel(synthetic_set):
    import datasets

    with open(synthetic_set / "metadata.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["label"], r["class_name"]) for r in rows} == {("0", "benign"), ("1", "malignant"), ("2", "normal")}
    ds = datasets.load_dataset("imagefolder", data_dir=str(synthetic_set),
                               features=imagefolder_features(synthetic_set))["train"]
    assert isinstance(ds.features["label"], datasets.ClassLabel)
    assert ds.features["label"].names == CLASSES
    assert len(ds) == 24 and sorted(set(ds["label"])) == [0, 1, 2]
    first = ds[0]
    assert ds.features["label"].int2str(first["label"]) == first["class_name"]


def test_hf_datamodule_reads_and_trains_on_a_synthetic_set(synthetic_set, tmp_path, monkeypatch):
    dm = HFDataModule(path=str(synthetic_set), image_size=24, channels=1, batch_size=8)
    assert dm.class_names == CLASSES
    monkeypatch.chdir(tmp_path)
    cli = run_trainer_verb([
        "fit", "--data", "datamodules.hf.HFDataModule", "--data.path", str(synthetic_set),
        "--data.image_size", "24", "--data.channels", "1", "--data.batch_size", "8",
        "--model", "lightning_modules.classifier.ClassifierModule", "--model.arch", "resnet18",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--experiment", "hf"])
    assert cli.model.hparams.num_classes == 3
    assert "train/loss" in cli.recorder.metrics and np.isfinite(cli.recorder.metrics["train/loss"])


def test_phantom_masks_in_a_separate_tree(tmp_path):
    from torchvision.datasets import ImageFolder

    out = write_phantom_tree(tmp_path / "phantoms", per_class=4, size=16, seed=0)
    assert len(ImageFolder(str(out))) == 12  # 3 classes x 4 images: no mask counted as an image
    assert ImageFolder(str(out)).classes == CLASSES
    masks = mask_files(out / "benign" / "benign_00001.png")
    assert masks == [tmp_path / "phantoms_masks" / "benign" / "benign_00001_mask.png"]
    dm = ImageFolderDataModule(root=str(out), image_size=16, channels=1, load_masks=True, test_fraction=0.0,
                               val_fraction=0.0, resize_mode="stretch")
    dm.setup("fit")
    train = dm.dataset("train")
    lesion = [int(label) for label, mask in zip(train.labels, train.masks) if mask.any()]
    assert sorted(set(lesion)) == [0, 1]  # benign and malignant masks found; normal's are empty
