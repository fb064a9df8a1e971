"""`synthmed explain`: LIME explanations of a trained classifier, scored against lesion masks.

    synthmed explain --ckpt logs/quickstart/version_0/checkpoints/best.ckpt [--data-root phantoms/] \
        [--num-images 8] [--split test|all] [--out DIR] [--num-samples 300] [--top-k 5] [--seed 0]
    synthmed explain --run logs/quickstart/version_0      (its best checkpoint)

Which images: without --data-root, those of the run's own split_manifest.csv (the run directory
of --run, or the one holding --ckpt's checkpoints/ folder): `--split test` is exactly the test
split the run held out. With --data-root, that tree is split again with --test-fraction / --seed
(for a tree the run never saw, or a run without a manifest).

For each explained image (chosen round-robin over the classes of the split, seeded): the model's
prediction, a `lime_image` explanation of the predicted class on SLIC superpixels, an overlay PNG
(image | top superpixels | lesion outline) in `<out>/overlays/` and in TensorBoard, and a record in
`<out>/explanations.json`. Where the image has a non-empty `<stem>_mask*.png` (beside it as in BUSI,
or in the `<root>_masks/` tree that make-phantoms writes),
`lesion_fraction` = share of the top-k positive superpixels' area that lies on the lesion and
`chance_fraction` = lesion area / image area (what randomly placed superpixels would score):
their ratio measures whether the classifier "focused on relevant features".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw
from skimage.segmentation import find_boundaries, slic

from datamodules.mask_files import mask_files
from synthmed.offline import configure_offline
from synthmed.progress import progress
from synthmed.runs import fresh_out_dir

# SLIC on the gray level: superpixels follow the lesion's dark margin at 32-128 px (quickshift
# needs colour and over-segments speckle). ~40 segments keep LIME's 2^n masks sampleable.
SLIC_SEGMENTS, SLIC_COMPACTNESS = 40, 0.15


class ExplainError(ValueError):
    """Bad input to `synthmed explain`; the message names the option and what to do."""


@dataclass
class Item:
    """One image to explain: model-size pixels, label, lesion mask (or None) and its file."""

    image: np.ndarray  # uint8 C x S x S
    label: int
    mask: np.ndarray | None  # bool S x S, None when the image has no mask file
    file: str
    key: str


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synthmed explain", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="ClassifierModule checkpoint (.ckpt)")
    source.add_argument("--run", help="a fit run directory: its best checkpoint and its split_manifest.csv")
    parser.add_argument("--data-root", default=None, help="class-per-folder image tree (masks as <stem>_mask*.png beside the images or in <root>_masks/); "
                        "default: the run's split_manifest.csv")
    parser.add_argument("--num-images", type=int, default=8, help="images to explain (default 8)")
    parser.add_argument("--split", choices=("test", "all"), default="test",
                        help="the held-out test split (the run's, or --data-root's with the split options below) "
                             "or all images")
    parser.add_argument("--test-fraction", type=float, default=0.2,
                        help="with --data-root: test split fraction, as in training (0.2)")
    parser.add_argument("--out", default=None, help="output folder (default <ckpt dir>/../explain); "
                        "never reused if it holds results: a new sibling folder is made")
    parser.add_argument("--num-samples", type=int, default=300, help="LIME perturbations per image (300)")
    parser.add_argument("--top-k", type=int, default=5, help="top positive superpixels scored (5)")
    parser.add_argument("--batch-size", type=int, default=100, help="model batch size for LIME samples")
    parser.add_argument("--seed", type=int, default=0, help="split seed (as in training) and LIME seed")
    return parser


# ---- inputs ----------------------------------------------------------------------------------------
def load_classifier(ckpt: str):
    """ClassifierModule on CPU in eval mode."""
    from lightning_modules.classifier import ClassifierModule

    path = Path(ckpt)
    if not path.is_file():
        raise ExplainError(f"--ckpt {ckpt} is not a file; pass a checkpoint written by `synthmed fit` "
                           "(logs/<experiment>/version_N/checkpoints/*.ckpt)")
    model = ClassifierModule.load_from_checkpoint(str(path), map_location="cpu")
    return model.eval()


def resolve_inputs(args) -> tuple[str, Path | None]:
    """(checkpoint, the run's split_manifest.csv or None) from --ckpt / --run / --data-root."""
    from synthmed import runs

    if args.run:
        try:
            ckpt = str(runs.find_checkpoint(args.run))
        except runs.RunDirError as exc:
            raise ExplainError(f"--run {args.run}: {exc}; pass a run directory written by `synthmed fit`") from exc
        run_dir: Path | None = Path(args.run)
    else:
        ckpt, run_dir = args.ckpt, runs.run_dir_of_checkpoint(args.ckpt)
    if args.data_root or not Path(ckpt).is_file():  # (a missing --ckpt is reported by load_classifier)
        return ckpt, None
    manifest = runs.split_manifest(run_dir) if run_dir is not None else None
    if manifest is None:
        where = f"{run_dir} has no {runs.SPLIT_MANIFEST}" if run_dir is not None else \
            f"--ckpt {ckpt} is not inside a run directory (<run>/checkpoints/)"
        raise ExplainError(f"{where}, so the run's own split is unknown: pass --data-root TREE (split again with "
                           "--test-fraction / --seed)")
    return ckpt, manifest


def tree_data(model, data_root: str, seed: int, test_fraction: float):
    """`data_root` split again as training would with these options (masks loaded)."""
    from datamodules.image_folder import ImageFolderDataModule

    hp = model.hparams
    # on_overlap="allow": explaining never trains, so duplicates across splits do no harm here
    dm = ImageFolderDataModule(root=data_root, image_size=int(hp.image_size), channels=int(hp.in_channels),
                               load_masks=True, seed=seed, test_fraction=test_fraction, on_overlap="allow")
    ckpt_names = list(hp.class_names) if hp.get("class_names") else None
    if ckpt_names is None and dm.num_classes != int(hp.num_classes):
        raise ExplainError(f"the checkpoint has {hp.num_classes} classes but --data-root {data_root} has "
                           f"{dm.num_classes}: {dm.class_names}")
    if ckpt_names is not None and ckpt_names != list(dm.class_names):
        raise ExplainError(f"class names differ: the checkpoint was trained on {ckpt_names} but --data-root "
                           f"{data_root} has {list(dm.class_names)}; explain on a tree with the same classes")
    return dm


def manifest_data(model, manifest: Path):
    """The images of the run's split_manifest.csv, resized as the run did (its config's resize_mode)."""
    from synthmed import runs
    from synthmed.run_images import RunManifestError, RunManifestImages

    hp = model.hparams
    names = list(hp.class_names) if hp.get("class_names") else [str(i) for i in range(int(hp.num_classes))]
    data_args = (runs.read_config(manifest.parent).get("data") or {}).get("init_args") or {}
    try:
        return RunManifestImages(manifest, names, int(hp.image_size), int(hp.in_channels),
                                 resize_mode=str(data_args.get("resize_mode") or "pad"))
    except RunManifestError as exc:
        raise ExplainError(str(exc)) from exc


def load_items(dm, split: str, num_images: int, seed: int) -> tuple[list[Item], list[str]]:
    """Pick `num_images` images (round-robin over classes) from the data's `split`."""
    source = f"--data-root {dm.root}" if hasattr(dm, "root") else dm.describe_source()
    dm.setup(None if split == "all" else "test")
    manifest = dm.manifest
    splits = ["train", "val", "test"] if split == "all" else ["test"]
    pool = []  # (split, position in that split's dataset)
    for name in splits:
        if (manifest["split"] == name).any():
            pool += [(name, i) for i in range(len(dm.dataset(name)))]
    if not pool:
        raise ExplainError(f"{source} has no images in the {split} split; try --split all")
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[tuple[str, int]]] = {}
    for name, i in (pool[j] for j in rng.permutation(len(pool))):
        by_class.setdefault(int(dm.dataset(name).labels[i]), []).append((name, i))
    order = [by_class[c] for c in sorted(by_class)]
    chosen = []
    while len(chosen) < min(num_images, len(pool)):
        for queue in order:
            if queue and len(chosen) < num_images:
                chosen.append(queue.pop(0))
    items = []
    for name, i in chosen:
        ds = dm.dataset(name)
        row = manifest.loc[int(ds.indices[i])]
        path = Path(row["path"])
        # beside the image (BUSI) or in make-phantoms' sibling `<root>_masks/` tree
        has_mask_file = bool(mask_files(path))
        mask = ds.masks[i].astype(bool) if (ds.masks is not None and has_mask_file) else None
        items.append(Item(ds.images[i], int(ds.labels[i]), mask, str(path), str(row["key"])))
    return items, list(dm.class_names)


def resolve_out_dir(ckpt: str, out: str | None) -> Path:
    """`--out`, or `<ckpt dir>/../explain`, or logs/explain/<time>; a used folder gets a new sibling."""
    if out:
        base = Path(out)
    elif Path(ckpt).resolve().parent.name == "checkpoints":
        base = Path(ckpt).resolve().parent.parent / "explain"
    else:
        base = Path("logs") / "explain" / datetime.now().strftime("%Y%m%d-%H%M%S")
    return fresh_out_dir(base)


# ---- LIME ------------------------------------------------------------------------------------------
def segment(image_rgb: np.ndarray) -> np.ndarray:
    """SLIC superpixels of an H x W x 3 image in [0, 1], computed on its gray level."""
    size = image_rgb.shape[0]
    return slic(image_rgb.mean(axis=2), n_segments=SLIC_SEGMENTS, compactness=SLIC_COMPACTNESS,
                sigma=size / 64.0, channel_axis=None, start_label=0)


def make_classifier_fn(model, in_channels: int, batch_size: int) -> Callable[[np.ndarray], np.ndarray]:
    """LIME's classifier_fn: N x H x W x 3 images in [0, 1] -> N x K softmax probabilities."""

    def classify(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float()
        x = x[:, :1] if in_channels == 1 else x
        with torch.inference_mode():
            probs = [torch.softmax(model(chunk * 2.0 - 1.0), dim=1) for chunk in x.split(batch_size)]
        return torch.cat(probs).numpy()

    return classify


def lesion_scores(segments: np.ndarray, top_ids: list[int], mask: np.ndarray) -> dict[str, float]:
    """Share of the top superpixels' area on the lesion, the chance level, and lesion coverage."""
    region = np.isin(segments, top_ids)
    on_lesion = float((region & mask).sum())
    return {
        "lesion_fraction": on_lesion / region.sum() if region.any() else 0.0,
        "chance_fraction": float(mask.mean()),
        "lesion_coverage": on_lesion / mask.sum(),
    }


def explain_item(explainer, item: Item, classify, args, class_names: list[str]) -> tuple[dict, np.ndarray, list[int]]:
    gray = item.image.astype(np.float64) / 255.0
    rgb = np.repeat(gray[:1], 3, axis=0).transpose(1, 2, 0) if gray.shape[0] == 1 else gray.transpose(1, 2, 0)
    probs = classify(rgb[None])[0]
    pred = int(probs.argmax())
    # Hidden superpixels become the image's mean gray: black would look like an anechoic lesion
    # in ultrasound (adding evidence), and LIME's default (each superpixel's own mean) keeps a
    # hypoechoic lesion dark, i.e. barely hidden.
    exp = explainer.explain_instance(rgb, classify, labels=(pred,), top_labels=None, hide_color=float(rgb.mean()),
                                     num_samples=args.num_samples, batch_size=args.batch_size,
                                     segmentation_fn=segment, random_seed=args.seed)
    weights = sorted(exp.local_exp[pred], key=lambda t: -t[1])
    top = [(int(i), float(w)) for i, w in weights if w > 0][: args.top_k]
    top_ids = [i for i, _ in top]
    record = {
        "file": item.file, "key": item.key,
        "true_label": item.label, "true_class": class_names[item.label],
        "predicted_label": pred, "predicted_class": class_names[pred],
        "probabilities": {name: float(p) for name, p in zip(class_names, probs)},
        "num_superpixels": int(exp.segments.max() + 1),
        "top_superpixels": [{"id": i, "weight": w} for i, w in top],
        "lime_intercept": float(exp.intercept[pred]), "lime_score": float(exp.score),
        "has_mask": item.mask is not None,
    }
    if item.mask is not None and item.mask.any():
        record.update(lesion_scores(exp.segments, top_ids, item.mask))
    return record, exp.segments, top_ids


# ---- pictures --------------------------------------------------------------------------------------
def overlay_png(item: Item, segments: np.ndarray, top_ids: list[int], caption: str, panel: int = 192) -> np.ndarray:
    """H x W x 3 uint8: image | LIME superpixels (top-k green) | lesion outline (red)."""
    gray = item.image.mean(axis=0) / 255.0
    up = max(1, panel // gray.shape[0])
    big = np.kron(gray, np.ones((up, up)))
    seg = np.kron(segments, np.ones((up, up), dtype=segments.dtype))
    base = np.repeat(big[..., None], 3, axis=2)
    lime = base.copy()
    lime[find_boundaries(seg, mode="inner")] = (0.55, 0.55, 0.2)
    top = np.isin(seg, top_ids)
    lime[top] = 0.6 * lime[top] + 0.4 * np.array([0.0, 1.0, 0.0])
    lime[find_boundaries(top, mode="inner")] = (0.0, 1.0, 0.0)
    lesion = base.copy()
    if item.mask is not None:
        lesion[find_boundaries(np.kron(item.mask, np.ones((up, up), dtype=bool)), mode="inner")] = (1.0, 0.0, 0.0)
    gap = np.ones((big.shape[0], 4, 3))
    body = (np.concatenate([base, gap, lime, gap, lesion], axis=1) * 255).astype(np.uint8)
    strip = Image.new("RGB", (body.shape[1], 16), (0, 0, 0))
    ImageDraw.Draw(strip).text((3, 2), caption, fill=(255, 255, 255))
    return np.concatenate([np.asarray(strip), body], axis=0)


def summarise(records: list[dict]) -> dict:
    lesion = [r for r in records if "lesion_fraction" in r]
    summary = {
        "num_images": len(records),
        "accuracy": float(np.mean([r["true_label"] == r["predicted_label"] for r in records])) if records else None,
        "num_lesion_images": len(lesion),
    }
    if lesion:
        lf = float(np.mean([r["lesion_fraction"] for r in lesion]))
        cf = float(np.mean([r["chance_fraction"] for r in lesion]))
        summary.update(mean_lesion_fraction=lf, mean_chance_fraction=cf, lesion_over_chance=lf / cf,
                       mean_lesion_coverage=float(np.mean([r["lesion_coverage"] for r in lesion])))
    return summary


def main(argv: list[str] | None = None) -> int:
    configure_offline()  # before lime / datamodules import albumentations and the hub clients
    args = build_parser().parse_args(argv)
    from lime.lime_image import LimeImageExplainer
    from torch.utils.tensorboard import SummaryWriter

    from datamodules.image_folder import DataTreeError
    from synthmed.runs import environment_record

    for name, value, low in (("--num-images", args.num_images, 1), ("--num-samples", args.num_samples, 10),
                             ("--top-k", args.top_k, 1), ("--batch-size", args.batch_size, 1)):
        if value < low:
            print(f"explain: {name}={value} must be >= {low}", file=sys.stderr)
            return 2
    start = time.perf_counter()
    try:
        ckpt, manifest = resolve_inputs(args)
        model = load_classifier(ckpt)
        dm = manifest_data(model, manifest) if manifest else tree_data(model, args.data_root, args.seed,
                                                                         args.test_fraction)
        items, class_names = load_items(dm, args.split, args.num_images, args.seed)
    except (ExplainError, DataTreeError) as exc:
        print(f"explain: {exc}", file=sys.stderr)
        return 2
    out = resolve_out_dir(ckpt, args.out)
    (out / "overlays").mkdir()
    classify = make_classifier_fn(model, int(model.hparams.in_channels), args.batch_size)
    explainer = LimeImageExplainer(random_state=args.seed)
    if not sys.stderr.isatty():
        # lime 0.2 has no option for its per-image tqdm bar over the num_samples perturbations; in a
        # log it is a wall of carriage returns, so off there (`progress` below prints a line instead)
        import lime.lime_image

        lime.lime_image.tqdm = lambda iterable, *a, **k: iterable
    writer = SummaryWriter(log_dir=str(out))
    records = []
    for n, item in enumerate(progress(items, desc="LIME", unit="image")):
        record, segments, top_ids = explain_item(explainer, item, classify, args, class_names)
        name = f"{n:03d}_{Path(item.file).stem.replace(' ', '_')}"
        caption = (f"{Path(item.file).name}  true {record['true_class']}  pred {record['predicted_class']} "
                   f"{record['probabilities'][record['predicted_class']]:.2f}")
        if "lesion_fraction" in record:
            caption += f"  lesion {record['lesion_fraction']:.2f} / chance {record['chance_fraction']:.2f}"
        picture = overlay_png(item, segments, top_ids, caption)
        record["overlay"] = f"overlays/{name}.png"
        Image.fromarray(picture).save(out / record["overlay"])
        writer.add_image(f"lime/{name}", picture, global_step=0, dataformats="HWC")
        records.append(record)
        lesion = (f"lesion_fraction {record['lesion_fraction']:.3f} (chance {record['chance_fraction']:.3f})"
                  if "lesion_fraction" in record else "no lesion mask")
        print(f"{item.key}: true {record['true_class']}, predicted {record['predicted_class']}, {lesion}")
    summary = summarise(records)
    for key in ("accuracy", "mean_lesion_fraction", "mean_chance_fraction", "lesion_over_chance"):
        if summary.get(key) is not None:
            writer.add_scalar(f"lime/{key}", summary[key], 0)
    writer.close()
    settings = dict(vars(args), ckpt=ckpt, split_manifest=str(manifest) if manifest else None)
    settings.update(segmentation={"method": "skimage.segmentation.slic", "n_segments": SLIC_SEGMENTS,
                                  "compactness": SLIC_COMPACTNESS, "sigma": "image_size / 64"},
                    hide_color="image mean gray", class_names=class_names, arch=model.hparams.get("arch"),
                    image_size=int(model.hparams.image_size), seconds=round(time.perf_counter() - start, 2))
    (out / "explanations.json").write_text(json.dumps(
        {"settings": settings, "summary": summary, "images": records}, indent=2) + "\n")
    (out / "env.json").write_text(json.dumps(environment_record(), indent=2) + "\n")
    print(f"explained {summary['num_images']} images (accuracy {summary['accuracy']:.2f}) in "
          f"{settings['seconds']:.1f} s")
    if "mean_lesion_fraction" in summary:
        print(f"lesion images: {summary['num_lesion_images']}, mean lesion fraction "
              f"{summary['mean_lesion_fraction']:.3f} vs chance {summary['mean_chance_fraction']:.3f} "
              f"({summary['lesion_over_chance']:.1f}x)")
    print(f"run_dir: {out.resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
