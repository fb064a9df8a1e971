"""Where an image's lesion masks are: beside it (BUSI's `<stem>_mask*.png`) or in a sibling mask tree.

`synthmed make-phantoms OUT` writes its masks to `OUT_masks/<class>/<stem>_mask.png`, so `OUT`
holds only images: torchvision's `ImageFolder(OUT)` and `datasets`' imagefolder count 180 images
for 60 per class, not 360 (masks beside the images were counted as images). BUSI keeps its masks
beside the images; both layouts are found.
"""

from __future__ import annotations

import glob
from pathlib import Path

MASK_TREE_SUFFIX = "_masks"


def mask_tree(image_root: str | Path) -> Path:
    """The sibling tree that holds the masks of the images under `image_root` (`<root>_masks`)."""
    root = Path(image_root)
    return root.with_name(root.name + MASK_TREE_SUFFIX)


def mask_files(image: str | Path, image_root: str | Path | None = None) -> list[Path]:
    """The mask files of `image`: `<stem>_mask*` beside it, else in the mask tree of its tree root at the
    same relative folder. The root is `image_root` when given, else the nearest of the image's class
    folder's parent and the folders above it (up to 3 more) that has a `<name>_masks` sibling holding them."""
    path = Path(image)
    pattern = f"{glob.escape(path.stem)}_mask*"
    beside = sorted(path.parent.glob(pattern))
    if beside:
        return beside
    roots = [Path(image_root)] if image_root is not None else list(path.parents[1:5])
    for root in roots:
        try:
            relative = path.parent.relative_to(root)
        except ValueError:
            continue
        found = sorted((mask_tree(root) / relative).glob(pattern))
        if found:
            return found
    return []
