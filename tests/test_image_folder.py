"""ImageFolderDataModule on small trees made by the test, and on ../shared/data."""

import shutil

import numpy as np
import pytest
import torch

from conftest import shared_dataset, write_image
from datamodules.image_folder import DataTreeError, ImageFolderDataModule
from datamodules.image_io import CorruptImageError
from datamodules.splits import SplitError


def dm(root, **kw):
    kw.setdefault("image_size", 16)
    kw.setdefault("batch_size", 4)
    return ImageFolderDataModule(root=str(root), **kw)


def test_batch_contract_and_class_order(make_tree):
    root = make_tree({"b_cls": 10, "a_cls": 10})
    module = dm(root, channels=3, test_fraction=0.2, val_fraction=0.2)
    assert module.class_names == ["a_cls", "b_cls"] and module.num_classes == 2
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert batch["image"].shape == (4, 3, 16, 16) and batch["image"].dtype == torch.float32
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["label"].dtype == torch.int64 and batch["index"].dtype == torch.int64
    rows = module.manifest.loc[batch["index"].numpy()]
    assert (rows["label"].to_numpy() == batch["label"].numpy()).all()
    # class a (dark) vs class b (bright): the pixels really belong to the labelled file
    means = batch["image"].mean(dim=(1, 2, 3))
    assert all((m < 0) == (lab == 0) for m, lab in zip(means, batch["label"]))


def test_explicit_class_names_fix_order(make_tree):
    root = make_tree({"x": 4, "y": 4})
    assert dm(root, class_names=["y", "x"]).class_names == ["y", "x"]
    with pytest.raises(DataTreeError, match=r"class_names=\['y', 'z'\] does not match.*\['x', 'y'\]"):
        dm(root, class_names=["y", "z"])


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "I;16"])
def test_reads_modes_and_converts_channels(tmp_path, mode):
    for cls in ("a", "b"):
        for i in range(5):
            write_image(tmp_path / "t" / cls / f"{i}.png", 200 if cls == "b" else 30, mode=mode, seed=i)
    for channels in (1, 3):
        module = dm(tmp_path / "t", channels=channels, test_fraction=0.0, val_fraction=0.0)
        module.setup("fit")
        image = module.dataset("train")[0]["image"]
        assert image.shape == (channels, 16, 16)
        assert image.std() > 0.01  # 16-bit images are rescaled, not truncated to black


def test_skips_masks_and_non_images(make_tree, caplog):
    root = make_tree({"a": 4, "b": 4})
    write_image(root / "a" / "a_000_mask.png", 255)
    write_image(root / "a" / "a_001_mask_1.png", 255)
    (root / "b" / "notes.txt").write_text("not an image")
    module = dm(root, test_fraction=0.0, val_fraction=0.0)
    with caplog.at_level("INFO"):
        module.prepare_manifest()
    assert len(module.manifest) == 8
    assert module.skipped_counts == {"masks": 2, "non_images": 1}
    assert "skipped 2 mask files" in caplog.text


def test_masks_attach_when_asked(make_tree):
    root = make_tree({"a": 3, "b": 3})
    mask = np.zeros((16, 20), np.uint8)
    mask[4:8, 5:10] = 255
    from PIL import Image
    Image.fromarray(mask).save(root / "a" / "a_000_mask.png")
    module = dm(root, load_masks=True, test_fraction=0.0, val_fraction=0.0, resize_mode="stretch")
    module.setup("fit")
    items = {module.manifest.loc[int(it["index"]), "key"]: it for it in module.dataset("train")}
    assert items["a/a_000.png"]["mask"].shape == (1, 16, 16)
    assert items["a/a_000.png"]["mask"].sum() == pytest.approx(16 * 16 * 20 / 320, rel=0.3)
    assert items["b/b_000.png"]["mask"].sum() == 0


def test_missing_root_names_option(tmp_path):
    with pytest.raises(DataTreeError, match=r"data.root=.*nowhere is not a directory"):
        dm(tmp_path / "nowhere")


def test_empty_class_folder_is_an_error(make_tree):
    root = make_tree({"a": 3, "b": 3})
    (root / "c").mkdir()
    with pytest.raises(DataTreeError, match=r"class folder .*/c has no image files"):
        dm(root).prepare_manifest()


def test_corrupt_file_error_names_file_or_is_skipped(make_tree):
    root = make_tree({"a": 5, "b": 5})
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    module = dm(root, test_fraction=0.0, val_fraction=0.0)
    with pytest.raises(CorruptImageError, match=r"cannot decode image file .*a/broken.png"):
        module.setup("fit")
    tolerant = dm(root, test_fraction=0.0, val_fraction=0.0, skip_corrupt=True)
    with pytest.warns(UserWarning, match="dropping .*broken.png"):
        tolerant.prepare_manifest()
    tolerant.setup("fit")
    assert len(tolerant.dataset("train")) == 10


def test_test_root_class_mismatch_names_both_lists(make_tree, tmp_path):
    train = make_tree({"a": 3, "b": 3}, root=tmp_path / "synthetic")
    test = make_tree({"a": 3, "c": 3}, root=tmp_path / "real")
    with pytest.raises(DataTreeError, match=r"\['a', 'c'\] differ from .*\['a', 'b'\]"):
        dm(train, test_root=str(test))


def test_test_root_is_the_test_set(make_tree, tmp_path):
    train = make_tree({"a": 6, "b": 6}, root=tmp_path / "synthetic")
    test = make_tree({"a": 4, "b": 4}, root=tmp_path / "real", seed=7)
    module = dm(train, test_root=str(test), val_fraction=0.25)
    m = module.prepare_manifest()
    assert (m[m.split == "test"].key.str.startswith("test_root/")).all() and (m.split == "test").sum() == 8
    assert set(m[~m.key.str.startswith("test_root/")].split) == {"train", "val"}


def test_preset_tree_overlap_error_and_drop(make_tree, tmp_path):
    root = make_tree({"a": 6, "b": 6}, sub="Training")
    make_tree({"a": 3, "b": 3}, root=root, sub="Testing", seed=5)
    shutil.copy(root / "Training" / "a" / "a_001.png", root / "Testing" / "a" / "copy.png")
    with pytest.raises(SplitError, match=r"(?s)Testing/a/copy.png  ==  Training/a/a_001.png.*on_overlap"):
        dm(root).prepare_manifest()
    m = dm(root, on_overlap="drop_test").prepare_manifest()
    assert m.set_index("key").loc["Testing/a/copy.png", "split"] == "excluded"
    assert (m.split == "test").sum() == 6


def test_captions(make_tree, tmp_path):
    root = make_tree({"a": 2, "b": 2})
    csv = tmp_path / "caps.csv"
    csv.write_text("image_path,text_caption,label\n" + "".join(
        f"{c}/{c}_{i:03d}.png,caption {c}{i},{c}\n" for c in "ab" for i in range(2)))
    module = dm(root, caption_file=str(csv), test_fraction=0.0, val_fraction=0.0, batch_size=4)
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    keys = module.manifest.loc[batch["index"].numpy(), "key"].tolist()
    assert batch["caption"] == [f"caption {k[0]}{int(k[-5])}" for k in keys]


def test_augmentation_from_yaml_spec(make_tree):
    root = make_tree({"a": 4, "b": 4})
    module = dm(root, test_fraction=0.0, val_fraction=0.0,
                train_transforms=[{"name": "HorizontalFlip", "p": 1.0}])
    module.setup("fit")
    flipped = module.dataset("train")[0]["image"]
    plain = dm(root, test_fraction=0.0, val_fraction=0.0)
    plain.setup("fit")
    assert torch.equal(flipped, plain.dataset("train")[0]["image"].flip(-1))
    with pytest.raises(ValueError, match=r"train_transforms\[0\].*NoSuchFlip"):
        dm(root, train_transforms=[{"name": "NoSuchFlip"}]).setup("fit")


def test_seeded_runs_augment_identically(make_tree):
    """albumentations ignores global seeds; the DataModule seeds it from torch (seed_everything)."""
    from lightning.pytorch import seed_everything

    root = make_tree({"a": 4, "b": 4})
    spec = [{"name": "Affine", "rotate": [-30, 30], "p": 1.0}]

    def draws(seed: int) -> torch.Tensor:
        seed_everything(seed, verbose=False)
        module = dm(root, test_fraction=0.0, val_fraction=0.0, train_transforms=spec)
        module.setup("fit")
        return torch.stack([module.dataset("train")[i % 8]["image"] for i in range(16)])

    assert torch.equal(draws(3), draws(3))
    assert not torch.equal(draws(3), draws(4))


# ---- the real datasets in ../shared/data ----------------------------------------------------------

def test_brain_tumor_overlap_is_reported_with_pairs():
    root = shared_dataset("brain_tumor_mri")
    with pytest.raises(SplitError) as err:
        dm(root).prepare_manifest()
    msg = str(err.value)
    # The shipped (re-encoded) copy shares 91 distinct contents between Training and Testing:
    # the README's 46 original-byte groups plus near-duplicates that became byte-identical.
    assert msg.startswith("91 images with identical content")
    assert "Testing/meningioma/Te-me_0135.jpg  ==  Training/meningioma/Tr-me_0071.jpg" in msg
    m = dm(root, on_overlap="drop_test").prepare_manifest()
    assert (m.note == "overlap_dropped").sum() == 101
    assert set(m[m.split == "test"].pixel_sha256).isdisjoint(m[m.split.isin(["train", "val"])].pixel_sha256)


def test_brain_stroke_group_folds_keep_scans_together():
    root = shared_dataset("brain_stroke_ct")
    module = dm(root, group_pattern=r"^(\d+) \(", num_folds=5, fold=2)
    m = module.prepare_manifest()
    assert m.group.nunique() == 82  # 51 Normal + 31 Stroke scan ids
    train_portion = m[m.split != "test"]
    assert (train_portion.groupby("group").fold.nunique() == 1).all()
    assert set(m[m.split == "test"].group).isdisjoint(train_portion.group)


def test_busi_conflicting_label_pair_is_reported():
    root = shared_dataset("busi")
    module = dm(root, on_overlap="drop_test")
    module.prepare_manifest()
    assert any("conflicting labels" in line and "benign (433).png" in line and "malignant (145).png" in line
               for line in module.audit_report)
    assert module.skipped_counts["masks"] == 798


def test_seed004_protocol_generator_subset_and_untouched_test_set(make_tree, tmp_path):
    """20 % of the pooled real tree trains the generator; TSTR/TRTR test on exactly the other 80 %."""
    real = make_tree({"a": 20, "b": 30}, root=tmp_path / "real", sub="Training")
    make_tree({"a": 5, "b": 5}, root=real, sub="Testing", seed=3)
    synthetic = make_tree({"a": 7, "b": 7}, root=tmp_path / "synthetic", seed=9)
    common = dict(use_preset_splits=False, seed=4)
    generator = dm(real, test_fraction=0.0, val_fraction=0.0, subsample_fraction=0.2, **common).prepare_manifest()
    seen = set(generator[generator.split == "train"].key)
    assert len(seen) == 12 and generator[generator.split == "train"].groupby("class_name").size().tolist() == [5, 7]

    tstr = dm(synthetic, test_root=str(real), test_subsample_fraction=0.2, val_fraction=0.2, **common).prepare_manifest()
    tested = {k.removeprefix("test_root/") for k in tstr[tstr.split == "test"].key}
    assert tested.isdisjoint(seen) and len(tested | seen) == 60
    assert set(tstr[tstr.split.isin(["train", "val"])].key.str.split("/").str[0]) == {"a", "b"}

    trs = dm(real, test_fraction=0.0, val_fraction=0.0, subsample_fraction=0.2,
             extra_train_roots=[str(synthetic)], **common).prepare_manifest()
    train = set(trs[trs.split == "train"].key)
    assert {k for k in train if not k.startswith("extra0/")} == seen
    assert sum(k.startswith("extra0/") for k in train) == 14
    with pytest.raises(DataTreeError, match="test_subsample_fraction needs data.test_root"):
        dm(real, test_subsample_fraction=0.2)
