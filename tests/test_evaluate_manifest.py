"""`synthmed evaluate --train run_dir/split_manifest.csv`: the images a run used, read by split."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from synthmed.evaluate.images import ImageSetError, load_image_set, split_manifest_spec


@pytest.fixture()
def manifest(tmp_path):
    rows = []
    for i, split in enumerate(["train", "val", "test", "excluded", "test"]):
        cls = "a" if i % 2 else "b"
        path = tmp_path / "data" / cls / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(path)
        rows.append({"index": i, "key": f"{cls}/{i}.png", "class_name": cls, "path": str(path), "split": split})
    csv = tmp_path / "run" / "split_manifest.csv"
    csv.parent.mkdir()
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def test_spec_parsing():
    assert split_manifest_spec("some/folder") is None
    path, splits = split_manifest_spec("r/split_manifest.csv:train,val")
    assert (str(path), splits) == ("r/split_manifest.csv", ("train", "val"))
    assert split_manifest_spec("r/split_manifest.csv")[1] is None


def test_train_reads_train_and_val_rows_real_reads_test_rows(manifest):
    train = load_image_set(manifest, 8, 1, option="--train")
    assert sorted(int(p.split("/")[-1][0]) for p in train.paths) == [0, 1]
    real = load_image_set(manifest, 8, 1, option="--real")
    assert sorted(int(p.split("/")[-1][0]) for p in real.paths) == [2, 4]
    assert real.class_names == ["b"]
    excluded = load_image_set(f"{manifest}:excluded,test", 8, 1, option="--real")
    assert len(excluded) == 3
    assert sorted(excluded.images[:, 0, 0, 0].tolist()) == [80, 120, 160]


def test_bad_manifest_errors_name_the_option_and_the_fix(manifest, tmp_path):
    with pytest.raises(ImageSetError, match=r"--train .*no rows with split in \['holdout'\].*<split>"):
        load_image_set(f"{manifest}:holdout", 8, 1, option="--train")
    with pytest.raises(ImageSetError, match="--real .*does not exist"):
        load_image_set(tmp_path / "nope.csv", 8, 1, option="--real")
    frame = pd.read_csv(manifest)
    frame.loc[0, "path"] = str(tmp_path / "gone.png")
    frame.to_csv(manifest, index=False)
    with pytest.raises(ImageSetError, match="lists 1 files that do not exist"):
        load_image_set(manifest, 8, 1, option="--train")
