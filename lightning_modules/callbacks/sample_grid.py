"""Sample grids during training: same seeds and labels every time, so epochs compare (seed 000, Fig. 5)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torchvision.utils import make_grid, save_image

from lightning_modules.callbacks.ema import averaged_weights


def with_row_names(grid: torch.Tensor, row_names: list[str] | None, padding: int = 2) -> torch.Tensor:
    """`grid` (C x H x W in [0, 1], one row per name) with a left margin that names each row.

    torchvision's make_grid draws no labels, so the class of a row was known only from the config;
    PIL's built-in bitmap font needs no font file.
    """
    if not row_names:
        return grid
    from PIL import Image, ImageDraw, ImageFont
    import numpy as np

    font = ImageFont.load_default()
    draw_probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    margin = max(int(draw_probe.textlength(name, font=font)) for name in row_names) + 6
    rgb = grid.expand(3, -1, -1) if grid.shape[0] == 1 else grid
    names = Image.new("L", (margin, rgb.shape[1]), 0)
    draw = ImageDraw.Draw(names)
    row_height = (rgb.shape[1] - padding) / len(row_names)
    for i, name in enumerate(row_names):
        draw.text((3, int(padding + (i + 0.5) * row_height) - 5), name, fill=255, font=font)
    strip = torch.from_numpy(np.array(names)).float().div(255).expand(3, -1, -1)
    return torch.cat([strip, rgb], dim=2)  # the images themselves stay as they are (no 8-bit round trip)


def log_image_grid(trainer: "pl.Trainer | None", tag: str, images: torch.Tensor, nrow: int, step: int,
                   row_names: list[str] | None = None) -> torch.Tensor:
    """Add images in [-1, 1] as one grid (rows named by `row_names`) to every TensorBoard logger of
    `trainer` (no-op without one); returns the grid."""
    grid = with_row_names(make_grid(((images.detach().float().cpu() + 1) / 2).clamp(0, 1), nrow=nrow, padding=2),
                          row_names)
    for logger in (trainer.loggers if trainer is not None else []):
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, grid, global_step=step)
    return grid


class SampleGridCallback(Callback):
    """Every `every_n_epochs` (and after the last epoch), sample a grid and log/save it.

    Rows are classes (class-conditional models, named in a left margin), columns `num_per_class`
    fixed seeds; the EMA
    weights are used when an EMA callback is present. Runs on rank zero only. Grids also go to
    `<log_dir>/sample_grids/epoch_XXXX.png`. Skipped under `fast_dev_run` (like Lightning's loggers).

    Args:
        every_n_epochs: interval in epochs.
        num_per_class: images per row.
        seed: first seed; image j of every row uses seed + j (so rows differ only by the label).
        sampler / num_inference_steps / guidance_scale: override the module's sampling settings.
        captions: prompts for text-conditional models (one row each).
    """

    def __init__(self, every_n_epochs: int = 1, num_per_class: int = 4, seed: int = 0, sampler: str | None = None,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 captions: list[str] | None = None):
        if every_n_epochs < 1:
            raise ValueError("SampleGridCallback every_n_epochs must be >= 1")
        self.every_n_epochs, self.num_per_class, self.seed = every_n_epochs, num_per_class, seed
        self.sampler, self.num_inference_steps, self.guidance_scale = sampler, num_inference_steps, guidance_scale
        self.captions = captions
        self.saved: list[Path] = []

    def _requests(self, pl_module) -> dict:
        k = self.num_per_class
        seeds = [self.seed + j for j in range(k)]
        conditioner = pl_module.conditioner
        rows: dict = {}
        if conditioner.uses_labels:
            rows["labels"] = [c for c in range(pl_module.hparams.num_classes) for _ in range(k)]
        if conditioner.uses_text:
            captions = self.captions or ["a medical image"]
            if conditioner.uses_labels:  # class+text: one row per class, the first caption
                rows["captions"] = [captions[0]] * len(rows["labels"])
            else:
                rows["captions"] = [c for c in captions for _ in range(k)]
        if not rows:
            return {"num_images": k, "seeds": seeds}
        n_rows = len(next(iter(rows.values()))) // k
        return {**rows, "seeds": seeds * n_rows}

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        epoch = trainer.current_epoch
        last = (trainer.max_epochs is not None and trainer.max_epochs > 0 and epoch + 1 >= trainer.max_epochs) or (
            trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps)
        if trainer.fast_dev_run or not ((epoch + 1) % self.every_n_epochs == 0 or last):
            return
        log_dir = trainer.log_dir  # on every rank: under DDP this is a collective (broadcast)
        if not trainer.is_global_zero:
            return
        with averaged_weights(trainer, pl_module):
            images = pl_module.sample(**self._requests(pl_module), sampler=self.sampler,
                                      num_inference_steps=self.num_inference_steps,
                                      guidance_scale=self.guidance_scale)
        grid = log_image_grid(trainer, "samples/grid", images, nrow=self.num_per_class, step=epoch,
                              row_names=self.row_names(pl_module))
        if log_dir:
            path = Path(log_dir) / "sample_grids" / f"epoch_{epoch:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_image(grid, path, padding=0)
            self.saved.append(path)

    def row_names(self, pl_module: "pl.LightningModule") -> list[str] | None:
        """The class name of each grid row (class-conditional models), else None."""
        if not pl_module.conditioner.uses_labels:
            return None
        n = int(pl_module.hparams.num_classes)
        names = list(pl_module.hparams.get("class_names") or [])
        return [str(x) for x in names] if len(names) == n else [f"class {c}" for c in range(n)]
