"""One synthetic-set folder holds one set (issue 15 item 9): `predict` into a user's folder replaced
their `benign/000000.png` and `metadata.csv`, and a rerun with other settings mixed DDIM-2 and DDIM-5
images. Now `synthetic_set.json` records the settings and anything but the same request is refused
before a file is touched."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from datamodules.generation import GenerationDataModule
from datamodules.synthetic_set_record import RECORD_NAME, SyntheticSetConflict
from lightning_modules.callbacks.synthetic_writer import SyntheticSetWriter
from lightning_modules.diffusion import PixelDiffusionModule
from test_gen_helpers import CLASS_NAMES, trainer
from test_gen_writer import pixel_ckpt  # noqa: F401 - the module-scoped generator checkpoint fixture


def generate(tmp_path: Path, ckpt: Path, out: Path, n: int = 1, **sampling) -> None:
    module = PixelDiffusionModule.load_from_checkpoint(ckpt)
    dm = GenerationDataModule(num_per_class=n, class_names=CLASS_NAMES, output_dir=str(out), batch_size=3,
                              image_size=16, **sampling)
    dm.checkpoint_path = str(ckpt)  # what `synthmed predict --ckpt_path` sets (Lightning learns it after setup)
    trainer(tmp_path, callbacks=[SyntheticSetWriter()], max_steps=1).predict(
        module, datamodule=dm, ckpt_path=str(ckpt), return_predictions=False)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_users_folder_is_refused_and_left_untouched(tmp_path, pixel_ckpt):  # noqa: F811
    out = tmp_path / "my_images"
    (out / "benign").mkdir(parents=True)
    (out / "benign" / "000000.png").write_bytes(b"the user's own scan")
    (out / "metadata.csv").write_text("file_name,label\nbenign/000000.png,benign\n")
    before = snapshot(out)
    with pytest.raises(SyntheticSetConflict, match=r"my_images is not empty \(benign/000000.png, metadata.csv\) "
                                                   r"and has no synthetic_set.json.*nothing was changed"):
        generate(tmp_path, pixel_ckpt, out)
    assert snapshot(out) == before


def test_a_rerun_with_other_settings_is_refused_and_the_same_request_resumes(tmp_path, pixel_ckpt):  # noqa: F811
    out = tmp_path / "synthetic"
    generate(tmp_path, pixel_ckpt, out, num_inference_steps=2)
    record = json.loads((out / RECORD_NAME).read_text())
    assert (record["num_inference_steps"], record["sampler"], record["num_per_class"]) == (2, "ddim", 1)
    assert record["checkpoint_sha256"] == json.loads(json.dumps(record))["checkpoint_sha256"] != "none"
    before = snapshot(out)
    with pytest.raises(SyntheticSetConflict, match=r"num_inference_steps: 2 in the folder, 5 now.*nothing was changed"):
        generate(tmp_path, pixel_ckpt, out, num_inference_steps=5)
    with pytest.raises(SyntheticSetConflict, match=r"guidance_scale: 2.0 in the folder, 3.0 now"):
        generate(tmp_path, pixel_ckpt, out, num_inference_steps=2, guidance_scale=3.0)
    assert snapshot(out) == before
    # the identical request resumes: a lost image is regenerated, the others are kept
    (out / "normal" / "000000.png").unlink()
    generate(tmp_path, pixel_ckpt, out, num_inference_steps=2)
    assert snapshot(out) == before
    # more images of the same set are fine; fewer than the folder holds is not
    generate(tmp_path, pixel_ckpt, out, n=2, num_inference_steps=2)
    with open(out / "metadata.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and {r["steps"] for r in rows} == {"2"}
    with pytest.raises(SyntheticSetConflict, match=r"num_per_class: 2 in the folder, 1 now"):
        generate(tmp_path, pixel_ckpt, out, n=1, num_inference_steps=2)


def test_another_checkpoint_is_refused(tmp_path, pixel_ckpt):  # noqa: F811
    out = tmp_path / "synthetic"
    generate(tmp_path, pixel_ckpt, out)
    other = tmp_path / "other.ckpt"
    checkpoint = torch.load(pixel_ckpt, map_location="cpu", weights_only=True)
    name = next(k for k, v in checkpoint["state_dict"].items() if v.is_floating_point())
    checkpoint["state_dict"][name] = checkpoint["state_dict"][name] + 1e-3  # other weights: another generator
    torch.save(checkpoint, other)
    with pytest.raises(SyntheticSetConflict, match=r"checkpoint_sha256: '[0-9a-f]{64}' in the folder"):
        generate(tmp_path, other, out)


def test_the_cli_tells_the_datamodule_which_checkpoint_predict_restores():
    from types import SimpleNamespace

    from jsonargparse import Namespace

    from synthmed.lightning_cli import SynthmedCLI

    dm = GenerationDataModule(num_per_class=1, class_names=CLASS_NAMES)
    cli = SimpleNamespace(datamodule=dm, subcommand="predict",
                          config=Namespace(predict=Namespace(ckpt_path="/runs/ldm/checkpoints/last.ckpt")))
    SynthmedCLI.before_predict(cli)
    assert dm.checkpoint_path == "/runs/ldm/checkpoints/last.ckpt"
