"""Hugging Face `datasets` as a DataModule: a local `imagefolder` directory offline, a hub id online."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from datamodules.base import BaseImageDataModule
from datamodules.pixel_hashes import pixel_sha256
from datamodules.splits import sha256_bytes


def imagefolder_features(data_dir: str | Path, label_column: str = "label", name_column: str = "class_name"):
    """`datasets.Features` for an imagefolder tree whose metadata.csv has an integer label and class names.

    `datasets` reads metadata.csv columns as plain values (an integer `label` is `int64`, a name is a
    string) and infers a ClassLabel from folder names only when there is no metadata file, so a
    synthmed synthetic set needs its features given:
    `load_dataset("imagefolder", data_dir=d, features=imagefolder_features(d))` has `label` as a
    ClassLabel with the set's class names (in label order). None when the folder has no such metadata.csv.
    """
    import datasets

    table_path = Path(data_dir) / "metadata.csv"
    if not table_path.is_file():
        return None
    table = pd.read_csv(table_path)
    if label_column not in table.columns or name_column not in table.columns or table.empty:
        return None
    if not pd.api.types.is_integer_dtype(table[label_column]):
        return None
    pairs = dict(zip(table[label_column].astype(int), table[name_column].astype(str)))
    names = [pairs.get(i, f"class_{i}") for i in range(max(pairs) + 1)]
    features = {"image": datasets.Image()}
    for column in table.columns:
        if column == "file_name":
            continue
        if column == label_column:
            features[column] = datasets.ClassLabel(names=names)
        elif pd.api.types.is_integer_dtype(table[column]):
            features[column] = datasets.Value("int64")
        elif pd.api.types.is_float_dtype(table[column]) and table[column].notna().any():
            features[column] = datasets.Value("float64")
        else:
            features[column] = datasets.Value("string")
    return datasets.Features(features)


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
            if Path(path).is_dir():  # a synthmed synthetic set: its metadata.csv's label as a ClassLabel
                self.ds = datasets.load_dataset("imagefolder", data_dir=path,
                                                features=imagefolder_features(path, label_column))
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
        # a ClassLabel names its classes; string labels become classes in sorted order
        self.class_names = list(getattr(feature, "names", None) or
                                [str(x) for x in sorted(set(first[label_column]))])
        self._label_index = {name: i for i, name in enumerate(self.class_names)}
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
                value = ex[self.label_column]
                label = self._label_index[value] if isinstance(value, str) else int(value)
                rows.append({"key": key, "label": label, "class_name": self.class_names[label],
                             "source_split": source_split, "pixel_sha256": pixel_sha256(arr), "file_sha256": sha256_bytes(arr.tobytes()), "group": ""})
        if not any(r["source_split"] == "train" for r in rows):
            for r in rows:
                r["source_split"] = ""
        return pd.DataFrame(rows)

    def load_image(self, row: pd.Series) -> np.ndarray:
        arr = self._images[row["key"]]
        return arr if arr.dtype == np.uint8 else np.clip(arr, 0, 255).astype(np.uint8)
