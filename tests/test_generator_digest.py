"""A synthetic set names its generator by the checkpoint's weights, not the file's bytes (issue 14).

The same training run into two output folders writes checkpoints whose bytes differ (hyper-parameters
and callback states hold the run's paths). The PNGs embedded the file's sha256, so the same pixels
became other PNG bytes, other file-hash split units and other TSTR folds. Now they embed
`datamodules.weights_digest.checkpoint_weights_sha256`, which is equal for equal weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from datamodules.generation import GenerationDataModule
from datamodules.hashing import file_sha256
from datamodules.synthetic_set_record import RECORD_NAME, SyntheticSetConflict, check_or_write_record
from datamodules.weights_digest import checkpoint_weights_sha256, state_dict_sha256
from lightning_modules.callbacks.synthetic_writer import SyntheticSetWriter
from lightning_modules.diffusion import PixelDiffusionModule
from test_gen_helpers import CLASS_NAMES, trainer
from test_gen_writer import pixel_ckpt  # noqa: F401 - the module-scoped generator checkpoint fixture


def moved_copy(ckpt: Path, target: Path) -> Path:
    """`ckpt` as the same run saved under another folder: equal weights, other paths inside."""
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    # what ModelCheckpoint's dirpath / best_model_path (and an LDM's autoencoder_ckpt hparam) do
    checkpoint["callbacks"] = {"ModelCheckpoint{}": {"dirpath": str(target.parent / "checkpoints"),
                                                     "best_model_path": str(target)}}
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, target)
    return target


def generate(tmp_path: Path, ckpt: Path, out: Path) -> None:
    module = PixelDiffusionModule.load_from_checkpoint(ckpt)
    dm = GenerationDataModule(num_per_class=2, class_names=CLASS_NAMES, output_dir=str(out), batch_size=3,
                              image_size=16, num_inference_steps=2)
    dm.checkpoint_path = str(ckpt)  # what `synthmed predict --ckpt_path` sets
    trainer(tmp_path, callbacks=[SyntheticSetWriter()], max_steps=1).predict(
        module, datamodule=dm, ckpt_path=str(ckpt), return_predictions=False)


def test_equal_weights_give_one_digest_and_other_weights_another(tmp_path, pixel_ckpt):  # noqa: F811
    moved = moved_copy(pixel_ckpt, tmp_path / "elsewhere" / "last.ckpt")
    assert file_sha256(moved) != file_sha256(pixel_ckpt)
    assert checkpoint_weights_sha256(moved) == checkpoint_weights_sha256(pixel_ckpt)
    state = torch.load(pixel_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert checkpoint_weights_sha256(pixel_ckpt) == state_dict_sha256(dict(reversed(list(state.items()))))
    name = next(k for k, v in state.items() if v.is_floating_point())
    assert state_dict_sha256({**state, name: state[name] + 1e-3}) != state_dict_sha256(state)
    # dtype and shape are part of it; bfloat16 (which numpy lacks) hashes too
    weight = torch.arange(6, dtype=torch.float32)
    digests = {state_dict_sha256({"w": w}) for w in (weight, weight.reshape(2, 3), weight.double(),
                                                      weight.bfloat16(), weight.bfloat16().reshape(3, 2))}
    assert len(digests) == 5


def test_the_same_generator_in_two_folders_writes_byte_identical_pngs(tmp_path, pixel_ckpt):  # noqa: F811
    moved = moved_copy(pixel_ckpt, tmp_path / "run_b" / "last.ckpt")
    generate(tmp_path, pixel_ckpt, tmp_path / "a" / "images")
    generate(tmp_path, moved, tmp_path / "b" / "images")
    pngs = sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*.png"))
    assert len(pngs) == 6
    assert all((tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes() for p in pngs)
    records = [json.loads((tmp_path / side / "images" / RECORD_NAME).read_text()) for side in "ab"]
    assert records[0]["checkpoint_sha256"] == records[1]["checkpoint_sha256"] == checkpoint_weights_sha256(moved)
    assert records[0]["checkpoint"] != records[1]["checkpoint"]
    # the moved checkpoint resumes the set the first one wrote (same generator), with nothing rewritten
    before = {p: (tmp_path / "a" / p).stat().st_mtime_ns for p in pngs}
    generate(tmp_path, moved, tmp_path / "a" / "images")
    assert {p: (tmp_path / "a" / p).stat().st_mtime_ns for p in pngs} == before


def test_a_set_recorded_with_the_file_hash_is_refused_with_the_reason(tmp_path):
    out = tmp_path / "old_set"
    out.mkdir()
    old = {"format": 1, "checkpoint_sha256": "a" * 64, "seed": 0}
    (out / RECORD_NAME).write_text(json.dumps(old))
    with pytest.raises(SyntheticSetConflict, match=r"older synthmed, whose checkpoint_sha256 hashed the checkpoint file"):
        check_or_write_record(out, {"checkpoint_sha256": "b" * 64, "seed": 0})
