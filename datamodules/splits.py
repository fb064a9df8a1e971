"""Every split, fold, subsample, group and overlap decision, shared by all DataModules.

The input is a *catalogue*: a DataFrame with one row per image and the columns

    key           relative path (or an id) that names the image in messages and manifests
    label         int class index
    class_name    str
    source_split  "train" | "val" | "test" | "" (a split the data came with, e.g. Training/Testing),
                  "extra" (always training data, never subsampled or validated: e.g. synthetic images added
                  to real ones) or "excluded" (left out before splitting)
    pixel_sha256  hash of the decoded pixels and their size (`datamodules.pixel_hashes`): the same
                  picture saved as PNG, BMP or another PNG has one pixel_sha256
    group         patient / scan id ("" when unknown)

and optionally `file_sha256` (the file's bytes, for files; for in-memory sources such as the
phantoms, the bytes of the array as rendered) and `dhash` (a 64-bit perceptual hash, for the
near-duplicate report).

Split units are *named* by the smallest `file_sha256` among their members (falling back to the
pixel hash): units are shuffled in name order, so naming them as the loaders did before pixel
hashing (by file bytes) keeps every existing split, fold and subsample exactly as it was; pixel
hashes only *join* units (a picture re-saved in another format lands beside its twin).

`assign_splits` returns the same frame with `split` in {train, val, test, excluded} and `fold`
(-1 outside the training portion), deterministically from `seed`. `audit_overlap` then applies
the `on_overlap` policy. The manifest written into each run directory is this frame.

Pixel-identical images are always put in the same group before any split we make ourselves, so a
split of ours never puts one picture on both sides; splits that come with the data (Training /
Testing trees) are audited instead, because those are the user's and must not be silently changed.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from datamodules.pixel_hashes import CANDIDATE_BITS, NEAR_DUPLICATE_MAD, near_pairs

from datamodules.hashing import file_sha256

log = logging.getLogger(__name__)

OnOverlap = Literal["error", "drop_test", "allow"]
SubsampleMode = Literal["keep", "complement"]


class SplitError(ValueError):
    """A split cannot be made as configured (the message says which option to change)."""


@dataclass
class SplitOptions:
    """The split options every DataModule exposes (see `BaseImageDataModule`)."""

    test_fraction: float = 0.2
    val_fraction: float = 0.1
    num_folds: int = 5
    fold: int | None = None
    subsample_fraction: float | None = None
    subsample: SubsampleMode = "keep"
    group_pattern: str | None = None
    seed: int = 0
    on_overlap: OnOverlap = "error"

    def validate(self) -> None:
        for name in ("test_fraction", "val_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise SplitError(f"data.{name}={value} must be in [0, 1)")
        if self.subsample_fraction is not None and not 0.0 < self.subsample_fraction < 1.0:
            raise SplitError(f"data.subsample_fraction={self.subsample_fraction} must be in (0, 1)")
        if self.subsample not in ("keep", "complement"):
            raise SplitError(f"data.subsample={self.subsample!r} must be 'keep' or 'complement'")
        if self.on_overlap not in ("error", "drop_test", "allow"):
            raise SplitError(f"data.on_overlap={self.on_overlap!r} must be error, drop_test or allow")
        if self.fold is not None:
            if self.num_folds < 2:
                raise SplitError(f"data.num_folds={self.num_folds} must be >= 2 when data.fold is set")
            if not 0 <= self.fold < self.num_folds:
                raise SplitError(f"data.fold={self.fold} must be in [0, {self.num_folds - 1}]")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


sha256_file = file_sha256  # the one file-hash helper (datamodules/hashing.py), streamed


def groups_from_pattern(keys: pd.Series, pattern: str | None) -> pd.Series:
    """Patient/scan id per image from `group_pattern` (first regex group, matched on the file name).

    Names that do not match keep their own group and are counted in a warning; a pattern that
    matches nothing is an error, because then grouping would silently do nothing.
    """
    if not pattern:
        return pd.Series([""] * len(keys), index=keys.index)
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise SplitError(f"data.group_pattern={pattern!r} is not a valid regex: {exc}") from exc
    if regex.groups < 1:
        raise SplitError(f"data.group_pattern={pattern!r} needs one capture group, e.g. '^(\\d+) \\('")
    names = keys.map(lambda k: Path(str(k)).name)
    found = names.map(lambda n: (m.group(1) if (m := regex.search(n)) else None))
    misses = int(found.isna().sum())
    if misses == len(keys) and len(keys):
        raise SplitError(
            f"data.group_pattern={pattern!r} matched none of {len(keys)} file names "
            f"(first: {names.iloc[0]!r}); fix the pattern or leave it unset"
        )
    if misses:
        log.warning("group_pattern %r did not match %d file names; each keeps its own group", pattern, misses)
    return found.fillna("").astype(str)


def _connected_groups(df: pd.DataFrame) -> pd.Series:
    """One id per connected component of 'same patient group' OR 'same content hash'."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    # Roots are the smallest name in a component ("g:" < "h:" < "k:" < "p:"): a patient group, else the
    # smallest source hash, as before pixel hashing existed, so that existing splits do not move.
    names = df["file_sha256"] if "file_sha256" in df.columns else df["pixel_sha256"]
    for key, group, digest, name in zip(df["key"], df["group"], df["pixel_sha256"], names):
        node = f"k:{key}"
        union(node, f"p:{digest}")
        union(node, f"h:{name if isinstance(name, str) and name else digest}")
        if group:
            union(node, f"g:{group}")
    return df["key"].map(lambda k: find(f"k:{k}"))


def _majority_label(df: pd.DataFrame, unit: pd.Series) -> pd.Series:
    return df.groupby(unit)["label"].agg(lambda s: s.value_counts().sort_index().idxmax())


def stratified_group_fraction(df: pd.DataFrame, unit: pd.Series, fraction: float, seed: int) -> pd.Series:
    """Boolean mask selecting ~`fraction` of the rows per class, whole groups at a time.

    Hand-written because scikit-learn has no stratified *group* shuffle split: per class (the
    group's majority label), groups are shuffled by `seed` and taken until the class reaches
    round(n_class * fraction) images. Deterministic for a given catalogue and seed.
    """
    rng = np.random.RandomState(seed)
    unit_label = _majority_label(df, unit)
    sizes = unit.value_counts()
    chosen: set = set()
    for label in sorted(unit_label.unique()):
        units = sorted(unit_label.index[unit_label == label])
        rng.shuffle(units)
        target = round(int(sizes[units].sum()) * fraction)
        taken = 0
        for u in units:
            if taken >= target:
                break
            chosen.add(u)
            taken += int(sizes[u])
    return unit.isin(chosen)


def subsample_mask(df: pd.DataFrame, fraction: float, mode: SubsampleMode, seed: int) -> pd.Series:
    """The rows `assign_splits` keeps with `subsample_fraction` on a pool of exactly these rows.

    Used for a separate test tree: the same tree, fraction and seed give the same selection as the
    generator's DataModule made (groups are named by content hash, not by path, so key prefixes
    do not matter), and `complement` is then the untouched rest.
    """
    df = df.assign(group=df["group"].fillna("").astype(str))
    picked = stratified_group_fraction(df, _connected_groups(df), fraction, seed + 1)
    return picked if mode == "keep" else ~picked


def assign_folds(df: pd.DataFrame, unit: pd.Series, num_folds: int, seed: int) -> pd.Series:
    """Stratified group k-fold (scikit-learn) over the rows given; returns the fold per row."""
    n_units = unit.nunique()
    if n_units < num_folds:
        raise SplitError(
            f"data.num_folds={num_folds} but the training portion has only {n_units} groups; "
            "use fewer folds or more data"
        )
    splitter = StratifiedGroupKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    folds = pd.Series(-1, index=df.index, dtype=int)
    for k, (_, val_idx) in enumerate(splitter.split(np.zeros(len(df)), df["label"].to_numpy(), unit.to_numpy())):
        folds.iloc[val_idx] = k
    return folds


def assign_splits(catalogue: pd.DataFrame, opts: SplitOptions) -> pd.DataFrame:
    """Add `split` and `fold` columns (see module docstring for the order of decisions)."""
    opts.validate()
    df = catalogue.copy()
    df["group"] = df["group"].fillna("").astype(str)
    df["split"] = ""
    df["fold"] = -1
    unit = _connected_groups(df)
    df.loc[df["source_split"] == "excluded", "split"] = "excluded"
    extra = df["source_split"] == "extra"

    preset = set(df["source_split"].fillna("")) - {"", "extra", "excluded"}
    if "test" in preset:
        is_test = df["source_split"] == "test"
    elif opts.test_fraction > 0:
        real = ~extra & (df["split"] != "excluded")
        is_test = stratified_group_fraction(df[real], unit[real], opts.test_fraction, opts.seed)
        is_test = is_test.reindex(df.index, fill_value=False)
    else:
        is_test = pd.Series(False, index=df.index)
    df.loc[is_test, "split"] = "test"

    preset_val = (df["source_split"] == "val") & ~is_test
    use_preset_val = bool(preset_val.any()) and opts.fold is None
    pool = ~is_test & ~(preset_val if use_preset_val else False) & ~extra & (df["split"] != "excluded")

    if opts.subsample_fraction is not None:
        picked = stratified_group_fraction(df[pool], unit[pool], opts.subsample_fraction, opts.seed + 1)
        keep = picked if opts.subsample == "keep" else ~picked
        dropped = picked.index[~keep]
        df.loc[dropped, "split"] = "excluded"
        pool = pool & ~df.index.isin(dropped)
    # Extra trees (e.g. synthetic images in TR+S) always train and never validate: a validation
    # score on generated images would measure the generator, not the task, and folds are drawn
    # over the real pool only so that TRTR and TR+S validate on the same real images.
    df.loc[extra, "split"] = "train"

    if use_preset_val:
        df.loc[preset_val, "split"] = "val"
        df.loc[pool, "split"] = "train"
    elif opts.fold is not None:
        folds = assign_folds(df[pool], unit[pool], opts.num_folds, opts.seed + 2)
        df.loc[pool, "fold"] = folds
        df.loc[pool, "split"] = np.where(folds == opts.fold, "val", "train")
    elif opts.val_fraction > 0:
        is_val = stratified_group_fraction(df[pool], unit[pool], opts.val_fraction, opts.seed + 3)
        df.loc[is_val.index, "split"] = np.where(is_val, "val", "train")
    else:
        df.loc[pool, "split"] = "train"
    return df


def overlap_pairs(df: pd.DataFrame, side_a: str, side_b: str) -> pd.DataFrame:
    """Pairs of rows with identical pixels, one in split `side_a`, one in `side_b`."""
    a = df[df["split"] == side_a][["key", "pixel_sha256", "class_name"]]
    b = df[df["split"] == side_b][["key", "pixel_sha256", "class_name"]]
    return a.merge(b, on="pixel_sha256", suffixes=(f"_{side_a}", f"_{side_b}"))


def near_duplicate_lines(df: pd.DataFrame, where: str, thumbnails: Mapping[str, np.ndarray] | None) -> list[str]:
    """Report lines for test images that nearly equal a train/val image without being pixel-identical
    (those are the overlap proper): see `datamodules.pixel_hashes`. Needs the `dhash` and `path`
    columns and each path's thumbnail; [] otherwise (in-memory data)."""
    if not thumbnails or "dhash" not in df.columns or "path" not in df.columns:
        return []
    test = df[df["split"] == "test"]
    train = df[df["split"].isin(["train", "val"])]
    if not len(test) or not len(train):
        return []
    thumbs = lambda part: np.stack([thumbnails[p] for p in part["path"]])
    pairs = [(test.iloc[i], train.iloc[j], bits, mad) for i, j, bits, mad in
             near_pairs(test["dhash"], train["dhash"], thumbs(test), thumbs(train))]
    pairs = [p for p in pairs if p[0]["pixel_sha256"] != p[1]["pixel_sha256"]]
    if not pairs:
        return []
    lines = [f"warning: {len(pairs)} near-duplicate pairs between test and training data under {where} "
             f"(perceptual hash within {CANDIDATE_BITS} of 64 bits and 32x32 thumbnails within "
             f"{NEAR_DUPLICATE_MAD:g} grey levels, pixels not identical): likely one picture re-encoded; "
             "not removed by on_overlap (test ~ train, hash bits, grey levels):"]
    return lines + [f"  {t['key']}  ~  {r['key']}  ({bits}, {mad:.2f})" for t, r, bits, mad in pairs]


def audit_overlap(df: pd.DataFrame, on_overlap: OnOverlap, where: str,
                  thumbnails: Mapping[str, np.ndarray] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Apply the `on_overlap` policy to train/val-vs-test content overlap; report the rest.

    Returns the (possibly modified) frame and the report lines. `where` names the data root in
    messages. With `drop_test`, test copies become split "excluded" with note "overlap_dropped".
    """
    report: list[str] = []
    if "note" not in df.columns:
        df["note"] = ""
    pairs = pd.concat([overlap_pairs(df, "train", "test"), overlap_pairs(df, "val", "test").rename(
        columns=lambda c: c.replace("_val", "_train"))], ignore_index=True)
    if len(pairs):
        groups = pairs["pixel_sha256"].nunique()
        lines = [f"  {r.key_test}  ==  {r.key_train}" for r in pairs.itertuples()]
        summary = (f"{groups} images with identical content (decoded pixels) are in both training and test data "
                   f"under {where}: {len(pairs)} pairs (test == train)")
        if on_overlap == "error":
            raise SplitError(
                summary + ":\n" + "\n".join(lines) +
                "\nSet data.on_overlap to 'drop_test' to remove the test copies, or 'allow' to keep them."
            )
        test_keys = set(pairs["key_test"])
        if on_overlap == "drop_test":
            hit = df["key"].isin(test_keys) & (df["split"] == "test")
            df.loc[hit, "split"] = "excluded"
            df.loc[hit, "note"] = "overlap_dropped"
            report.append(summary + f"; on_overlap=drop_test removed {int(hit.sum())} test images:")
        else:
            df.loc[df["key"].isin(test_keys), "note"] = "overlap_allowed"
            report.append(summary + "; on_overlap=allow keeps them, test scores are optimistic:")
        report.extend(lines)
    for split in ("train", "val", "test"):
        part = df[df["split"] == split]
        dup = part[part.duplicated("pixel_sha256", keep=False)]
        if len(dup):
            report.append(f"{split}: {dup['pixel_sha256'].nunique()} groups of pixel-identical images "
                          f"({len(dup)} images) inside the split")
    conflicts = df.groupby("pixel_sha256")["class_name"].nunique()
    for digest in conflicts.index[conflicts > 1]:
        keys = df.loc[df["pixel_sha256"] == digest, "key"].tolist()
        report.append(f"identical content with conflicting labels: {', '.join(keys)}")
    near = near_duplicate_lines(df, where, thumbnails)
    for line in report + near[:11]:
        log.warning(line)
    if len(near) > 11:
        log.warning("  ... %d more near-duplicate pairs in data_audit.txt", len(near) - 11)
    return df, report + near
