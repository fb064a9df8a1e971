"""``create``: draw a balanced, shuffled, blinded image set into a new study file.

Input trees are ImageFolder style (one sub-folder per modality/class, images anywhere below
it) or flat folders of images. The draw is balanced twice over: as many synthetic as real
images, and within each class the same number from both sources, so that neither the
source nor the class mix gives anything away. Which files are drawn and the order they are
stored in depend only on the file lists and ``seed``. Segmentation masks (``*_mask*`` file
names, the rule the DataModules use) are never study images.
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
import os
import random
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from . import db
from .blinding import MODES, blind_png

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm",
                  ".ppm"}


@dataclass(frozen=True)
class SourceImage:
    """One candidate image: which tree, which class, where."""

    is_synthetic: bool
    class_name: str
    path: Path      # absolute
    rel_path: str   # relative to its tree's root, kept for the (unblinded) report


@functools.cache
def mask_pattern() -> str:
    """The DataModules' rule for segmentation-mask files (``ImageFolderDataModule``'s default
    ``mask_pattern``, a glob on the file name), read from its signature so the two never differ.
    """
    from datamodules.image_folder import ImageFolderDataModule  # heavy (torch): create only

    return inspect.signature(ImageFolderDataModule).parameters["mask_pattern"].default


def _is_study_image(path: Path) -> bool:
    return (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
            and not fnmatch.fnmatch(path.name, mask_pattern()))


def _images_below(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if _is_study_image(p)
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def scan_tree(root: Path, is_synthetic: bool, option: str) -> dict[str, list[SourceImage]]:
    """Images of one tree grouped by class ('' for a flat folder)."""
    if not root.is_dir():
        raise ValueError(f"{option} {root} is not a folder; give a folder of images or an "
                         "ImageFolder tree (one sub-folder per class)")
    loose = sorted(p for p in root.iterdir() if _is_study_image(p))
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    groups: dict[str, list[Path]] = {d.name: _images_below(d) for d in class_dirs}
    groups = {name: files for name, files in groups.items() if files}
    if loose and groups:
        raise ValueError(
            f"{option} {root} mixes images at its top level ({loose[0].name}, ...) with class "
            f"sub-folders ({', '.join(groups)}); move the loose images into a sub-folder")
    if loose:
        groups = {"": loose}
    if not groups:
        raise ValueError(f"{option} {root} contains no images "
                         f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))}; files named "
                         f"{mask_pattern()} are masks, not study images)")
    return {name: [SourceImage(is_synthetic, name, p.resolve(), p.relative_to(root).as_posix())
                   for p in files] for name, files in groups.items()}


def _allocate(total: int, capacity: dict[str, int]) -> dict[str, int]:
    """Spread ``total`` over classes as evenly as their capacity allows (water filling)."""
    share = {name: 0 for name in capacity}
    left = total
    while left > 0:
        open_classes = [n for n in sorted(capacity) if share[n] < capacity[n]]
        if not open_classes:
            break
        for name in open_classes[:left]:
            share[name] += 1
            left -= 1
    return share


def _names(classes) -> str:
    return ", ".join(name or "(flat)" for name in sorted(classes))


def draw(real: dict[str, list[SourceImage]], fake: dict[str, list[SourceImage]],
         per_source: int | None, seed: int) -> list[SourceImage]:
    """Balanced, shuffled selection: per class the same number of real and synthetic images."""
    common = sorted(set(real) & set(fake))
    if not common:
        raise ValueError(
            f"--real classes [{_names(real)}] and --fake classes [{_names(fake)}] have "
            "nothing in common; give both trees the same "
            "class sub-folders, or give two flat folders")
    dropped = sorted(set(real) ^ set(fake))
    if dropped:
        print(f"warning: classes only in one tree are left out: {_names(dropped)}",
              file=sys.stderr)
    capacity = {c: min(len(real[c]), len(fake[c])) for c in common}
    available = sum(capacity.values())
    if per_source is None:
        per_source = available
    if per_source < 1:
        raise ValueError(f"--per-source must be >= 1, got {per_source}")
    if per_source > available:
        per_class = ", ".join(f"{name or '(flat)'}={n}" for name, n in capacity.items())
        raise ValueError(
            f"--per-source {per_source} is more than the {available} images per source that "
            f"a class-balanced draw allows (per class: {per_class}); lower it")
    rng = random.Random(seed)
    chosen: list[SourceImage] = []
    for name, count in _allocate(per_source, capacity).items():
        for tree in (real, fake):
            chosen.extend(rng.sample(tree[name], count))  # lists are sorted: deterministic
    rng.shuffle(chosen)
    return chosen


def warn_on_unequal_resampling(chosen: list[SourceImage], size: int) -> str | None:
    """A warning when one source gets upsampled to ``size`` and the other does not.

    Upsampling blurs, so if e.g. 128 px real scans are enlarged to 256 px next to native
    256 px synthetic ones, sharpness alone tells them apart.
    """
    from PIL import Image

    def median_side(synthetic: bool) -> int:
        sides = []
        for item in chosen:
            if item.is_synthetic == synthetic:
                try:
                    with Image.open(item.path) as img:
                        sides.append(min(img.size))
                except (OSError, Image.DecompressionBombError) as err:
                    raise ValueError(f"cannot read image {item.path}: {err}; remove it or convert it") from err
        return sorted(sides)[len(sides) // 2]

    real, fake = median_side(False), median_side(True)
    if (real < size) != (fake < size):
        return (f"warning: --size {size} enlarges the {'real' if real < size else 'synthetic'}"
                f" images (median short side real {real} px, synthetic {fake} px) but not the "
                f"others; the blur can give the source away: consider --size {min(real, fake)}")
    return None


def new_public_id() -> str:
    """24 random URL-safe characters, starting with a letter or digit: an id starting with
    ``-`` would be taken for a formula by spreadsheets (and get a ``'`` in the report CSVs)."""
    while True:
        public_id = secrets.token_urlsafe(18)
        if public_id[0].isalnum():
            return public_id


def _move_no_clobber(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` unless ``dst`` exists (hard link where the file system can)."""
    try:
        os.link(src, dst)  # atomic and fails if dst exists
    except FileExistsError:
        raise
    except OSError:  # no hard links here (some network / FAT file systems)
        if dst.exists():
            raise FileExistsError(dst) from None
        os.replace(src, dst)


def _check_create_options(out: Path, size: int, mode: str) -> None:
    if out.exists():
        raise FileExistsError(f"--out {out} already exists; the study file holds readers' "
                              "votes, so it is never overwritten: choose a new path")
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: folder {out.parent} does not exist; create it first")
    if mode not in MODES:
        raise ValueError(f"--colour must be one of {MODES}, got {mode!r}")
    if not 32 <= size <= 2048:
        raise ValueError(f"--size must be between 32 and 2048 pixels, got {size}")


def create_study(real_dir: str | Path, fake_dir: str | Path, out: str | Path,
                 per_source: int | None = None, seed: int = 0, size: int = 256,
                 mode: str = "L") -> Path:
    """Write a new real-vs-synthetic study file at ``out`` (refuses to overwrite); returns it."""
    out = Path(out)
    _check_create_options(out, size, mode)
    real_root, fake_root = Path(real_dir), Path(fake_dir)
    chosen = draw(scan_tree(real_root, False, "--real"), scan_tree(fake_root, True, "--fake"),
                  per_source, seed)
    warning = warn_on_unequal_resampling(chosen, size)
    if warning:
        print(warning, file=sys.stderr)
    meta = {"study_mode": "real-vs-synthetic", "seed": str(seed), "size": str(size),
            "mode": mode, "per_source": str(len(chosen) // 2),
            "real_root": str(real_root.resolve()), "fake_root": str(fake_root.resolve())}
    return _write_study(out, chosen, meta, size, mode)


def draw_synthetic_only(fake: dict[str, list[SourceImage]], n_images: int | None,
                        seed: int) -> list[SourceImage]:
    """``n_images`` synthetic images spread as evenly over the classes as they allow, shuffled.

    Seed 001 showed 40 images, 20 of them CT ("Out of the twenty CT scans"), so 20 MRI: an even
    split over the two modalities, which is what the water filling gives.
    """
    capacity = {name: len(files) for name, files in fake.items()}
    available = sum(capacity.values())
    n_images = available if n_images is None else n_images
    if n_images < 1:
        raise ValueError(f"--per-source must be >= 1, got {n_images}")
    if n_images > available:
        raise ValueError(f"--per-source {n_images} is more than the {available} images in "
                         "--fake; lower it")
    rng = random.Random(seed)
    chosen: list[SourceImage] = []
    for name, count in _allocate(n_images, capacity).items():
        chosen.extend(rng.sample(fake[name], count))  # lists are sorted: deterministic
    rng.shuffle(chosen)
    return chosen


def create_synthetic_only_study(fake_dir: str | Path, out: str | Path,
                                n_images: int | None = None, seed: int = 0, size: int = 256,
                                mode: str = "L") -> Path:
    """Write a new synthetic-only study file (seed 001's protocol) at ``out``; returns it.

    "Every image we showed the specialists was artificial": only ``fake_dir`` is drawn from.
    The images are blinded exactly as in the real-vs-synthetic mode (re-encoded PNGs, random
    public ids), so readers cannot learn from the files that a generator made them either.
    """
    out = Path(out)
    _check_create_options(out, size, mode)
    fake_root = Path(fake_dir)
    chosen = draw_synthetic_only(scan_tree(fake_root, True, "--fake"), n_images, seed)
    meta = {"study_mode": "synthetic-only", "seed": str(seed), "size": str(size),
            "mode": mode, "per_source": str(len(chosen)),
            "fake_root": str(fake_root.resolve())}
    return _write_study(out, chosen, meta, size, mode)


def _write_study(out: Path, chosen: list[SourceImage], meta: dict[str, str], size: int,
                 mode: str) -> Path:
    meta = {**meta, "order_salt": secrets.token_hex(16)}
    # build next to the target, then hard-link into place: atomic, and fails if --out
    # appeared meanwhile, so a user file is never replaced
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    try:
        conn = db.new_study(tmp, meta)
        with conn:
            for item in chosen:
                conn.execute(
                    "INSERT INTO images (public_id, is_synthetic, class_name, source_path, png)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (new_public_id(), int(item.is_synthetic), item.class_name,
                     item.rel_path, blind_png(item.path, size, mode)))
        conn.execute("PRAGMA journal_mode = WAL")  # persistent; the server relies on it
        conn.close()
        _move_no_clobber(tmp, out)
    except FileExistsError as err:
        raise FileExistsError(f"--out {out} appeared while the study was being built; "
                              "choose a new path") from err
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)
    return out
