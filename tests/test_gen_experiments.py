"""CI smoke run of every generator experiment YAML: the command in its `# CPU smoke:` header line.

Each YAML states the exact CPU-sized command (fast_dev_run + small overrides) in its header, so
what CI runs is what the README tells a user to try. Placeholders: {this} (the YAML),
{autoencoder_ckpt} (a tiny 1-channel f=4 autoencoder), {tiny_sd} (a random-weight Stable
Diffusion folder), {tmp} (this test's scratch folder), {real_tree} / {synthetic_tree} (phantom trees).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch

from synthmed.cli import main
from test_gen_helpers import build_tiny_sd, loader, trainer

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("quickstart", "phantoms", "abd2024_ultrasound_ldm", "nguyen2023_unet_ablation", "team29_ddim",
           "ali_sd_mri_ct")
GENERATOR_MODULES = ("lightning_modules.autoencoder", "lightning_modules.diffusion", "lightning_modules.stable_diffusion",
                     "datamodules.generation")
# pipeline.yaml files are `synthmed reproduce` pipelines, smoke-tested in tests/test_reproduce_smokes.py
YAMLS = sorted(p for folder in FOLDERS for p in (ROOT / "experiments" / folder).glob("*.yaml")
               if p.name != "pipeline.yaml"
               and (any(m in p.read_text() for m in GENERATOR_MODULES) or "run_version" in p.read_text()))


def smoke_command(path: Path) -> list[str]:
    match = re.search(r"^# CPU smoke: synthmed (.+)$", path.read_text(), flags=re.M)
    assert match, f"{path} has no '# CPU smoke: synthmed ...' header line"
    return shlex.split(match.group(1))


@pytest.fixture(scope="module")
def placeholders(tmp_path_factory):
    from lightning_modules.autoencoder import AutoencoderModule

    tmp = tmp_path_factory.mktemp("smoke")
    ae = AutoencoderModule(in_channels=1, image_size=32, latent_channels=4, block_out_channels=(8, 16, 16),
                           norm_num_groups=8)
    t = trainer(tmp, max_steps=1)
    t.fit(ae, loader(n=8, size=32))
    t.save_checkpoint(tmp / "ae.ckpt")
    from datamodules.phantom_generator import write_phantom_tree

    real = write_phantom_tree(tmp / "real", per_class=8, size=32, seed=0)
    fake = write_phantom_tree(tmp / "fake", per_class=4, size=32, seed=1)  # stands in for a synthetic set
    return {"autoencoder_ckpt": str(tmp / "ae.ckpt"), "tiny_sd": str(build_tiny_sd(tmp)), "tmp": str(tmp),
            "real_tree": str(real), "synthetic_tree": str(fake)}


def test_every_generator_yaml_has_a_smoke_line():
    assert len(YAMLS) >= 23
    for path in YAMLS:
        assert "fast_dev_run" in " ".join(smoke_command(path)), path


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_experiment_yaml_smoke_run(path, placeholders, tmp_path, monkeypatch):
    text = path.read_text()
    for data in re.findall(r"(\.\./shared/data/[\w./-]+)", text):
        if not (ROOT / data).exists():
            pytest.skip(f"needs {data}")
    # {tmp} is this test's own folder: two generate YAMLs must not write into one synthetic set
    values = dict(placeholders, this=str(path.relative_to(ROOT)), tmp=str(tmp_path))
    args = [a.format(**values) for a in smoke_command(path)]
    monkeypatch.chdir(ROOT)
    torch.manual_seed(0)
    assert main(args + ["--logs_root", str(tmp_path / "logs")]) == 0


def test_ablation_yamls_differ_only_in_the_two_switches():
    import yaml

    folder = ROOT / "experiments" / "nguyen2023_unet_ablation"
    configs = {p.stem: yaml.safe_load(p.read_text()) for p in folder.glob("*.yaml") if p.name != "pipeline.yaml"}
    switches = {}
    for name, config in configs.items():
        unet = config["model"]["init_args"]["unet"]
        switches[name] = (unet.pop("skip_connections"), unet.pop("time_embedding"))
        config.pop("run_version")
    assert switches == {"encoder_decoder": (False, "every_stage"), "unet_time_once": (True, "once"),
                        "unet_time_first_half": (True, "first_half"),
                        "unet_time_every_stage": (True, "every_stage")}
    first = next(iter(configs.values()))
    assert all(config == first for config in configs.values())
