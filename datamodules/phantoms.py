"""The built-in procedural breast-ultrasound phantoms as a DataModule (nothing to download)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from datamodules.base import BaseImageDataModule
from datamodules.phantom_generator import CLASS_NAMES, phantom_seed, render_phantom
from datamodules.pixel_hashes import pixel_sha256
from datamodules.splits import sha256_bytes


class PhantomDataModule(BaseImageDataModule):
    """`num_per_class` phantoms of each class (benign, malignant, normal), with lesion masks.

    Image `i` of class `c` is rendered from seed `phantom_seed(seed, c, i)` at `image_size`, so a
    dataset is identical on every machine and at every run; `synthmed make-phantoms` writes the
    same images (same seed and size) as an ImageFolder tree. Batches carry `mask` (the lesion;
    empty for normal). Other options (image_size, batch_size, splits, ...) are those of
    `BaseImageDataModule`.
    """

    def __init__(self, num_per_class: int = 300, **kwargs: Any):
        super().__init__(**kwargs)
        if num_per_class < 1:
            raise ValueError(f"data.num_per_class={num_per_class} must be >= 1")
        self.num_per_class = num_per_class
        self.class_names = list(CLASS_NAMES)
        self._rendered: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def describe_source(self) -> str:
        return f"phantoms(seed={self.split_options.seed}, {self.num_per_class}/class, {self.image_size}px)"

    def build_catalogue(self) -> pd.DataFrame:
        rows = []
        for label, cls in enumerate(self.class_names):
            for i in range(self.num_per_class):
                image, mask = render_phantom(label, self.image_size, phantom_seed(self.split_options.seed, label, i))
                key = f"{cls}/{cls}_{i:05d}.png"
                self._rendered[key] = (image, mask)
                rows.append({"key": key, "label": label, "class_name": cls, "source_split": "",
                             "pixel_sha256": pixel_sha256(image), "file_sha256": sha256_bytes(image.tobytes()), "group": ""})
        return pd.DataFrame(rows)

    def load_image(self, row: pd.Series) -> np.ndarray:
        return self._rendered[row["key"]][0]

    def load_mask(self, row: pd.Series) -> np.ndarray:
        return self._rendered[row["key"]][1]
