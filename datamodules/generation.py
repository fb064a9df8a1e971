"""GenerationDataModule: the requests for a synthetic set (N images per class), resumable.

`synthmed predict` with this DataModule and a generator checkpoint writes
`<output_dir>/<class>/<index>.png` (see `lightning_modules.callbacks.synthetic_writer`). The
requests are (class, index, seed) rows; at `setup` every index whose PNG already exists and
is complete is skipped, so a rerun after a kill continues where it stopped. Seeds depend only
on (seed, class, index), so a resumed set is identical to an uninterrupted one. One folder holds
one set: `synthetic_set.json` records the generator checkpoint's hash and the sampling settings,
and a request with other settings, or a non-empty folder without the record, is refused before
any file is written (`datamodules.synthetic_set_record`).
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from datamodules.weights_digest import checkpoint_weights_sha256
from datamodules.synthetic_set_record import check_or_write_record

log = logging.getLogger(__name__)
SEED_KEY = "synthmed_seed"  # PNG text chunk that marks a finished synthmed image


def image_path(output_dir: Path, class_name: str, index: int) -> Path:
    return output_dir / class_name / f"{index:06d}.png"


def is_complete(path: Path) -> bool:
    """True for a readable PNG that carries synthmed's metadata (a finished, renamed file)."""
    try:
        with Image.open(path) as img:
            img.load()
            return SEED_KEY in getattr(img, "text", {})
    except Exception:  # noqa: BLE001 - any unreadable file counts as missing
        return False


def request_seed(seed: int, label: int, index: int) -> int:
    return (seed * 10_000_019 + label * 1_000_003 + index) % (2**62)


# `label` is the class index (the order of the set's class names), `class_name` its name: an integer
# label is what HFDataModule and `datasets` (with `imagefolder_features`) read as a class label.
METADATA_COLUMNS = ("file_name", "label", "class_name", "seed", "sampler", "steps", "guidance", "checkpoint_sha256")


def write_metadata(output_dir: Path, class_names: list[str]) -> Path:
    """Rebuild `metadata.csv` from the finished PNGs themselves (each carries its own row).

    Deriving it from the files keeps it right after kills, reruns and multi-process writing.
    Written atomically; `file_name` is relative to `output_dir` as `datasets` imagefolder expects.
    """
    rows = []
    for label, name in enumerate(class_names):
        for path in sorted((output_dir / name).glob("*.png")):
            try:
                with Image.open(path) as img:
                    text = dict(getattr(img, "text", {}))
            except Exception:  # noqa: BLE001
                continue
            if SEED_KEY not in text:
                continue
            rows.append([f"{name}/{path.name}", label, name, text[SEED_KEY], text.get("synthmed_sampler", ""),
                         text.get("synthmed_steps", ""), text.get("synthmed_guidance", ""),
                         text.get("synthmed_checkpoint_sha256", "")])
    target = output_dir / "metadata.csv"
    tmp = output_dir / f".metadata.csv.tmp{os.getpid()}"
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(METADATA_COLUMNS)
        writer.writerows(rows)
    os.replace(tmp, target)
    return target


class _Requests(Dataset):
    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


class GenerationDataModule(LightningDataModule):
    """Requests `num_per_class` images of every class for `synthmed predict`.

    Args:
        num_per_class: images per class in the finished set.
        class_names: the generator's classes, in its training order (the checkpoint is checked).
        output_dir: where `<class>/<index>.png` and `metadata.csv` go; keep it fixed to resume.
        seed: base seed; image (class c, index i) uses `request_seed(seed, c, i)`.
        batch_size: images sampled together (per device).
        channels / image_size: what the generator produces (linked into the model).
        captions: class name -> prompt, for text-conditional generators (default
            "An ultrasound image of <class>" style prompts must be given explicitly).
        sampler / num_inference_steps / guidance_scale / eta: override the generator's own
            sampling settings for this set (null = the checkpoint's). They travel with each
            request, because `--ckpt_path` makes Lightning's CLI rebuild the model from the
            checkpoint's hyper-parameters, ignoring `--model.*` overrides.
    """

    def __init__(self, num_per_class: int, class_names: list[str], output_dir: str = "synthetic", seed: int = 0,
                 batch_size: int = 32, channels: int = 1, image_size: int = 32,
                 captions: dict[str, str] | None = None, num_workers: int = 0, sampler: str | None = None,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 eta: float | None = None):
        super().__init__()
        if num_per_class < 1:
            raise ValueError(f"data.num_per_class={num_per_class} must be >= 1")
        if not class_names:
            raise ValueError("data.class_names is empty: give the generator's class names in training order "
                             "(e.g. [benign, malignant, normal])")
        if captions is not None and set(captions) != set(class_names):
            raise ValueError(f"data.captions must give one prompt per class {class_names}; got {sorted(captions)}")
        self.num_per_class, self.class_names = num_per_class, list(class_names)
        self.num_classes, self.channels, self.image_size = len(class_names), channels, image_size
        self.output_dir = Path(output_dir)
        self.seed, self.batch_size, self.num_workers, self.captions = seed, batch_size, num_workers, captions
        self.requests: list[dict[str, Any]] = []
        self.checkpoint_sha256 = "none"
        self.checkpoint_path: str | None = None  # the generator checkpoint `predict` restores (set by the CLI)
        if sampler is not None and sampler not in ("ddim", "ddpm", "dpmsolver++"):
            raise ValueError(f"data.sampler={sampler!r}; use ddim, dpmsolver++ or ddpm")
        self.sampling = {k: v for k, v in {"sampler": sampler, "num_inference_steps": num_inference_steps,
                                           "guidance_scale": guidance_scale, "eta": eta}.items() if v is not None}

    def pending(self) -> list[dict[str, Any]]:
        """Request rows whose image is not finished yet (also removes stale temporary files)."""
        for tmp in [*self.output_dir.glob("*/.*.tmp*"), *self.output_dir.glob(".*.tmp*")]:
            tmp.unlink(missing_ok=True)
        rows = []
        for label, name in enumerate(self.class_names):
            for index in range(self.num_per_class):
                if is_complete(image_path(self.output_dir, name, index)):
                    continue
                row = {"label": torch.tensor(label), "index": torch.tensor(index),
                       "seed": torch.tensor(request_seed(self.seed, label, index))}
                if self.captions is not None:
                    row["caption"] = self.captions[name]
                row.update(self.sampling)
                rows.append(row)
        return rows

    def set_record(self) -> dict[str, Any]:
        """What this set is generated with (see `datamodules.synthetic_set_record`): the generator
        checkpoint's weights sha256 (`datamodules.weights_digest`: the same weights give the same
        value wherever the run lives) and the effective sampling settings (the model's, overridden by ours)."""
        trainer = self.trainer
        # Lightning learns `predict(ckpt_path=...)` only after setup: the CLI sets `checkpoint_path` for it
        ckpt = self.checkpoint_path or (getattr(trainer, "ckpt_path", None) if trainer is not None else None)
        self.checkpoint_sha256 = checkpoint_weights_sha256(ckpt) if ckpt and Path(ckpt).is_file() else "none"
        hparams = getattr(getattr(trainer, "lightning_module", None), "hparams", None) or {}
        sampling = {k: hparams[k] for k in ("sampler", "num_inference_steps", "guidance_scale", "eta") if k in hparams}
        sampling.update(self.sampling)
        return {"checkpoint_sha256": self.checkpoint_sha256, "checkpoint": str(ckpt) if ckpt else None,
                **sampling, "seed": self.seed, "class_names": self.class_names, "captions": self.captions,
                "image_size": self.image_size, "channels": self.channels, "num_per_class": self.num_per_class}

    def _check_output_dir(self) -> None:
        """Refuse a folder holding anything but this same set, before anything is written (rank zero
        decides and writes the record; the other ranks check it after a barrier)."""
        trainer = self.trainer
        rank_zero = trainer is None or trainer.is_global_zero
        record = self.set_record()
        if rank_zero:
            check_or_write_record(self.output_dir, record, write=True)
        if trainer is not None and trainer.world_size > 1:
            trainer.strategy.barrier("synthetic_set_record")
        if not rank_zero:
            check_or_write_record(self.output_dir, record, write=False)

    def setup(self, stage: str) -> None:
        if stage != "predict":
            raise ValueError(f"GenerationDataModule only serves `predict` (got {stage!r}); train the generator "
                             "with an image DataModule")
        self._check_output_dir()
        self.requests = self.pending()
        if not self.requests and self.output_dir.is_dir():
            write_metadata(self.output_dir, self.class_names)  # e.g. killed after the last image
        done = self.num_per_class * self.num_classes - len(self.requests)
        log.info("synthetic set %s: %d of %d images done, %d to generate", self.output_dir, done,
                 self.num_per_class * self.num_classes, len(self.requests))

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(_Requests(self.requests), batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers)
