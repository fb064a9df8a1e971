"""The synthetic-set writer: layout, metadata, resume after a kill, imagefolder compatibility."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.generation import GenerationDataModule, is_complete, request_seed
from lightning_modules.callbacks.noise_schedule import NoiseScheduleCallback
from lightning_modules.nets.schedules import NoiseSchedule
from lightning_modules.callbacks.synthetic_writer import SyntheticSetWriter
from lightning_modules.diffusion import PixelDiffusionModule
from test_gen_helpers import CLASS_NAMES, TINY_UNET, loader, trainer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pixel_ckpt(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pix")
    torch.manual_seed(0)
    module = PixelDiffusionModule(unet=TINY_UNET, conditioning="class", num_classes=3, class_names=CLASS_NAMES,
                                  in_channels=1, image_size=16, num_inference_steps=3, guidance_scale=2.0,
                                  noise_schedule=NoiseSchedule(num_train_timesteps=200))
    t = trainer(tmp, callbacks=[NoiseScheduleCallback()], max_steps=1)
    t.fit(module, loader())
    path = tmp / "pixel.ckpt"
    t.save_checkpoint(path)
    return path


def predict(tmp_path, ckpt, out, n=3, **module_overrides):
    module = PixelDiffusionModule.load_from_checkpoint(ckpt, **module_overrides)
    calls = {"n": 0}
    step = module.predict_step
    module.predict_step = lambda *a, **k: (calls.__setitem__("n", calls["n"] + 1), step(*a, **k))[1]
    dm = GenerationDataModule(num_per_class=n, class_names=CLASS_NAMES, output_dir=str(out), batch_size=2,
                              image_size=16)
    t = trainer(tmp_path, callbacks=[SyntheticSetWriter()], max_steps=1)
    t.predict(module, datamodule=dm, ckpt_path=str(ckpt), return_predictions=False)
    return calls["n"]


def read_metadata(out: Path) -> list[dict]:
    with open(out / "metadata.csv") as handle:
        return list(csv.DictReader(handle))


def test_writer_layout_metadata_and_rerun(tmp_path, pixel_ckpt):
    out = tmp_path / "synthetic"
    assert predict(tmp_path, pixel_ckpt, out) == 5  # 9 images in batches of 2
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert files == [f"{c}/{i:06d}.png" for c in CLASS_NAMES for i in range(3)]
    rows = read_metadata(out)
    assert [r["file_name"] for r in rows] == files
    assert rows[0].keys() == {"file_name", "label", "class_name", "seed", "sampler", "steps", "guidance",
                              "checkpoint_sha256"}
    assert rows[4]["label"] == "1" and rows[4]["class_name"] == "malignant"  # integer label: datasets' ClassLabel
    assert int(rows[4]["seed"]) == request_seed(0, 1, 1)
    assert rows[0]["sampler"] == "ddim" and rows[0]["steps"] == "3" and float(rows[0]["guidance"]) == 2.0
    from datamodules.weights_digest import checkpoint_weights_sha256  # the weights', not the file's bytes
    assert rows[0]["checkpoint_sha256"] == checkpoint_weights_sha256(pixel_ckpt)
    img = Image.open(out / files[0])
    assert img.mode == "L" and img.size == (16, 16)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert predict(tmp_path, pixel_ckpt, out) == 0, "a finished set is not regenerated"
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == mtimes
    assert predict(tmp_path, pixel_ckpt, out, n=4) == 2, "raising N only adds the missing indices"
    assert len(read_metadata(out)) == 12


def test_synthetic_set_loads_with_datasets_imagefolder(tmp_path, pixel_ckpt):
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "synthetic"
    predict(tmp_path, pixel_ckpt, out, n=2)
    from datamodules.hf import imagefolder_features

    ds = datasets.load_dataset("imagefolder", data_dir=str(out), split="train", features=imagefolder_features(out))
    assert len(ds) == 6
    assert ds.features["label"].names == CLASS_NAMES and sorted(set(ds["label"])) == [0, 1, 2]


def test_generation_datamodule_validates_and_skips_broken_files(tmp_path):
    with pytest.raises(ValueError, match="class_names"):
        GenerationDataModule(num_per_class=2, class_names=[])
    with pytest.raises(ValueError, match="captions"):
        GenerationDataModule(num_per_class=2, class_names=["a", "b"], captions={"a": "x"})
    dm = GenerationDataModule(num_per_class=2, class_names=["a"], output_dir=str(tmp_path))
    dm.setup("predict")  # a killed run had written synthetic_set.json before its first image
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "000000.png").write_bytes(b"\x89PNG truncated")
    (tmp_path / "a" / ".000001.png.tmp123").write_bytes(b"partial")
    dm.setup("predict")
    assert [int(r["index"]) for r in dm.requests] == [0, 1]
    assert not (tmp_path / "a" / ".000001.png.tmp123").exists()
    assert not is_complete(tmp_path / "a" / "000000.png")
    with pytest.raises(ValueError, match="predict"):
        dm.setup("fit")


KILL_SCRIPT = textwrap.dedent("""
    import sys
    from lightning.pytorch import Trainer
    from datamodules.generation import GenerationDataModule
    from lightning_modules.callbacks.synthetic_writer import SyntheticSetWriter
    from lightning_modules.diffusion import PixelDiffusionModule
    ckpt, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    module = PixelDiffusionModule.load_from_checkpoint(ckpt, num_inference_steps=40)
    dm = GenerationDataModule(num_per_class=n, class_names=["benign", "malignant", "normal"], output_dir=out,
                              batch_size=1, image_size=16)
    Trainer(accelerator="cpu", logger=False, callbacks=[SyntheticSetWriter()], enable_progress_bar=False
            ).predict(module, datamodule=dm, ckpt_path=ckpt, return_predictions=False)
""")


def test_kill_during_predict_then_rerun_leaves_exactly_n_valid_pngs(tmp_path, pixel_ckpt):
    out, n = tmp_path / "synthetic", 3
    script = tmp_path / "gen.py"
    script.write_text(KILL_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(script), str(pixel_ckpt), str(out), str(n)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.rglob("*.png"))) < 2 and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = list(out.rglob("*.png"))
    assert 2 <= len(written) < 3 * n, "the kill must land mid-run for this test to mean anything"
    assert all(is_complete(p) for p in written), "no partial PNG under a final name"
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    for name in CLASS_NAMES:
        pngs = sorted((out / name).glob("*.png"))
        assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(n)]
        assert all(is_complete(p) for p in pngs)
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    assert len(read_metadata(out)) == 3 * n
    # the resumed set equals an uninterrupted one (seeds depend only on class and index)
    module = PixelDiffusionModule.load_from_checkpoint(pixel_ckpt, num_inference_steps=40)
    label, index = 2, n - 1
    expected = module.sample(labels=[label], seeds=[request_seed(0, label, index)])
    expected = ((expected[0, 0] + 1) / 2 * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    got = np.asarray(Image.open(out / "normal" / f"{index:06d}.png"))
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_generation_data_overrides_the_sampling_settings(tmp_path, pixel_ckpt):
    module = PixelDiffusionModule.load_from_checkpoint(pixel_ckpt)
    dm = GenerationDataModule(num_per_class=1, class_names=CLASS_NAMES, output_dir=str(tmp_path / "s"),
                              image_size=16, sampler="ddim", num_inference_steps=5, guidance_scale=4.5)
    t = trainer(tmp_path, callbacks=[SyntheticSetWriter()], max_steps=1)
    t.predict(module, datamodule=dm, return_predictions=False)
    rows = read_metadata(tmp_path / "s")
    assert {(r["steps"], r["guidance"]) for r in rows} == {("5", "4.5")}
    expected = module.sample(labels=[1], seeds=[request_seed(0, 1, 0)], num_inference_steps=5, guidance_scale=4.5)
    got = np.asarray(Image.open(tmp_path / "s" / "malignant" / "000000.png")).astype(int)
    assert np.abs(got - ((expected[0, 0] + 1) / 2 * 255).round().numpy().astype(int)).max() <= 1
    with pytest.raises(ValueError, match="sampler"):
        GenerationDataModule(num_per_class=1, class_names=["a"], sampler="euler")


DDP_SCRIPT = textwrap.dedent("""
    import sys
    from lightning.pytorch import Trainer
    from datamodules.generation import GenerationDataModule
    from lightning_modules.callbacks.synthetic_writer import SyntheticSetWriter
    from lightning_modules.diffusion import PixelDiffusionModule

    class CountingWriter(SyntheticSetWriter):
        def write_on_batch_end(self, trainer, pl_module, prediction, *args):
            super().write_on_batch_end(trainer, pl_module, prediction, *args)
            with open(sys.argv[2] + f"/rank{trainer.global_rank}.log", "a") as log:
                log.writelines(f"{int(l)} {int(i)}\\n" for l, i in zip(prediction["label"], prediction["index"]))

    if __name__ == "__main__":
        ckpt, out = sys.argv[1], sys.argv[2]
        module = PixelDiffusionModule.load_from_checkpoint(ckpt, num_inference_steps=2)
        dm = GenerationDataModule(num_per_class=5, class_names=["benign", "malignant", "normal"], output_dir=out,
                                  batch_size=2, image_size=16)
        Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False, callbacks=[CountingWriter()],
                enable_progress_bar=False).predict(module, datamodule=dm, ckpt_path=ckpt, return_predictions=False)
""")


@pytest.mark.slow
def test_ddp_predict_writes_every_index_on_exactly_one_rank(tmp_path, pixel_ckpt):
    out = tmp_path / "synthetic"
    out.mkdir()
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, str(script), str(pixel_ckpt), str(out)], env=env, check=True, timeout=600,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    written = [line for rank in (0, 1) for line in (out / f"rank{rank}.log").read_text().splitlines()]
    assert sorted(written) == sorted(f"{label} {index}" for label in range(3) for index in range(5))
    assert (out / "rank0.log").read_text() and (out / "rank1.log").read_text(), "both ranks generated"
    assert len(read_metadata(out)) == 15
