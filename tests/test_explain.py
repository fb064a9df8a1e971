"""`synthmed explain`: LIME on a classifier trained in the test, JSON schema, overlays, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.mask_files import mask_files
from datamodules.phantom_generator import CLASS_NAMES, phantom_seed, render_batch, write_phantom_tree
from lightning_modules.optim import adamw
from synthmed import explain

SIZE = 32


def train_classifier(ckpt_path: Path, size: int, per_class: int, steps: int, seed: int = 0) -> Path:
    """A ResNet-18 trained with a plain Lightning Trainer on phantoms; saved as a checkpoint."""
    from lightning.pytorch import Trainer, seed_everything

    from lightning_modules.classifier import ClassifierModule

    seed_everything(seed)
    labels = [c for c in range(3) for _ in range(per_class)]
    # seeds far from the tree's (phantom_seed(0, c, i)) so the explained images are unseen
    seeds = [phantom_seed(seed + 99, c, i) for c in range(3) for i in range(per_class)]
    images, _ = render_batch(labels, size, seeds)
    x = torch.from_numpy(images).float().div(127.5).sub(1.0).unsqueeze(1)
    data = [{"image": x[i], "label": torch.tensor(labels[i]), "index": torch.tensor(i)} for i in range(len(labels))]
    loader = torch.utils.data.DataLoader(data, batch_size=32, shuffle=True)
    model = ClassifierModule(arch="resnet18", num_classes=3, in_channels=1, image_size=size,
                             class_names=list(CLASS_NAMES), optimizer=adamw(lr=2e-3))
    trainer = Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, loader)
    ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(ckpt_path)
    return ckpt_path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("explain")
    ckpt = train_classifier(base / "run" / "checkpoints" / "tiny.ckpt", SIZE, per_class=24, steps=20)
    tree = write_phantom_tree(base / "phantoms", per_class=6, size=SIZE, seed=0)
    return ckpt, tree


def run_explain(capsys, *argv: str) -> tuple[int, list[str], str]:
    rc = explain.main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out.strip().splitlines(), captured.err


def test_explain_writes_json_overlays_and_tensorboard(trained, tmp_path, capsys):
    ckpt, tree = trained
    out = tmp_path / "out"
    rc, lines, _ = run_explain(capsys, "--ckpt", str(ckpt), "--data-root", str(tree), "--num-images", "6",
                               "--split", "all", "--num-samples", "40", "--out", str(out))
    assert rc == 0
    assert lines[-1] == f"run_dir: {out.resolve()}"
    doc = json.loads((out / "explanations.json").read_text())
    records = doc["images"]
    assert len(records) == 6
    assert sorted(r["true_class"] for r in records) == sorted(list(CLASS_NAMES) * 2)  # round-robin
    for r in records:
        assert set(r) >= {"file", "true_label", "true_class", "predicted_label", "predicted_class",
                          "probabilities", "top_superpixels", "num_superpixels", "overlay", "has_mask"}
        assert Path(r["file"]).is_file() and r["true_class"] == Path(r["file"]).parent.name
        assert list(r["probabilities"]) == list(CLASS_NAMES)
        assert abs(sum(r["probabilities"].values()) - 1.0) < 1e-4
        assert r["predicted_class"] == max(r["probabilities"], key=r["probabilities"].get)
        assert 1 <= len(r["top_superpixels"]) <= 5
        weights = [s["weight"] for s in r["top_superpixels"]]
        assert weights == sorted(weights, reverse=True) and all(w > 0 for w in weights)
        assert all(0 <= s["id"] < r["num_superpixels"] for s in r["top_superpixels"])
        assert r["has_mask"]  # every phantom has a mask file (empty for normal)
        if r["true_class"] == "normal":
            assert "lesion_fraction" not in r
        else:
            assert 0.0 <= r["lesion_fraction"] <= 1.0 and 0.0 <= r["lesion_coverage"] <= 1.0
            mask = np.asarray(Image.open(mask_files(r["file"])[0])) > 0  # in make-phantoms' <tree>_masks/
            assert r["chance_fraction"] == pytest.approx(mask.mean())
        overlay = Image.open(out / r["overlay"])
        assert overlay.mode == "RGB" and overlay.width > 3 * overlay.height - 100  # three panels side by side
    summary = doc["summary"]
    assert summary["num_lesion_images"] == 4
    lesion = [r for r in records if "lesion_fraction" in r]
    assert summary["mean_lesion_fraction"] == pytest.approx(np.mean([r["lesion_fraction"] for r in lesion]))
    ratio = summary["mean_lesion_fraction"] / summary["mean_chance_fraction"]
    assert summary["lesion_over_chance"] == pytest.approx(ratio)
    assert doc["settings"]["class_names"] == list(CLASS_NAMES)
    assert len(list((out / "overlays").glob("*.png"))) == 6
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out))
    events.Reload()
    assert len(events.Tags()["images"]) == 6 and "lime/lesion_over_chance" in events.Tags()["scalars"]

    # a second run never overwrites: it makes a new folder next to the first
    before = (out / "explanations.json").read_bytes()
    rc, lines, _ = run_explain(capsys, "--ckpt", str(ckpt), "--data-root", str(tree), "--num-images", "1",
                               "--num-samples", "20", "--out", str(out))
    assert rc == 0 and lines[-1] == f"run_dir: {(tmp_path / 'out_1').resolve()}"
    assert (out / "explanations.json").read_bytes() == before


def test_default_out_dir_next_to_checkpoint_and_test_split(trained, capsys):
    ckpt, tree = trained
    rc, lines, _ = run_explain(capsys, "--ckpt", str(ckpt), "--data-root", str(tree), "--num-images", "2",
                               "--num-samples", "20")
    assert rc == 0
    out = Path(lines[-1].removeprefix("run_dir: "))
    assert out.parent == ckpt.parent.parent and out.name.startswith("explain")
    records = json.loads((out / "explanations.json").read_text())["images"]
    assert len(records) == 2  # from the held-out test split (20% of 18 images, stratified)


def test_class_mismatch_names_both_lists(trained, make_tree, capsys):
    ckpt, _ = trained
    other = make_tree({"cyst": 3, "solid": 3, "zzz": 3})
    rc, _, err = run_explain(capsys, "--ckpt", str(ckpt), "--data-root", str(other), "--num-images", "1")
    assert rc == 2
    assert "['benign', 'malignant', 'normal']" in err and "['cyst', 'solid', 'zzz']" in err


def test_missing_checkpoint_and_bad_options(tmp_path, capsys):
    rc, _, err = run_explain(capsys, "--ckpt", str(tmp_path / "nope.ckpt"), "--data-root", str(tmp_path))
    assert rc == 2 and "nope.ckpt is not a file" in err
    rc, _, err = run_explain(capsys, "--ckpt", "x", "--data-root", "y", "--top-k", "0")
    assert rc == 2 and "--top-k=0 must be >= 1" in err


def test_lesion_scores_exact():
    segments = np.repeat(np.arange(4), 4).reshape(4, 4)  # row r is superpixel r
    mask = np.zeros((4, 4), bool)
    mask[0, :] = True  # superpixel 0 entirely lesion
    mask[1, :2] = True  # half of superpixel 1
    scores = explain.lesion_scores(segments, [0, 1], mask)
    assert scores["lesion_fraction"] == pytest.approx(6 / 8)
    assert scores["chance_fraction"] == pytest.approx(6 / 16)
    assert scores["lesion_coverage"] == pytest.approx(1.0)
    assert explain.lesion_scores(segments, [3], mask)["lesion_fraction"] == 0.0
    assert explain.lesion_scores(segments, [], mask)["lesion_fraction"] == 0.0


def test_segmentation_follows_a_dark_lesion():
    """SLIC superpixels separate a phantom lesion: the lesion's majority superpixels are mostly lesion."""
    from datamodules.phantom_generator import render_phantom

    purities = []
    for seed in range(6):
        image, mask = render_phantom(0, 64, seed)
        rgb = np.repeat((image / 255.0)[..., None], 3, axis=2)
        seg = explain.segment(rgb)
        assert 20 <= seg.max() + 1 <= 60
        ids = [i for i in np.unique(seg[mask > 0]) if mask[seg == i].mean() > 0.5]
        region = np.isin(seg, ids)
        purities.append((region & (mask > 0)).sum() / max(region.sum(), 1))
    assert np.mean(purities) > 0.6


@pytest.mark.slow
def test_trained_classifier_beats_chance(tmp_path, capsys):
    """The acceptance measurement at small scale: a trained ResNet-18's top superpixels sit on the lesion."""
    ckpt = train_classifier(tmp_path / "run" / "checkpoints" / "c.ckpt", 64, per_class=150, steps=300)
    tree = write_phantom_tree(tmp_path / "phantoms", per_class=20, size=64, seed=0)
    rc, _, _ = run_explain(capsys, "--ckpt", str(ckpt), "--data-root", str(tree), "--num-images", "30",
                           "--split", "all", "--out", str(tmp_path / "ex"))
    assert rc == 0
    summary = json.loads((tmp_path / "ex" / "explanations.json").read_text())["summary"]
    assert summary["accuracy"] >= 0.8
    assert summary["lesion_over_chance"] >= 2.0
