"""The images a run trained, validated and tested on, read back from its split_manifest.csv.

`synthmed explain` (and anything else that looks at a trained run's data) uses this instead of
rebuilding the split from flags: the manifest is the run's own record of every image, its label
and its split, so the test images are exactly the ones the run held out, whatever split options,
folds, subsamples or extra trees produced them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from datamodules.base import BaseImageDataModule
from datamodules.image_folder import ImageFolderDataModule
from datamodules.image_io import read_image

REQUIRED_COLUMNS = ("path", "label", "class_name", "split", "key")


class RunManifestError(ValueError):
    """A split manifest that cannot be read back as images; the message names the file."""


class RunManifestImages(BaseImageDataModule):
    """The rows of a run's split_manifest.csv as a DataModule (splits and labels as the run had them).

    Masks follow the ImageFolder convention (`<stem>_mask*` beside the image), as in training.
    """

    load_mask = ImageFolderDataModule.load_mask  # the same `<stem>_mask*` lookup as the tree the run read

    def __init__(self, csv: str | Path, class_names: list[str], image_size: int, channels: int,
                 resize_mode: str = "pad", load_masks: bool = True):
        super().__init__(image_size=image_size, channels=channels, resize_mode=resize_mode, on_overlap="allow")
        self.csv, self.load_masks = Path(csv), load_masks
        table = pd.read_csv(self.csv, index_col="index")
        missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
        if missing:
            raise RunManifestError(f"{self.csv} lacks columns {missing}: only runs of file-based DataModules "
                                   "(ImageFolder) name their image files; pass --data-root instead")
        absent = [p for p in table["path"] if not Path(p).is_file()]
        if absent:
            raise RunManifestError(f"{self.csv} lists {len(absent)} files that do not exist (first: {absent[0]}); "
                                   "paths are relative to the folder the run was started from: run from there, "
                                   "or pass --data-root")
        self.class_names = list(class_names)
        wrong = table[[not (0 <= int(label) < len(self.class_names)) or self.class_names[int(label)] != name
                       for label, name in zip(table["label"], table["class_name"])]]
        if len(wrong):
            row = wrong.iloc[0]
            raise RunManifestError(f"{self.csv}: label {row['label']} is {row['class_name']!r} there but the "
                                   f"checkpoint's classes are {self.class_names}; is this the checkpoint's run?")
        self.manifest = table

    def prepare_manifest(self) -> pd.DataFrame:
        return self.manifest

    def load_image(self, row: pd.Series) -> np.ndarray:
        return read_image(row["path"])

    def describe_source(self) -> str:
        return f"split manifest {self.csv}"
