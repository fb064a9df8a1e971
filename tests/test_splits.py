"""Split, fold, subsample, group and overlap logic on hand-made catalogues."""

import pandas as pd
import pytest

from datamodules.splits import SplitError, SplitOptions, assign_splits, audit_overlap, groups_from_pattern


def catalogue(n_per_class=50, classes=("a", "b"), groups_per_class=None, source_split=""):
    rows = []
    for label, cls in enumerate(classes):
        for i in range(n_per_class):
            group = f"{cls}{i % groups_per_class}" if groups_per_class else ""
            rows.append({"key": f"{cls}/{i}.png", "label": label, "class_name": cls,
                         "source_split": source_split, "pixel_sha256": f"{cls}-{i}", "group": group})
    return pd.DataFrame(rows)


def test_stratified_fractions_and_determinism():
    df = assign_splits(catalogue(), SplitOptions(test_fraction=0.2, val_fraction=0.1, seed=3))
    counts = df.groupby(["split", "class_name"]).size().unstack()
    assert counts.loc["test"].tolist() == [10, 10]
    assert counts.loc["val"].tolist() == [4, 4]  # round(40 * 0.1)
    again = assign_splits(catalogue(), SplitOptions(test_fraction=0.2, val_fraction=0.1, seed=3))
    assert df["split"].tolist() == again["split"].tolist()
    other = assign_splits(catalogue(), SplitOptions(test_fraction=0.2, val_fraction=0.1, seed=4))
    assert df["split"].tolist() != other["split"].tolist()


def test_kfold_partitions_training_portion():
    opts = SplitOptions(test_fraction=0.2, num_folds=4, fold=1)
    df = assign_splits(catalogue(), opts)
    train_portion = df[df["split"] != "test"]
    assert sorted(train_portion["fold"].unique()) == [0, 1, 2, 3]
    assert (train_portion[train_portion["fold"] == 1]["split"] == "val").all()
    assert (train_portion[train_portion["fold"] != 1]["split"] == "train").all()
    # every fold is stratified: 10 per class
    assert (train_portion.groupby(["fold", "class_name"]).size() == 10).all()
    # the test set does not depend on the fold
    df0 = assign_splits(catalogue(), SplitOptions(test_fraction=0.2, num_folds=4, fold=0))
    assert set(df0[df0.split == "test"].key) == set(df[df.split == "test"].key)


def test_groups_never_straddle_splits_or_folds():
    df = assign_splits(catalogue(60, groups_per_class=12), SplitOptions(test_fraction=0.25, num_folds=3, fold=0))
    per_group = df.groupby("group")["split"].nunique()
    assert (df[df.split == "test"].groupby("group").size() > 0).any()
    assert set(df[df.split == "test"].group).isdisjoint(df[df.split != "test"].group)
    assert (df[df.split != "test"].groupby("group")["fold"].nunique() == 1).all()
    assert per_group.max() == 1


def test_identical_content_is_grouped_in_our_splits():
    cat = catalogue(40)
    cat.loc[cat.key == "a/1.png", "pixel_sha256"] = "same"
    cat.loc[cat.key == "a/2.png", "pixel_sha256"] = "same"
    for seed in range(10):
        df = assign_splits(cat, SplitOptions(seed=seed))
        assert df.loc[df.key.isin(["a/1.png", "a/2.png"]), "split"].nunique() == 1


def test_subsample_keep_and_complement_partition_the_pool():
    keep = assign_splits(catalogue(50), SplitOptions(test_fraction=0.0, val_fraction=0.0, subsample_fraction=0.2))
    comp = assign_splits(catalogue(50), SplitOptions(test_fraction=0.0, val_fraction=0.0, subsample_fraction=0.2,
                                                     subsample="complement"))
    kept, rest = set(keep[keep.split == "train"].key), set(comp[comp.split == "train"].key)
    assert kept.isdisjoint(rest) and len(kept | rest) == 100
    assert keep[keep.split == "train"].groupby("class_name").size().tolist() == [10, 10]


def test_preset_splits_are_used_and_val_tree_joins_folds():
    cat = pd.concat([catalogue(20, source_split="train"),
                     catalogue(5, source_split="val").assign(key=lambda d: "v" + d.key, pixel_sha256=lambda d: "v" + d.pixel_sha256),
                     catalogue(6, source_split="test").assign(key=lambda d: "t" + d.key, pixel_sha256=lambda d: "t" + d.pixel_sha256)])
    df = assign_splits(cat.reset_index(drop=True), SplitOptions())
    assert (df[df.source_split == "val"].split == "val").all()
    assert (df[df.source_split == "test"].split == "test").all()
    assert (df[df.source_split == "train"].split == "train").all()
    folded = assign_splits(cat.reset_index(drop=True), SplitOptions(num_folds=5, fold=0))
    assert (folded[folded.source_split == "val"].fold >= 0).all()


def test_overlap_policies():
    cat = catalogue(20, source_split="train")
    test = catalogue(4, source_split="test").assign(key=lambda d: "t" + d.key)
    cat = pd.concat([cat, test], ignore_index=True)  # test rows share sha256 with train a/0..3, b/0..3
    df = assign_splits(cat, SplitOptions())
    with pytest.raises(SplitError, match=r"(?s)8 images with identical content.*ta/0.png  ==  a/0.png"):
        audit_overlap(df.copy(), "error", "tree")
    dropped, report = audit_overlap(df.copy(), "drop_test", "tree")
    assert (dropped[dropped.key.str.startswith("t")].split == "excluded").all()
    assert "removed 8 test images" in report[0]
    allowed, report = audit_overlap(df.copy(), "allow", "tree")
    assert (allowed[allowed.key.str.startswith("t")].split == "test").all()
    assert "optimistic" in report[0]


def test_group_pattern_errors_and_matches():
    keys = pd.Series(["Normal/49 (1).jpg", "Stroke/58 (12).jpg", "odd.jpg"])
    assert groups_from_pattern(keys, r"^(\d+) \(").tolist() == ["49", "58", ""]
    with pytest.raises(SplitError, match="matched none"):
        groups_from_pattern(keys, r"^patient(\d+)")
    with pytest.raises(SplitError, match="capture group"):
        groups_from_pattern(keys, r"^\d+")


@pytest.mark.parametrize("kwargs, message", [
    ({"test_fraction": 1.2}, "test_fraction"), ({"fold": 5, "num_folds": 5}, "data.fold=5"),
    ({"subsample": "half"}, "subsample"), ({"on_overlap": "ignore"}, "on_overlap"),
])
def test_bad_options_name_the_option(kwargs, message):
    with pytest.raises(SplitError, match=message):
        assign_splits(catalogue(10), SplitOptions(**kwargs))


def test_extra_rows_always_train_and_folds_match_the_real_only_run():
    """TR+S: synthetic ("extra") images never validate, and the real folds equal TRTR's."""
    real = catalogue(40)
    synthetic = catalogue(30).assign(source_split="extra", key=lambda d: "extra0/" + d["key"],
                                     pixel_sha256=lambda d: "syn-" + d["pixel_sha256"])
    for fold in (0, 1):
        opts = SplitOptions(num_folds=2, fold=fold, seed=5)
        mixed = assign_splits(pd.concat([real, synthetic], ignore_index=True), opts)
        assert (mixed[mixed.source_split == "extra"]["split"] == "train").all()
        real_only = assign_splits(real, opts)
        assert mixed[mixed.source_split != "extra"]["split"].tolist() == real_only["split"].tolist()
    with_val = assign_splits(pd.concat([real, synthetic], ignore_index=True), SplitOptions(val_fraction=0.5))
    assert set(with_val[with_val.split == "val"].key).isdisjoint(synthetic.key)
