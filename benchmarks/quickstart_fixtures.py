"""The quickstart experiment as the benchmarks use it: its YAML values and a random-weight autoencoder.

Speed does not depend on what the weights have learned, so by default the benchmarks need no
trained checkpoint: `random_autoencoder_ckpt` writes an AutoencoderModule checkpoint with
experiments/quickstart/autoencoder.yaml's architecture and random weights (a trained one can be
passed instead with --autoencoder-ckpt).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from benchmarks.common import REPO_ROOT

QUICKSTART = REPO_ROOT / "experiments" / "quickstart"
LDM_YAML = QUICKSTART / "ldm.yaml"
AUTOENCODER_YAML = QUICKSTART / "autoencoder.yaml"


def load_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run the benchmarks from a synthmed checkout")
    return yaml.safe_load(path.read_text())


def init_args(path: Path, section: str) -> dict[str, Any]:
    """`<section>.init_args` of an experiment YAML (section: model or data)."""
    return dict(load_yaml(path)[section].get("init_args") or {})


def callback_init_args(path: Path, class_name: str) -> dict[str, Any]:
    """init_args of the first trainer callback whose class_path ends with `class_name`."""
    for callback in load_yaml(path)["trainer"].get("callbacks") or []:
        if callback["class_path"].rsplit(".", 1)[-1] == class_name:
            return dict(callback.get("init_args") or {})
    raise SystemExit(f"{path} has no {class_name} callback; the benchmark mirrors it and needs it")


def random_autoencoder_ckpt(out_dir: Path, image_size: int, channels: int, seed: int = 0) -> Path:
    """Write an AutoencoderModule checkpoint (quickstart architecture, random weights); return its path.

    Only the two keys `lightning_modules.autoencoder.load_autoencoder` reads are written.
    """
    from lightning_modules.autoencoder import AutoencoderModule

    args = init_args(AUTOENCODER_YAML, "model")
    torch.manual_seed(seed)
    module = AutoencoderModule(in_channels=channels, image_size=image_size, **args)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"autoencoder_random_{image_size}px.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def autoencoder_ckpt(given: str | None, out_dir: Path, image_size: int, channels: int) -> tuple[Path, str]:
    """(checkpoint path, how it was made) for --autoencoder-ckpt (None = random weights)."""
    if given:
        path = Path(given)
        if not path.is_file():
            raise SystemExit(f"--autoencoder-ckpt {given}: no such file (train one with "
                             "`synthmed fit --config experiments/quickstart/autoencoder.yaml`, or omit the "
                             "option to use random weights)")
        return path, f"trained ({given})"
    return random_autoencoder_ckpt(out_dir, image_size, channels), "random weights (quickstart architecture)"


def trainer_flags(device: str, precision: str) -> list[str]:
    """synthmed CLI overrides that put a run on `device` ("cpu"/"cuda") at `precision`."""
    accelerator = "gpu" if device == "cuda" else "cpu"
    return ["--trainer.accelerator", accelerator, "--trainer.devices", "1", "--trainer.precision",
            "32-true" if precision == "32" else precision]
