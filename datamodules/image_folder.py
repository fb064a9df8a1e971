"""Class-per-folder image trees (Kaggle style), with or without ready-made split sub-trees."""

from __future__ import annotations

import fnmatch
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from datamodules.base import BaseImageDataModule
from datamodules.image_io import IMAGE_EXTENSIONS, CorruptImageError, read_image, to_model_array
from datamodules.pixel_hashes import perceptual_hash, pixel_sha256, thumbnail
from datamodules.mask_files import mask_files
from datamodules.splits import SubsampleMode, groups_from_pattern, sha256_file, subsample_mask

log = logging.getLogger(__name__)

# Sub-tree names that mean "this split came with the data" (compared case-insensitively).
SPLIT_DIR_NAMES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}


class DataTreeError(ValueError):
    """The image tree is not usable as configured; the message names the path and the option."""


def _class_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def detect_split_dirs(root: Path) -> dict[str, Path]:
    """{"train": Path, "val": Path, "test": Path} for the split sub-trees found under `root`."""
    found: dict[str, Path] = {}
    for name in _class_dirs(root):
        split = SPLIT_DIR_NAMES.get(name.lower())
        if split:
            if split in found:
                raise DataTreeError(f"{root} has two sub-trees for the {split} split: "
                                    f"{found[split].name} and {name}; keep one")
            found[split] = root / name
    return found if ("train" in found or "test" in found) else {}


class ImageFolderDataModule(BaseImageDataModule):
    """Images in `root/<class>/...` or `root/{Training,Testing}/<class>/...` (also train/val/test).

    Args:
        root: the tree. Class folders directly under it, or under split sub-trees.
        test_root: a separate tree used as the test set (e.g. real images when `root` is
            synthetic: train on synthetic, test on real). Its class names must equal `root`'s.
        class_names: fix the class order (default: sorted folder names). Must match the folders.
        use_preset_splits: use Training/Testing (train/val/test) sub-trees when present; set
            false to pool them and split with `test_fraction` / `subsample_fraction` instead.
        mask_pattern: glob (on the file name) of segmentation masks, skipped as images.
        load_masks: attach `<stem>_mask*.png` masks (union of all) to each image as `mask`: beside the
            image, or in the sibling tree `<root>_masks/` that make-phantoms writes (datamodules.mask_files).
        caption_file: CSV `image_path,text_caption[,label]` (paths relative to `root`).
        skip_corrupt: drop undecodable files (also NaN pixels, oversized headers) at setup with one
            warning each instead of failing.
        **kwargs: the shared options of `BaseImageDataModule` (image_size, channels, splits, ...).
    """

    def __init__(
        self,
        root: str,
        test_root: str | None = None,
        class_names: list[str] | None = None,
        use_preset_splits: bool = True,
        mask_pattern: str = "*_mask*",
        load_masks: bool = False,
        caption_file: str | None = None,
        skip_corrupt: bool = False,
        test_subsample_fraction: float | None = None,
        test_subsample: SubsampleMode = "complement",
        extra_train_roots: list[str] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.root = self._check_root(root, "data.root")
        self.test_root = self._check_root(test_root, "data.test_root") if test_root else None
        if test_subsample_fraction is not None and self.test_root is None:
            raise DataTreeError("data.test_subsample_fraction needs data.test_root (the tree it subsamples)")
        if test_subsample not in ("keep", "complement"):
            raise DataTreeError(f"data.test_subsample={test_subsample!r} must be 'keep' or 'complement'")
        self.test_subsample_fraction, self.test_subsample = test_subsample_fraction, test_subsample
        self.extra_train_roots = [self._check_root(r, "data.extra_train_roots") for r in (extra_train_roots or [])]
        self.use_preset_splits = use_preset_splits
        self.mask_pattern, self.load_masks = mask_pattern, load_masks
        self.skip_corrupt = skip_corrupt
        self.caption_file = Path(caption_file) if caption_file else None
        if self.caption_file and not self.caption_file.is_file():
            raise DataTreeError(f"data.caption_file={caption_file} does not exist")
        self._trees = self._split_trees(self.root)
        self.class_names = self._resolve_class_names(class_names)
        self._captions: dict[str, str] | None = None
        self._decoded: dict[str, np.ndarray] = {}  # path -> model array, decoded once by the catalogue

    # ---- tree discovery (cheap, runs in __init__ so the CLI can link class_names) -------------
    @staticmethod
    def _check_root(root: str | None, option: str) -> Path:
        path = Path(str(root)).expanduser()
        if not path.is_dir():
            raise DataTreeError(f"{option}={root} is not a directory; point it at a class-per-folder "
                                "image tree (root/<class>/<image>)")
        return path

    def _split_trees(self, root: Path) -> dict[str, Path]:
        presets = detect_split_dirs(root)
        if presets and not self.use_preset_splits:
            return {f"pooled:{k}": v for k, v in presets.items()}
        return presets or {"": root}

    def _tree_classes(self, trees: dict[str, Path]) -> list[str]:
        per_tree = {name: _class_dirs(path) for name, path in trees.items()}
        lists = list(per_tree.values())
        if not lists[0]:
            raise DataTreeError(f"{next(iter(trees.values()))} has no class sub-folders; expected "
                                "<root>/<class>/<image files>")
        for (name, classes) in per_tree.items():
            if classes != lists[0]:
                first = next(iter(per_tree))
                raise DataTreeError(
                    f"class folders differ between {trees[first]} {lists[0]} and {trees[name]} {classes}")
        return lists[0]

    def _resolve_class_names(self, class_names: list[str] | None) -> list[str]:
        found = self._tree_classes(self._trees)
        if class_names is not None and sorted(class_names) != found:
            raise DataTreeError(f"data.class_names={list(class_names)} does not match the class folders "
                                f"of {self.root}: {found}")
        names = list(class_names) if class_names is not None else found
        others = [("data.test_root", self.test_root)] if self.test_root is not None else []
        others += [("data.extra_train_roots", r) for r in self.extra_train_roots]
        for option, other in others:
            other_found = self._tree_classes(self._split_trees(other))
            if other_found != found:
                raise DataTreeError(
                    f"class names of {option}={other} {other_found} differ from "
                    f"data.root={self.root} {found}; trees used together must share their classes")
        return names

    def describe_source(self) -> str:
        return str(self.root) + (f" (test_root {self.test_root})" if self.test_root else "")

    # ---- catalogue -------------------------------------------------------------------------------
    def _scan_tree(self, trees: dict[str, Path], base: Path, force_split: str | None) -> list[dict]:
        rows, skipped_masks, skipped_other = [], 0, 0
        for split_name, tree in trees.items():
            source_split = force_split if force_split is not None else (
                "" if split_name.startswith("pooled:") else split_name)
            for label, cls in enumerate(self.class_names):
                files = sorted(p for p in (tree / cls).rglob("*") if p.is_file())
                images = []
                for p in files:
                    if fnmatch.fnmatch(p.name, self.mask_pattern):
                        skipped_masks += 1
                    elif p.suffix.lower() not in IMAGE_EXTENSIONS:
                        skipped_other += 1
                    else:
                        images.append(p)
                if not images:
                    raise DataTreeError(f"class folder {tree / cls} has no image files "
                                        f"({', '.join(IMAGE_EXTENSIONS)}); remove it or add images")
                for p in images:
                    row = self._catalogue_row(p)
                    if row is not None:
                        rows.append({"key": p.relative_to(base).as_posix(), "label": label, "class_name": cls,
                                     "source_split": source_split, **row})
        if skipped_masks or skipped_other:
            log.info("%s: skipped %d mask files (pattern %r) and %d non-image files",
                     base, skipped_masks, self.mask_pattern, skipped_other)
        self.skipped_counts = {"masks": skipped_masks, "non_images": skipped_other}
        return rows

    def _catalogue_row(self, path: Path) -> dict | None:
        """Hashes of one file (bytes, decoded pixels, perceptual) for the leakage audit, or None when it
        is corrupt and `skip_corrupt` drops it. The pixels are decoded here, once: the model array is
        kept for `setup`, so auditing pixels costs no second decode."""
        try:
            arr = read_image(path)
        except CorruptImageError as exc:
            if not self.skip_corrupt:
                raise
            warnings.warn(f"skip_corrupt: dropping {path}: {exc}", stacklevel=2)
            return None
        self._decoded[str(path)] = to_model_array(arr, self.image_size, self.channels, self.resize_mode)
        self.thumbnails[str(path)] = thumbnail(arr)
        return {"pixel_sha256": pixel_sha256(arr), "dhash": perceptual_hash(arr),
                "file_sha256": sha256_file(path), "path": str(path)}

    def build_catalogue(self) -> pd.DataFrame:
        rows = self._scan_tree(self._trees, self.root, None)
        if self.test_root is not None:
            if any(r["source_split"] == "test" for r in rows):
                raise DataTreeError(f"data.root={self.root} has its own test sub-tree and data.test_root is "
                                    "also set; use one of them")
            for r in rows:
                r["source_split"] = r["source_split"] or "train"
            rows += self._test_root_rows()
        for i, extra_root in enumerate(self.extra_train_roots):
            extra = self._scan_tree(self._split_trees(extra_root), extra_root, "extra")
            rows += [{**r, "key": f"extra{i}/{r['key']}"} for r in extra]
        df = pd.DataFrame(rows)
        df["group"] = groups_from_pattern(df["key"], self.split_options.group_pattern)
        return df

    def _test_root_rows(self) -> list[dict]:
        rows = self._scan_tree(self._split_trees(self.test_root), self.test_root, "test")
        if self.test_subsample_fraction is not None:
            frame = pd.DataFrame(rows)
            frame["group"] = groups_from_pattern(frame["key"], self.split_options.group_pattern)
            keep = subsample_mask(frame, self.test_subsample_fraction, self.test_subsample,
                                  self.split_options.seed)
            for r, kept in zip(rows, keep):
                r["source_split"] = "test" if kept else "excluded"
        return [{**r, "key": "test_root/" + r["key"]} for r in rows]

    # ---- pixels ----------------------------------------------------------------------------------
    def load_image(self, row: pd.Series) -> np.ndarray:
        return read_image(row["path"])

    def model_array(self, row: pd.Series) -> np.ndarray:
        cached = self._decoded.pop(str(row["path"]), None)
        return cached if cached is not None else super().model_array(row)

    def load_mask(self, row: pd.Series) -> np.ndarray | None:
        if not self.load_masks:
            return None
        path = Path(row["path"])
        found = mask_files(path)
        mask = None
        for m in found:
            arr = read_image(m)
            arr = arr if arr.ndim == 2 else arr.max(axis=2)
            mask = arr > 0 if mask is None else (mask | (arr > 0))
        if mask is None:
            return np.zeros(read_image(path).shape[:2], dtype=np.uint8)
        return mask.astype(np.uint8)

    def caption_for(self, row: pd.Series) -> str | None:
        if self.caption_file is None:
            return None
        if self._captions is None:
            table = pd.read_csv(self.caption_file)
            missing = {"image_path", "text_caption"} - set(table.columns)
            if missing:
                raise DataTreeError(f"data.caption_file={self.caption_file} lacks columns {sorted(missing)}; "
                                    "expected image_path,text_caption[,label]")
            self._captions = dict(zip(table["image_path"].astype(str), table["text_caption"].astype(str)))
        key = str(row["key"])
        if key not in self._captions:
            raise DataTreeError(f"data.caption_file={self.caption_file} has no caption for {key}")
        return self._captions[key]
