"""Load an image folder (ImageFolder tree with class sub-folders, or flat) into one uint8 tensor.

Every image is decoded with `datamodules.image_io.read_image` and brought to C x S x S with
`to_model_array` (the same resizing the DataModules use), so real, generated and training images
are compared at one size and channel count. Mask files (`*_mask*`, BUSI / phantom style) and
hidden files (temporary files of an interrupted writer) are skipped.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from datamodules.image_io import IMAGE_EXTENSIONS, read_image, to_model_array
from synthmed.runs import file_sha256

MASK_PATTERN = "*_mask*"


class ImageSetError(ValueError):
    """A --real/--fake/--train folder cannot be read as an image set; the message says why."""


@dataclass
class ImageSet:
    """Images of one folder at the evaluation size.

    Attributes:
        root: the folder given.
        images: uint8 tensor N x C x S x S.
        paths: file of each image (same order).
        labels: class index per image (-1 for a flat folder).
        class_names: sorted class-folder names ([] for a flat folder).
        sha256: content hash of each file (to find byte-identical copies across sets).
        skipped_masks: how many mask files were skipped.
    """

    root: Path
    images: torch.Tensor
    paths: list[str]
    labels: list[int]
    class_names: list[str]
    sha256: list[str] = field(default_factory=list)
    skipped_masks: int = 0

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def as_float(self) -> torch.Tensor:
        """Images as float32 in [0, 1] (the range the pixel metrics use)."""
        return self.images.float() / 255.0

    def describe(self) -> dict:
        counts = {name: self.labels.count(i) for i, name in enumerate(self.class_names)}
        return {"dir": str(self.root), "n_images": len(self), "layout": "imagefolder" if self.class_names else "flat",
                "class_counts": counts, "skipped_mask_files": self.skipped_masks}


def _is_image(path: Path) -> bool:
    return (path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")
            and not fnmatch.fnmatch(path.name, MASK_PATTERN))


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


# Which rows of a split manifest an option reads when the argument names no splits: the generator
# saw its train and val rows (the memorisation reference); real held-out images are its test rows.
MANIFEST_DEFAULT_SPLITS = {"--train": ("train", "val"), "--real": ("test",), "--fake": ("test",)}


def split_manifest_spec(spec: str | Path) -> tuple[Path, tuple[str, ...] | None] | None:
    """`run_dir/split_manifest.csv[:split,split]` -> (csv path, splits or None); None for a folder."""
    text = str(spec)
    head, sep, tail = text.rpartition(".csv:")
    if sep:
        return Path(head + ".csv").expanduser(), tuple(s for s in tail.split(",") if s)
    if text.endswith(".csv"):
        return Path(text).expanduser(), None
    return None


def list_manifest_files(csv: Path, splits: tuple[str, ...] | None, option: str) -> list[tuple[Path, str]]:
    """[(file, class name)] of the rows of a synthmed `split_manifest.csv` whose split is in `splits`.

    This names exactly the images a run used (e.g. the generator's 20 % share, which exists only as
    a subsample inside its DataModule), so no folder copy is needed for the memorisation audit.
    """
    import pandas as pd

    splits = splits or MANIFEST_DEFAULT_SPLITS.get(option, ("test",))
    if not csv.is_file():
        raise ImageSetError(f"{option} {csv} does not exist; pass a folder or the split_manifest.csv of a "
                            "synthmed run directory")
    manifest = pd.read_csv(csv)
    if "path" not in manifest.columns or "split" not in manifest.columns:
        raise ImageSetError(f"{option} {csv} has no 'path'/'split' columns; only manifests of file-based "
                            "DataModules (ImageFolder) name their images")
    rows = manifest[manifest["split"].isin(splits)]
    if rows.empty:
        found = sorted(manifest["split"].dropna().unique())
        raise ImageSetError(f"{option} {csv}: no rows with split in {list(splits)} (the manifest has {found}); "
                            f"name them as {csv}:<split>[,<split>]")
    files = [(Path(p), str(c)) for p, c in zip(rows["path"], rows["class_name"])]
    missing = [p for p, _ in files if not p.is_file()]
    if missing:
        raise ImageSetError(f"{option} {csv} lists {len(missing)} files that do not exist (first: {missing[0]}); "
                            "paths are relative to the folder the run was started from: run from there")
    return sorted(files)


def list_image_files(root: Path, option: str) -> tuple[list[tuple[Path, str]], int]:
    """[(file, class name or '')] in sorted order, and the number of mask files skipped.

    `root` may also be a split manifest (see `split_manifest_spec`)."""
    manifest = split_manifest_spec(root)
    if manifest is not None:
        return list_manifest_files(*manifest, option), 0
    if not root.is_dir():
        raise ImageSetError(f"{option} {root} is not a folder; pass a folder of images (flat, or one "
                            "sub-folder per class)")
    all_files = sorted(p for p in root.rglob("*") if p.is_file() and _visible(p, root))
    masks = sum(1 for p in all_files if p.suffix.lower() in IMAGE_EXTENSIONS and fnmatch.fnmatch(p.name, MASK_PATTERN))
    images = [p for p in all_files if _is_image(p)]
    top = [p for p in images if p.parent == root]
    nested = [p for p in images if p.parent != root]
    if top and nested:
        raise ImageSetError(f"{option} {root} mixes images at its top level ({top[0].name}, ...) with images in "
                            f"sub-folders ({nested[0].relative_to(root)}, ...); pass either a flat folder or a "
                            "tree with one sub-folder per class")
    if not images:
        raise ImageSetError(f"{option} {root} has no image files ({', '.join(IMAGE_EXTENSIONS)}; mask files "
                            f"{MASK_PATTERN} are skipped)")
    if top:
        return [(p, "") for p in top], masks
    return [(p, p.relative_to(root).parts[0]) for p in nested], masks


def load_image_set(root: str | Path, size: int, channels: int, option: str = "--real",
                   max_images: int | None = None, seed: int = 0, resize_mode: str = "pad") -> ImageSet:
    """Read the folder `root` into an ImageSet of uint8 `channels` x `size` x `size` images.

    max_images: keep a seeded random subset of that many images (order stays sorted by path).
    resize_mode: as in the DataModules ("pad" keeps the aspect ratio on black, "stretch", "crop").
    """
    files, masks = list_image_files(Path(root).expanduser() if split_manifest_spec(root) is None else root,
                                    option)
    root = Path(str(root)).expanduser()
    if max_images is not None:
        if max_images < 2:
            raise ImageSetError(f"--max-images {max_images} must be >= 2 (FID and the k-NN metrics need sets)")
        if len(files) > max_images:
            keep = np.sort(np.random.default_rng(seed).choice(len(files), size=max_images, replace=False))
            files = [files[i] for i in keep]
    class_names = sorted({cls for _, cls in files if cls})
    index = {name: i for i, name in enumerate(class_names)}
    arrays = [to_model_array(read_image(p), size, channels, resize_mode=resize_mode) for p, _ in files]
    images = torch.from_numpy(np.stack(arrays))
    return ImageSet(root=root, images=images, paths=[str(p) for p, _ in files],
                    labels=[index[cls] if cls else -1 for _, cls in files], class_names=class_names,
                    sha256=[file_sha256(p) for p, _ in files], skipped_masks=masks)
