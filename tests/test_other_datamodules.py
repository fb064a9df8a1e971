"""MedMNIST (.npz), Hugging Face datasets (local imagefolder) and the phantom DataModule."""

import numpy as np
import pytest
import torch

from datamodules.hf import HFDataModule
from datamodules.medmnist import MedMNISTDataModule
from datamodules.phantoms import PhantomDataModule


def test_medmnist_npz_uses_its_splits(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 12), ("val", 4), ("test", 6)):
        labels = np.arange(n) % 2
        arrays[f"{split}_images"] = (rng.random((n, 28, 28)) * 100 + labels[:, None, None] * 120).astype(np.uint8)
        arrays[f"{split}_labels"] = labels.reshape(-1, 1)
    path = tmp_path / "breastmnist.npz"
    np.savez(path, **arrays)
    dm = MedMNISTDataModule(str(path), class_names=["malignant", "normal"], image_size=32, batch_size=4)
    dm.setup("fit")
    counts = dm.manifest.groupby("split").size().to_dict()
    assert counts == {"train": 12, "val": 4, "test": 6}
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 1, 32, 32)
    bright = batch["image"].mean(dim=(1, 2, 3)) > -0.2
    assert torch.equal(bright, batch["label"] == 1)


def test_medmnist_missing_file_says_where(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data.path=.*missing.npz.*zenodo.*put it at"):
        MedMNISTDataModule(str(tmp_path / "missing.npz"))


def test_hf_local_imagefolder(make_tree):
    root = make_tree({"a": 6, "b": 6})
    dm = HFDataModule(str(root), image_size=16, batch_size=4, test_fraction=0.25, val_fraction=0.0)
    assert dm.class_names == ["a", "b"]
    dm.setup("fit")
    assert dm.manifest.groupby("split").size().to_dict() == {"test": 4, "train": 8}
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 1, 16, 16)
    with pytest.raises(ValueError, match="label_column='diagnosis'"):
        HFDataModule(str(root), label_column="diagnosis")


def test_phantoms_are_deterministic_with_masks():
    a = PhantomDataModule(num_per_class=10, image_size=32, batch_size=30, test_fraction=0.0, val_fraction=0.0)
    b = PhantomDataModule(num_per_class=10, image_size=32, batch_size=30, test_fraction=0.0, val_fraction=0.0)
    a.setup("fit"), b.setup("fit")
    assert a.class_names == ["benign", "malignant", "normal"]
    assert np.array_equal(a.dataset("train").images, b.dataset("train").images)
    item = a.dataset("train")
    masks = {int(item[i]["label"]): float(item[i]["mask"].sum()) for i in range(len(item))}
    assert masks[2] == 0.0  # normal: no lesion
    assert masks[0] > 0 and masks[1] > 0
    other = PhantomDataModule(num_per_class=10, image_size=32, seed=1, test_fraction=0.0, val_fraction=0.0)
    other.setup("fit")
    assert not np.array_equal(a.dataset("train").images, other.dataset("train").images)
