"""Hugging Face `datasets` as a DataModule: a local `imagefolder` directory offline, a hub id online."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from datamodules.base import BaseImageDataModule
from datamodules.pixel_hashes import pixel_sha256
from datamodules.splits import sha256_bytes


class HFDataModule(BaseImageDataModule):
    """Any `datasets.load_dataset` source with an image column and a class-label column.

    Args:
        path: a local directory (loaded with the `imagefolder` builder) or a hub dataset id
            (needs internet; with HF_HUB_OFFLINE=1 only cached datasets load).
        image_column / label_column: column names (defaults "image" / "label").
        Splits named train/validation/test in the dataset are used as they are.
        **kwargs: the shared options of `BaseImageDataModule`.
    """

    def __init__(self, path: str, image_column: str = "image", label_column: str = "label", **kwargs: Any):
        super().__init__(**kwargs)
        import datasets

        self.path, self.image_column, self.label_column = path, image_column, label_column
        try:
            if Path(path).is_dir():
                self.ds = datasets.load_dataset("imagefolder", data_dir=path)
            else:
                self.ds = datasets.load_dataset(path)
        except Exception as exc:  # datasets raises many types; all mean "cannot load this source"
            raise ValueError(f"data.path={path}: datasets.load_dataset failed ({exc}). Offline, give a local "
                             "imagefolder directory") from exc
        first = self.ds[next(iter(self.ds))]
        for col in (image_column, label_column):
            if col not in first.column_names:
                raise ValueError(f"data.{'image' if col == image_column else 'label'}_column={col!r} is not a "
                                 f"column of {path}: {first.column_names}")
        feature = first.features[label_column]
        self.class_names = list(getattr(feature, "names", None) or
                                [str(x) for x in sorted(set(first[label_column]))])
        self._images: dict[str, Any] = {}

    def describe_source(self) -> str:
        return str(self.path)

    def build_catalogue(self) -> pd.DataFrame:
        split_map = {"train": "train", "validation": "val", "val": "val", "test": "test"}
        rows = []
        for split, part in self.ds.items():
            source_split = split_map.get(split, "")
            for i, ex in enumerate(part):
                key = f"{split}/{i:06d}"
                arr = np.asarray(ex[self.image_column])
                self._images[key] = arr
                label = int(ex[self.label_column])
                rows.append({"key": key, "label": label, "class_name": self.class_names[label],
                             "source_split": source_split, "pixel_sha256": pixel_sha256(arr), "file_sha256": sha256_bytes(arr.tobytes()), "group": ""})
        if not any(r["source_split"] == "train" for r in rows):
            for r in rows:
                r["source_split"] = ""
        return pd.DataFrame(rows)

    def load_image(self, row: pd.Series) -> np.ndarray:
        arr = self._images[row["key"]]
        return arr if arr.dtype == np.uint8 else np.clip(arr, 0, 255).astype(np.uint8)
