"""MedMNIST `.npz` files (train/val/test arrays), read offline from a local path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from datamodules.base import BaseImageDataModule
from datamodules.pixel_hashes import pixel_sha256
from datamodules.splits import sha256_bytes


class MedMNISTDataModule(BaseImageDataModule):
    """A MedMNIST dataset from its `.npz` file (keys `{train,val,test}_{images,labels}`).

    Args:
        path: the `.npz` file (e.g. `breastmnist_64.npz` from zenodo.org/records/10519652,
            downloaded by you: nothing is fetched at run time).
        class_names: names for the label indices (default "0", "1", ...).
        **kwargs: the shared options of `BaseImageDataModule`; the file's own train/val/test split is used.
    """

    def __init__(self, path: str, class_names: list[str] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"data.path={path}: MedMNIST file not found. Download the .npz (e.g. breastmnist_64.npz "
                f"from https://zenodo.org/records/10519652) on a machine with internet and put it at {path}")
        with np.load(self.path) as npz:
            missing = [k for k in ("train_images", "train_labels", "test_images", "test_labels") if k not in npz]
            if missing:
                raise ValueError(f"data.path={path} is not a MedMNIST file: missing arrays {missing}")
            labels = np.concatenate([npz[f"{s}_labels"].reshape(len(npz[f"{s}_labels"]), -1)[:, 0]
                                     for s in ("train", "val", "test") if f"{s}_labels" in npz])
        n = int(labels.max()) + 1
        self.class_names = list(class_names) if class_names else [str(i) for i in range(n)]
        if len(self.class_names) < n:
            raise ValueError(f"data.class_names has {len(self.class_names)} names but {path} has {n} labels")
        self._arrays: dict[str, np.ndarray] = {}

    def describe_source(self) -> str:
        return str(self.path)

    def build_catalogue(self) -> pd.DataFrame:
        rows = []
        with np.load(self.path) as npz:
            for split in ("train", "val", "test"):
                if f"{split}_images" not in npz:
                    continue
                images, labels = npz[f"{split}_images"], npz[f"{split}_labels"].reshape(-1)
                for i, (img, lab) in enumerate(zip(images, labels)):
                    key = f"{split}/{i:06d}"
                    self._arrays[key] = img
                    rows.append({"key": key, "label": int(lab), "class_name": self.class_names[int(lab)],
                                 "source_split": split, "pixel_sha256": pixel_sha256(img), "file_sha256": sha256_bytes(img.tobytes()), "group": ""})
        return pd.DataFrame(rows)

    def load_image(self, row: pd.Series) -> np.ndarray:
        return self._arrays[row["key"]]
