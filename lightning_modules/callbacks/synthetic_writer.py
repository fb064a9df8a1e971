"""SyntheticSetWriter: writes what `predict` generates as an ImageFolder tree + metadata.csv.

Layout (read by `datasets.load_dataset("imagefolder", data_dir=...)` and `ImageFolderDataModule`):

    <output_dir>/<class>/<index:06d>.png    one image, with its own metadata in PNG text chunks
    <output_dir>/metadata.csv               file_name, label (class index), class_name, seed, sampler,
                                            steps, guidance, checkpoint_sha256 (rebuilt from the PNGs
                                            at the end; `datamodules.hf.imagefolder_features` makes
                                            `label` a datasets ClassLabel)

Each PNG is written under a temporary name and renamed, so a kill never leaves a partial file;
`GenerationDataModule` skips finished indices on the rerun. Under DDP, Lightning's predict
sampler gives every request to exactly one rank (each rank writes its own PNGs), and only rank
zero writes metadata.csv, after the ranks have gathered how many images each wrote (logged as
"per rank: [...]").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from datamodules.generation import SEED_KEY, image_path, write_metadata
from datamodules.weights_digest import checkpoint_weights_sha256


def weights_sha256(path: str | os.PathLike | None) -> str:
    """The generator's id in each PNG: the sha256 of the checkpoint's weights, not of its bytes (those
    hold the run's paths, so the same run in two folders would write other PNG bytes and other folds)."""
    if not path or not Path(path).is_file():
        return "none"
    return checkpoint_weights_sha256(path)


def save_png_atomic(array: np.ndarray, path: Path, text: dict[str, str]) -> None:
    """Write uint8 HxW or HxWx3 `array` to `path` via a temporary file and an atomic rename."""
    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, str(value))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    Image.fromarray(array).save(tmp, format="PNG", pnginfo=info)
    os.replace(tmp, path)


class SyntheticSetWriter(BasePredictionWriter):
    """Write generated images and their metadata (see the module docstring).

    Args:
        output_dir: where to write; null = the GenerationDataModule's `output_dir`.
    """

    def __init__(self, output_dir: str | None = None):
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir) if output_dir else None
        self.checkpoint_sha256 = "none"
        self.written = 0

    def _resolve(self, trainer: "pl.Trainer") -> tuple[Path, list[str]]:
        datamodule = trainer.datamodule
        class_names = getattr(datamodule, "class_names", None)
        if not class_names:
            raise ValueError("SyntheticSetWriter needs a DataModule with class_names (use "
                             "datamodules.generation.GenerationDataModule for predict)")
        out = self.output_dir or getattr(datamodule, "output_dir", None)
        if out is None:
            raise ValueError("SyntheticSetWriter: give output_dir (or use a GenerationDataModule with output_dir)")
        if self.output_dir and Path(getattr(datamodule, "output_dir", out)) != self.output_dir:
            raise ValueError(f"writer output_dir {self.output_dir} differs from data.output_dir "
                             f"{datamodule.output_dir}: resuming would redo finished images; make them equal")
        return Path(out), list(class_names)

    def on_predict_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._out, self._class_names = self._resolve(trainer)
        self._out.mkdir(parents=True, exist_ok=True)
        known = getattr(trainer.datamodule, "checkpoint_sha256", None)  # GenerationDataModule hashed it already
        self.checkpoint_sha256 = known if known not in (None, "none") else weights_sha256(trainer.ckpt_path)
        self.written = 0

    def write_on_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", prediction: dict[str, Any],
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int) -> None:
        images = prediction["images"]
        arrays = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for array, label, index, seed in zip(arrays, prediction["label"], prediction["index"], prediction["seed"]):
            name = self._class_names[int(label)]
            text = {SEED_KEY: int(seed), "synthmed_label": name, "synthmed_sampler": prediction["sampler"],
                    "synthmed_steps": prediction["steps"], "synthmed_guidance": prediction["guidance"],
                    "synthmed_checkpoint_sha256": self.checkpoint_sha256}
            save_png_atomic(array[..., 0] if array.shape[-1] == 1 else array,
                            image_path(self._out, name, int(index)), text)
            self.written += 1

    def on_predict_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # a collective on every rank (it is also the barrier before rank zero reads the PNGs)
        per_rank = pl_module.all_gather(torch.tensor(self.written)).reshape(-1).tolist()
        if trainer.is_global_zero:
            write_metadata(self._out, self._class_names)
            rank_zero_info(f"synthetic set: {self._out} ({sum(per_rank)} new images; per rank: {per_rank})")
