"""Shared DataModule machinery and the batch contract.

Every DataModule yields dicts:

    image    float32 B x C x H x W in [-1, 1]    (C = `channels`)
    label    int64 B                             (-1 when unlabeled)
    index    int64 B                             (row in the split manifest)
    caption  list[str]                           (when captions exist)
    mask     float32 B x 1 x H x W in {0, 1}     (when masks exist)

A subclass only says what images exist (`build_catalogue`) and how to read one (`load_image`,
optionally `load_mask` / `caption_for`). This base does the rest: splits and folds
(`datamodules.splits`), the overlap audit, decoding every kept image once into a uint8 cache at
`setup` (so a corrupt file fails at setup, never mid-epoch, and decoding is never the
bottleneck), augmentation, and the `split_manifest.csv` in the run directory.

The training loader is resumable: its order depends only on (seed, epoch) and its position
inside the epoch is saved in every checkpoint, so a fit killed mid-epoch and resumed with
`--ckpt_path last` trains on exactly the batches the uninterrupted run would have (see
`ResumableDataLoader`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, RandomSampler

from datamodules.image_io import to_model_array
from datamodules.splits import OnOverlap, SplitOptions, SubsampleMode, assign_splits, audit_overlap
from datamodules.transforms import build_augmentation

log = logging.getLogger(__name__)


class CachedImageDataset(Dataset):
    """Images already decoded to uint8 C x S x S, turned into contract dicts on access."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray,
                 masks: np.ndarray | None = None, captions: list[str] | None = None, augment=None):
        self.images, self.labels, self.indices = images, labels, indices
        self.masks, self.captions, self.augment = masks, captions, augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = self.images[i].transpose(1, 2, 0)  # HWC uint8 for albumentations
        mask = self.masks[i] if self.masks is not None else None
        if self.augment is not None:
            out = self.augment(image=image, mask=mask) if mask is not None else self.augment(image=image)
            image = out["image"]
            mask = out.get("mask", mask)
        if image.ndim == 2:
            image = image[..., None]
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div(127.5).sub(1.0),
            "label": torch.tensor(int(self.labels[i]), dtype=torch.long),
            "index": torch.tensor(int(self.indices[i]), dtype=torch.long),
        }
        if mask is not None:
            item["mask"] = torch.from_numpy(np.ascontiguousarray(mask)).float().unsqueeze(0).clamp(0, 1)
        if self.captions is not None:
            item["caption"] = self.captions[i]
        return item


class EpochShuffleSampler(RandomSampler):
    """A fresh random order every epoch that depends only on (seed, epoch).

    The same convention as torch's `DistributedSampler` (`seed + epoch`), which Lightning puts
    in place of this sampler under DDP (it subclasses `RandomSampler`, so Lightning sees a
    shuffled loader). Unlike a plain `RandomSampler`, the order never depends on how much of
    the global random stream was used before, so a resumed run can recompute it.
    """

    def __init__(self, data_source, seed: int = 0):
        super().__init__(data_source)
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


class _SkipFirstBatches:
    """A batch (index) sampler that drops its first `count` batches, once: the batches a killed run
    already trained on. Only their indices are drawn; no image is loaded. `len` stays the full
    epoch because Lightning counts the skipped batches as done."""

    def __init__(self, batches, count: int):
        self.batches, self.count = batches, count

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        iterator = iter(self.batches)
        count, self.count = self.count, 0  # persistent workers iterate this object again next epoch
        for _ in range(count):
            next(iterator, None)
        yield from iterator


def _sampler_epoch(loader: DataLoader) -> int | None:
    for sampler in (loader.sampler, getattr(loader.batch_sampler, "sampler", None)):
        if hasattr(sampler, "epoch"):
            return int(sampler.epoch)
    return None


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position inside an epoch survives a kill (Lightning's loader state protocol).

    Lightning stores `state_dict()` (epoch, batches of that epoch handed out) in every checkpoint
    and calls `load_state_dict()` when a fit resumes. The next iteration of the *same* epoch then
    skips the batches already trained on; if Lightning has moved on to the next epoch (the
    checkpoint was written at an epoch end) nothing is skipped. Exact only when the order is a
    function of the epoch (`EpochShuffleSampler`; under DDP Lightning's `DistributedSampler`,
    whose position is the same on every rank). The iterator is created lazily, at the first
    batch, so it always sees the epoch Lightning set (a resumed fit creates it before
    `set_epoch`). Not for `num_workers > 0` with augmentations that draw from worker RNGs: those
    draws are not part of the state.
    """

    # class-level defaults: DataLoader.__init__ stays untouched, so Lightning can re-create the
    # loader with a DistributedSampler from the captured arguments
    _resume_state: dict | None = None
    _skip_batches = 0
    _epoch_in_progress: int | None = None
    _batches_handed_out = 0

    def state_dict(self) -> dict:
        return {"epoch": self._epoch_in_progress, "batches": self._batches_handed_out}

    def load_state_dict(self, state: dict) -> None:
        self._resume_state = dict(state)

    @property
    def _index_sampler(self):
        sampler = super()._index_sampler
        return _SkipFirstBatches(sampler, self._skip_batches) if self._skip_batches else sampler

    def __iter__(self):
        return self._iterate()

    def _iterate(self):
        epoch, skip = _sampler_epoch(self), 0
        saved, self._resume_state = self._resume_state, None
        if saved is not None and saved.get("epoch") in (None, epoch) and int(saved.get("batches", 0)) < len(self):
            skip = int(saved["batches"])
        self._skip_batches = skip
        try:
            iterator = super().__iter__()
        finally:
            self._skip_batches = 0
        self._epoch_in_progress, self._batches_handed_out = epoch, skip
        for batch in iterator:
            self._batches_handed_out += 1  # counted before the step runs: a checkpoint inside it includes it
            yield batch


class BaseImageDataModule(LightningDataModule):
    """Options and behaviour common to every synthmed DataModule.

    Args:
        image_size: square side images are resized to.
        channels: 1 (grayscale) or 3 (RGB) for the `image` tensor.
        batch_size: per device (under DDP each rank gets this many; no learning rate is rescaled).
        num_workers: DataLoader workers (0 is best on a 2-core machine: images are pre-decoded).
        resize_mode: "pad" keeps the aspect ratio (letterbox), "stretch" squashes, "crop" centre-crops.
        test_fraction / val_fraction / num_folds / fold / subsample_fraction / subsample /
        group_pattern / seed / on_overlap: see `datamodules.splits`.
        train_transforms: albumentations pipeline as a list of {name: <Transform>, ...kwargs}.
        augment_eval: also augment val/test (default off).
    """

    def __init__(
        self,
        image_size: int = 64,
        channels: int = 1,
        batch_size: int = 32,
        num_workers: int = 0,
        resize_mode: str = "pad",
        test_fraction: float = 0.2,
        val_fraction: float = 0.1,
        num_folds: int = 5,
        fold: int | None = None,
        subsample_fraction: float | None = None,
        subsample: SubsampleMode = "keep",
        group_pattern: str | None = None,
        seed: int = 0,
        on_overlap: OnOverlap = "error",
        train_transforms: list[dict[str, Any]] | None = None,
        augment_eval: bool = False,
    ):
        super().__init__()
        if channels not in (1, 3):
            raise ValueError(f"data.channels={channels} must be 1 or 3")
        if image_size < 8:
            raise ValueError(f"data.image_size={image_size} must be >= 8")
        if resize_mode not in ("pad", "stretch", "crop"):
            raise ValueError(f"data.resize_mode={resize_mode!r} must be pad, stretch or crop")
        self.image_size, self.channels = image_size, channels
        self.batch_size, self.num_workers, self.resize_mode = batch_size, num_workers, resize_mode
        self.split_options = SplitOptions(
            test_fraction=test_fraction, val_fraction=val_fraction, num_folds=num_folds, fold=fold,
            subsample_fraction=subsample_fraction, subsample=subsample, group_pattern=group_pattern,
            seed=seed, on_overlap=on_overlap,
        )
        self.split_options.validate()
        self.train_transforms = train_transforms
        self.augment_eval = augment_eval
        self.class_names: list[str] = []
        self.manifest: pd.DataFrame | None = None
        self.audit_report: list[str] = []
        self.thumbnails: dict[str, np.ndarray] = {}  # path -> 32 x 32 grey, for the near-duplicate audit
        self._datasets: dict[str, CachedImageDataset] = {}

    # ---- what a subclass provides -------------------------------------------------------------
    def build_catalogue(self) -> pd.DataFrame:
        """Rows: key, label, class_name, source_split, pixel_sha256, group (see datamodules.splits)."""
        raise NotImplementedError

    def load_image(self, row: pd.Series) -> np.ndarray:
        """Decoded image as uint8 H x W or H x W x C (any size); errors name the file."""
        raise NotImplementedError

    def model_array(self, row: pd.Series) -> np.ndarray:
        """The image as the model gets it: uint8 C x image_size x image_size (decoded + resized)."""
        return to_model_array(self.load_image(row), self.image_size, self.channels, self.resize_mode)

    def load_mask(self, row: pd.Series) -> np.ndarray | None:
        """Lesion mask as H x W (nonzero = lesion), or None when the data has no masks."""
        return None

    def caption_for(self, row: pd.Series) -> str | None:
        return None

    def describe_source(self) -> str:
        return type(self).__name__

    # ---- contract attributes ------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # ---- setup ------------------------------------------------------------------------------
    def prepare_manifest(self) -> pd.DataFrame:
        """Catalogue, split and audit once (cheap: no pixels are decoded here)."""
        if self.manifest is None:
            catalogue = self.build_catalogue()
            manifest = assign_splits(catalogue, self.split_options)
            manifest, self.audit_report = audit_overlap(
                manifest, self.split_options.on_overlap, self.describe_source(), self.thumbnails)
            self.manifest = manifest.reset_index(drop=True)
            self._log_split_counts()
        return self.manifest

    def setup(self, stage: str | None = None) -> None:
        self.prepare_manifest()
        self._write_manifest()
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in wanted.get(stage or "", ("train", "val", "test")):
            if split not in self._datasets:
                self._datasets[split] = self._build_dataset(split)

    def _log_split_counts(self) -> None:
        counts = self.manifest.groupby(["split", "class_name"]).size().unstack(fill_value=0)
        log.info("%s split counts:\n%s", self.describe_source(), counts.to_string())

    def _run_dir(self) -> Path | None:
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.log_dir is None:
            return None
        return Path(trainer.log_dir)

    def _write_manifest(self) -> None:
        run_dir = self._run_dir()  # on every rank: trainer.log_dir is a collective (broadcast) under DDP
        trainer = getattr(self, "trainer", None)
        if run_dir is None or self.manifest is None or (trainer is not None and not trainer.is_global_zero):
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self.manifest.to_csv(run_dir / "split_manifest.csv", index_label="index")
        if self.audit_report:
            (run_dir / "data_audit.txt").write_text("\n".join(self.audit_report) + "\n")

    def _build_dataset(self, split: str) -> CachedImageDataset:
        rows = self.manifest[self.manifest["split"] == split]
        size = self.image_size
        images = np.zeros((len(rows), self.channels, size, size), dtype=np.uint8)
        masks, captions = None, None
        for j, (_, row) in enumerate(rows.iterrows()):
            images[j] = self.model_array(row)
            mask = self.load_mask(row)
            if mask is not None:
                if masks is None:
                    masks = np.zeros((len(rows), size, size), dtype=np.uint8)
                masks[j] = to_model_array((mask > 0).astype(np.uint8) * 255, size, 1, self.resize_mode,
                                          nearest=True)[0] > 127
            caption = self.caption_for(row)
            if caption is not None:
                captions = captions if captions is not None else [""] * len(rows)
                captions[j] = caption
        augment = None
        if self.train_transforms and (split == "train" or self.augment_eval):
            # albumentations keeps its own random state, untouched by seed_everything: seed it from
            # torch's initial seed (which seed_everything sets) so a seeded run augments the same way
            augment = build_augmentation(self.train_transforms, seed=torch.initial_seed() % 2**32)
        return CachedImageDataset(images, rows["label"].to_numpy(), rows.index.to_numpy(),
                                  masks, captions, augment)

    # ---- loaders ----------------------------------------------------------------------------
    def dataset(self, split: str) -> CachedImageDataset:
        if split not in self._datasets:
            self.setup(None)
        return self._datasets[split]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self.dataset(split)
        if len(ds) == 0:
            raise ValueError(f"{self.describe_source()}: the {split} split is empty; check the split options")
        options = dict(batch_size=self.batch_size, num_workers=self.num_workers,
                       persistent_workers=self.num_workers > 0, drop_last=False)
        if not shuffle:
            return DataLoader(ds, shuffle=False, **options)
        # seeded like Lightning's DistributedSampler (seed_everything's seed), and with its own
        # generator for worker seeds, so the global random stream never decides the data order
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        return ResumableDataLoader(ds, sampler=EpochShuffleSampler(ds, seed=seed),
                                   generator=torch.Generator().manual_seed(seed), **options)

    def has_split(self, split: str) -> bool:
        return bool((self.prepare_manifest()["split"] == split).any())

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
