"""ClassifierModule: Lightning fit/test on separable data, metric keys, per-class CSV, reload, loss options."""

from __future__ import annotations

import csv
import warnings

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, Dataset

from lightning_modules.classifier import ClassifierModule
from lightning_modules.optim import adamw

CLASS_NAMES = ["dark", "mid", "bright"]
LEVELS = [-0.7, 0.0, 0.7]  # class mean brightness in [-1, 1]


class BrightnessDataset(Dataset):
    """Batch-contract dicts; class c is an image of brightness LEVELS[c] plus noise."""

    def __init__(self, counts: list[int], seed: int, size: int = 16, channels: int = 1):
        gen = torch.Generator().manual_seed(seed)
        self.labels = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(counts)])
        level = torch.tensor(LEVELS)[self.labels].view(-1, 1, 1, 1)
        noise = 0.15 * torch.randn(len(self.labels), channels, size, size, generator=gen)
        self.images = (level + noise).clamp(-1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": self.labels[i], "index": torch.tensor(i)}


def _loader(counts, seed, shuffle=False):
    return DataLoader(BrightnessDataset(counts, seed), batch_size=8, shuffle=shuffle)


def _trainer(tmp_path, **kwargs) -> Trainer:
    return Trainer(accelerator="cpu", logger=TensorBoardLogger(tmp_path, name="clf"), enable_progress_bar=False,
                   enable_model_summary=False, deterministic=True, **kwargs)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """resnet18 fitted 4 epochs on 3 x 32 16-px gray brightness images, then tested on 5/3/4 images.

    (Fewer steps leave BatchNorm running stats behind the weights: eval accuracy lags train.)
    """
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("fit")
    model = ClassifierModule(arch="resnet18", num_classes=3, in_channels=1, image_size=16,
                             class_names=CLASS_NAMES, optimizer=adamw(lr=1e-3))
    checkpoint = ModelCheckpoint(dirpath=tmp / "ckpt", monitor="val/loss", save_last=True)
    trainer = _trainer(tmp, max_epochs=4, callbacks=[checkpoint], log_every_n_steps=1)
    trainer.fit(model, _loader([32, 32, 32], seed=1, shuffle=True), _loader([4, 4, 4], seed=2))
    fit_metrics = dict(trainer.callback_metrics)
    test_loader = _loader([5, 3, 4], seed=3)
    test_metrics = trainer.test(model, test_loader, verbose=False)[0]
    return {"model": model, "trainer": trainer, "fit": fit_metrics, "test": test_metrics,
            "loader": test_loader, "checkpoint": checkpoint.last_model_path}


def test_fit_and_test_log_every_metric_key(fitted):
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/precision", "val/recall",
            "val/f1_macro"} <= set(fitted["fit"])
    assert set(fitted["test"]) == {"test/loss", "test/acc", "test/precision", "test/recall", "test/f1_macro"}
    assert fitted["test"]["test/acc"] >= 0.9, fitted["test"]  # trivially separable by brightness


def test_per_class_csv_has_support_and_matches_predictions(fitted):
    trainer, model = fitted["trainer"], fitted["model"]
    with open(f"{trainer.log_dir}/test_per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["class_name"] for r in rows] == CLASS_NAMES
    assert [int(r["support"]) for r in rows] == [5, 3, 4]
    out = trainer.predict(model, fitted["loader"])
    preds = torch.cat([o["preds"] for o in out])
    labels = torch.cat([o["label"] for o in out])
    for c, row in enumerate(rows):
        hits = ((preds == c) & (labels == c)).sum().item()
        assert float(row["recall"]) == pytest.approx(hits / (labels == c).sum().item(), abs=1e-5)
        if (preds == c).any():
            assert float(row["precision"]) == pytest.approx(hits / (preds == c).sum().item(), abs=1e-5)
    macro_recall = sum(float(r["recall"]) for r in rows) / 3
    assert fitted["test"]["test/recall"] == pytest.approx(macro_recall, abs=1e-5)


def test_tensorboard_gets_scalars_and_confusion_figure(fitted):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(fitted["trainer"].log_dir, size_guidance={"images": 0})
    events.Reload()
    assert "test/confusion_matrix" in events.Tags()["images"]
    assert {"val/f1_macro", "test/acc", "train/loss"} <= set(events.Tags()["scalars"])


def test_predict_step_returns_probs_preds_index(fitted):
    out = fitted["trainer"].predict(fitted["model"], fitted["loader"])[0]
    assert out["probs"].shape == (8, 3)
    assert torch.allclose(out["probs"].sum(1), torch.ones(8))
    assert torch.equal(out["preds"], out["probs"].argmax(1))
    assert torch.equal(out["index"], torch.arange(8))


def test_checkpoint_reloads_alone_and_predicts_the_same(fitted):
    reloaded = ClassifierModule.load_from_checkpoint(fitted["checkpoint"], map_location="cpu").eval()
    model = fitted["model"].eval()
    assert reloaded.hparams.arch == "resnet18" and reloaded.class_names == CLASS_NAMES
    x = next(iter(fitted["loader"]))["image"]
    with torch.no_grad():
        assert torch.allclose(reloaded(x), model(x), atol=1e-5)
        assert reloaded.features(x).shape == (8, reloaded.num_features) == (8, 512)


def test_reload_does_not_need_the_initial_weights_file(tmp_path):
    init = tmp_path / "init.pth"
    torch.save(ClassifierModule(arch="googlenet", num_classes=2).backbone.net.state_dict(), init)
    model = ClassifierModule(arch="googlenet", num_classes=2, pretrained=str(init))
    trainer = _trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(model, DataLoader(BrightnessDataset([2, 2], seed=0), batch_size=4))
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    init.unlink()  # the run's checkpoint must carry everything
    reloaded = ClassifierModule.load_from_checkpoint(ckpt)
    assert reloaded.hparams.pretrained is False
    assert torch.equal(reloaded.backbone.net.fc.weight, model.backbone.net.fc.weight)
    # the same Lightning checkpoint also serves as `pretrained:` weights for a new run
    warm_start = ClassifierModule(arch="googlenet", num_classes=2, pretrained=str(ckpt))
    assert warm_start.backbone.load_report.unexpected == []
    for key, value in model.backbone.net.state_dict().items():
        assert torch.equal(warm_start.backbone.net.state_dict()[key], value), key


def test_class_weights_and_label_smoothing_reach_the_loss():
    torch.manual_seed(0)
    weights = [1.0, 3.0, 0.5]
    model = ClassifierModule(arch="mobilenet_v2", num_classes=3, in_channels=3, class_weights=weights,
                             label_smoothing=0.2)
    batch = {"image": torch.rand(4, 3, 32, 32) * 2 - 1, "label": torch.tensor([0, 1, 2, 1]),
             "index": torch.arange(4)}
    model.eval()  # no dropout / BN batch stats: the same logits twice
    with warnings.catch_warnings():  # self.log() without a Trainer only warns
        warnings.simplefilter("ignore")
        loss = model.training_step(batch, 0)
    with torch.no_grad():
        logits = model(batch["image"])
    expected = F.cross_entropy(logits, batch["label"], weight=torch.tensor(weights), label_smoothing=0.2)
    plain = F.cross_entropy(logits, batch["label"])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert abs(expected.item() - plain.item()) > 1e-3  # the options change the number


def test_bad_options_and_labels_are_named():
    with pytest.raises(ValueError, match="class_weights has 2 values but model.num_classes=3"):
        ClassifierModule(num_classes=3, class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="class_names has 3 names"):
        ClassifierModule(num_classes=2, class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="label_smoothing"):
        ClassifierModule(label_smoothing=1.5)
    model = ClassifierModule(num_classes=2)
    batch = {"image": torch.zeros(2, 1, 32, 32), "label": torch.tensor([0, 2]), "index": torch.arange(2)}
    with pytest.raises(ValueError, match=r"labels \[2\] outside 0..1"):
        model.validation_step(batch, 0)


def test_standardize_maps_minus_one_to_one_onto_imagenet_stats():
    gray = ClassifierModule(in_channels=1)
    x = torch.full((1, 1, 4, 4), 1.0)  # white
    assert gray._prepare(x)[0, 0, 0, 0].item() == pytest.approx((1 - 0.449) / 0.226, rel=1e-3)
    rgb = ClassifierModule(in_channels=3, standardize=False)
    assert torch.equal(rgb._prepare(x.expand(1, 3, 4, 4)), x.expand(1, 3, 4, 4))


def test_jsonargparse_reads_the_signature():
    from jsonargparse import ArgumentParser
    parser = ArgumentParser()
    parser.add_class_arguments(ClassifierModule, "model")
    cfg = parser.parse_args(["--model.pretrained", "/w/r18.pth", "--model.class_weights", "[1, 2]",
                             "--model.arch", "vgg16"])
    assert cfg.model.pretrained == "/w/r18.pth" and cfg.model.class_weights == [1.0, 2.0]
    assert parser.parse_args(["--model.pretrained", "true"]).model.pretrained is True
    assert parser.parse_args([]).model.pretrained is False
