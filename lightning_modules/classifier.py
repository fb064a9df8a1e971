"""ClassifierModule: one of the eight CNNs of seed 004 trained with an injected optimizer (AdamW) + cross-entropy.

Inputs follow the batch contract (dict with `image` in [-1, 1], `label`, `index`). Logs
`{train,val,test}/loss` and `/acc` (micro), and for val/test also macro `precision`, `recall`,
`f1_macro`; at test end a confusion-matrix figure (TensorBoard) and `test_per_class.csv`
(precision / recall / F1 / support per class) and `test_predictions.csv` (per test image: manifest
index, true and predicted label, class probabilities; `test_predictions.py`) in the run directory.
"""

from __future__ import annotations

import csv
import logging
import os
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score,
                                         MulticlassPrecision, MulticlassRecall)

from lightning_modules.nets.backbones import ARCHS, build_backbone
from lightning_modules.optim import LoadsLegacyCheckpoints, configure_injected, save_plain_hyperparameters
from lightning_modules.test_predictions import PREDICTIONS_FILE, PerImagePredictions, write_predictions_csv

log = logging.getLogger(__name__)

# The pretrained ImageNet weights expect these statistics; a 1-channel input uses their mean
# (timm sums the RGB kernels of the first conv for in_chans=1, so gray must look like R=G=B).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _summary_metrics(num_classes: int, prefix: str) -> MetricCollection:
    return MetricCollection({
        "acc": MulticlassAccuracy(num_classes, average="micro"),
        "precision": MulticlassPrecision(num_classes, average="macro"),
        "recall": MulticlassRecall(num_classes, average="macro"),
        "f1_macro": MulticlassF1Score(num_classes, average="macro"),
    }, prefix=prefix)


class ClassifierModule(LoadsLegacyCheckpoints, LightningModule):
    """Image classifier over `lightning_modules.nets.backbones.ARCHS` (the 8 CNNs of seed 004).

    Args:
        arch: one of resnet18, resnet50, vgg16, vgg19, alexnet, densenet121, mobilenet_v2, googlenet.
        num_classes, in_channels, image_size, class_names: linked from the datamodule by the CLI.
        pretrained: false (random init), true (ImageNet weights from the hub; offline it fails at
            once), or the path of a local weights file (.pth/.pt/.safetensors/Lightning .ckpt).
        class_weights: per-class weights of the cross-entropy (length num_classes).
        label_smoothing: cross-entropy label smoothing in [0, 1).
        standardize: map [-1, 1] inputs to ImageNet mean/std (what pretrained weights expect).
        optimizer / lr_scheduler: injected (`lightning_modules.optim`); null = AdamW(lr 1e-3,
            weight decay 1e-2) at a constant LR. A scheduler steps once per epoch.
    """

    default_optimizer = {"lr": 1e-3, "weight_decay": 1e-2}

    def __init__(
        self,
        arch: str = "resnet18",
        num_classes: int = 2,
        in_channels: int = 1,
        image_size: int = 64,
        class_names: list[str] | None = None,
        pretrained: bool | str = False,
        class_weights: list[float] | None = None,
        label_smoothing: float = 0.0,
        standardize: bool = True,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ):
        super().__init__()
        save_plain_hyperparameters(self, optimizer, lr_scheduler)
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"model.class_names has {len(class_names)} names {class_names} but "
                             f"model.num_classes={num_classes}")
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"model.class_weights has {len(class_weights)} values but "
                             f"model.num_classes={num_classes}; give one weight per class")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"model.label_smoothing must be in [0, 1), got {label_smoothing}")
        self.class_names = list(class_names) if class_names else [f"class_{i}" for i in range(num_classes)]
        self.backbone = build_backbone(arch, num_classes, in_channels, pretrained=pretrained)
        if image_size < ARCHS[arch].min_size:
            log.info("%s: %d px inputs are upsampled to %d px inside the model (its minimum)",
                     arch, image_size, ARCHS[arch].min_size)

        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        if in_channels == 1:
            mean, std = mean.mean(0, keepdim=True), std.mean(0, keepdim=True)
        self.register_buffer("input_mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("input_std", std.view(1, -1, 1, 1), persistent=False)

        # One metric object per stage: torchmetrics state must never mix train/val/test.
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_metrics = _summary_metrics(num_classes, "val/")
        self.test_metrics = _summary_metrics(num_classes, "test/")
        self.test_per_class = MetricCollection({
            "precision": MulticlassPrecision(num_classes, average=None),
            "recall": MulticlassRecall(num_classes, average=None),
            "f1": MulticlassF1Score(num_classes, average=None),
            "confusion": MulticlassConfusionMatrix(num_classes),
        }, compute_groups=False)
        self.test_predictions = PerImagePredictions()  # per-image rows of test_predictions.csv

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> "ClassifierModule":
        """Lightning's loader, but never re-fetches the initial weights: the checkpoint has them."""
        kwargs.setdefault("pretrained", False)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    # ------------------------------------------------------------------ model
    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.standardize:
            x = ((x + 1.0) / 2.0 - self.input_mean) / self.input_std
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits B x num_classes for images B x C x H x W in [-1, 1]."""
        return self.backbone(self._prepare(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate feature vector B x self.backbone.num_features (used as an FID extractor)."""
        return self.backbone.features(self._prepare(x))

    @property
    def num_features(self) -> int:
        """Length D of the `features` vector."""
        return self.backbone.num_features

    def configure_optimizers(self):
        return configure_injected(self, self.parameters(), self.optimizer, self.lr_scheduler, self.default_optimizer,
                                  interval="epoch")

    # ------------------------------------------------------------------ steps
    def _labelled(self, batch: dict[str, Any], stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        labels = batch["label"]
        if (labels < 0).any() or (labels >= self.hparams.num_classes).any():
            bad = sorted(set(labels[(labels < 0) | (labels >= self.hparams.num_classes)].tolist()))
            raise ValueError(f"{stage} batch has labels {bad} outside 0..{self.hparams.num_classes - 1} "
                             "(-1 = unlabeled): the classifier needs labelled data there and "
                             "model.num_classes must match the datamodule's classes")
        return self(batch["image"]), labels

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits, labels = self._labelled(batch, "train")
        loss = self.loss_fn(logits, labels)
        self.train_acc(logits, labels)
        bs = labels.shape[0]
        self.log("train/loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=bs, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def _eval_step(self, batch: dict[str, Any], stage: str, metrics: MetricCollection) -> torch.Tensor:
        logits, labels = self._labelled(batch, stage)
        loss = self.loss_fn(logits, labels)
        metrics.update(logits, labels)
        bs = labels.shape[0]
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=bs,
                 prog_bar=stage == "val")
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=bs)
        return logits

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_metrics)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self._eval_step(batch, "test", self.test_metrics)
        self.test_per_class.update(logits, batch["label"])
        self.test_predictions.update(logits, batch["label"], batch["index"])

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        probs = torch.softmax(self(batch["image"]), dim=1)
        out = {"probs": probs, "preds": probs.argmax(dim=1), "index": batch["index"]}
        if "label" in batch:
            out["label"] = batch["label"]
        return out

    # ------------------------------------------------------------------ test reports
    def on_test_epoch_start(self) -> None:
        self.test_per_class.reset()
        self.test_predictions.reset()

    def on_test_epoch_end(self) -> None:
        values = self.test_per_class.compute()  # collective under DDP: every rank calls it
        self.test_per_class.reset()
        predictions = self.test_predictions.compute()  # collective too: gathered from every rank
        self.test_predictions.reset()
        confusion = values["confusion"].cpu()
        log_dir = self.trainer.log_dir or self.trainer.default_root_dir  # log_dir broadcasts: all ranks
        if not self.trainer.is_global_zero:
            return
        os.makedirs(log_dir, exist_ok=True)
        self._write_per_class_csv(os.path.join(log_dir, "test_per_class.csv"), values, confusion)
        write_predictions_csv(os.path.join(log_dir, PREDICTIONS_FILE), predictions, self.class_names)
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure("test/confusion_matrix", self._confusion_figure(confusion),
                                             global_step=self.global_step)

    def _write_per_class_csv(self, path: str, values: dict[str, torch.Tensor], confusion: torch.Tensor) -> None:
        support = confusion.sum(dim=1)  # rows = true class
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["class_index", "class_name", "precision", "recall", "f1", "support"])
            for i, name in enumerate(self.class_names):
                writer.writerow([i, name, f"{values['precision'][i].item():.6f}", f"{values['recall'][i].item():.6f}",
                                 f"{values['f1'][i].item():.6f}", int(support[i].item())])

    def _confusion_figure(self, confusion: torch.Tensor):
        # Object-oriented matplotlib (no pyplot): no global backend state, works headless (Agg).
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        n = len(self.class_names)
        fig = Figure(figsize=(2 + 0.7 * n, 1.6 + 0.7 * n))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.imshow(confusion.numpy(), cmap="Blues")
        ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title="test confusion matrix")
        ax.set_xticklabels(self.class_names, rotation=45, ha="right")
        ax.set_yticklabels(self.class_names)
        high = confusion.max().item()
        for (i, j), count in zip(torch.cartesian_prod(torch.arange(n), torch.arange(n)).tolist(),
                                 confusion.flatten().tolist()):
            ax.text(j, i, int(count), ha="center", va="center", color="white" if count > high / 2 else "black")
        fig.tight_layout()
        return fig
