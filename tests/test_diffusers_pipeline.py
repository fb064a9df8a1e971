"""`synthmed export` writes a complete diffusers pipeline folder with a model card.

The acceptance test: in a fresh process with HF_HUB_OFFLINE=1, `DiffusionPipeline.from_pretrained`
on the export gives the PNGs `synthmed predict` (the module's predict_step + SyntheticSetWriter,
restored from the checkpoint as `predict --ckpt_path` does) wrote for the same seeds, labels and
steps, to within 1/255 per pixel (the PNG's rounding; in practice every pixel is equal).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from datamodules.generation import GenerationDataModule, request_seed
from lightning_modules.autoencoder import AutoencoderModule
from lightning_modules.callbacks.synthetic_writer import SyntheticSetWriter
from lightning_modules.diffusion import LatentDiffusionModule, PixelDiffusionModule
from lightning_modules.nets.schedules import NoiseSchedule
from synthmed import diffusers_pipeline
from synthmed.diffusers_pipeline import SynthmedDiffusionPipeline
from synthmed.export import export_checkpoint
from test_gen_helpers import CLASS_NAMES, TINY_AE, TINY_UNET, loader, trainer

SEED, PER_CLASS, STEPS = 7, 2, 4


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory):
    """A class-conditional LDM checkpoint inside a run directory (config.yaml, metrics.json)."""
    tmp = tmp_path_factory.mktemp("ldm_run")
    torch.manual_seed(0)
    ae = AutoencoderModule(in_channels=1, image_size=16, **TINY_AE)
    t = trainer(tmp, max_steps=2)
    t.fit(ae, loader())
    t.save_checkpoint(tmp / "ae.ckpt")
    ldm = LatentDiffusionModule(autoencoder_ckpt=str(tmp / "ae.ckpt"), unet=TINY_UNET, conditioning="class",
                                num_classes=3, class_names=CLASS_NAMES, in_channels=1, image_size=16,
                                guidance_scale=2.0, num_inference_steps=STEPS,
                                noise_schedule=NoiseSchedule(num_train_timesteps=100))
    t = trainer(tmp, max_steps=3)
    t.fit(ldm, loader())
    run = tmp / "logs" / "ldm" / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "last.ckpt"
    t.save_checkpoint(ckpt)
    (run / "metrics.json").write_text(json.dumps({"train/loss": 0.4321, "val/loss": 0.5, "_info": {"x": 1}}))
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {
        "class_path": "datamodules.image_folder.ImageFolderDataModule",
        "init_args": {"root": "/data/phantoms", "image_size": 16}}}))
    return ckpt, export_checkpoint(ckpt, tmp / "export", license="cc-by-nc-4.0")


def predict_pngs(tmp: Path, ckpt: Path) -> dict[tuple[int, int], np.ndarray]:
    module = LatentDiffusionModule.load_from_checkpoint(ckpt)
    dm = GenerationDataModule(num_per_class=PER_CLASS, class_names=CLASS_NAMES, output_dir=str(tmp / "synthetic"),
                              seed=SEED, batch_size=2, image_size=16)
    trainer(tmp, callbacks=[SyntheticSetWriter()], max_steps=1).predict(module, datamodule=dm, ckpt_path=str(ckpt),
                                                                        return_predictions=False)
    return {(c, i): np.asarray(Image.open(tmp / "synthetic" / name / f"{i:06d}.png"))
            for c, name in enumerate(CLASS_NAMES) for i in range(PER_CLASS)}


FRESH_PROCESS = """
import json, sys
import numpy as np, torch
from diffusers import DiffusionPipeline
folder, requests = sys.argv[1], json.loads(sys.argv[2])
pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
labels = [r[0] for r in requests]
generators = [torch.Generator().manual_seed(r[2]) for r in requests]
images = pipe(class_labels=labels, generator=generators, output_type="np").images
np.save(sys.argv[3], (np.clip(images, 0, 1) * 255).round().astype(np.uint8)[..., 0])
print(type(pipe).__name__, type(pipe.scheduler).__name__, pipe.config.num_inference_steps)
"""


def fresh_env(tmp: Path) -> dict[str, str]:
    # HF_MODULES_CACHE: where diffusers copies the folder's pipeline file before importing it
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp / "hf_modules"),
                HF_HOME=str(tmp / "hf_home"), DIFFUSERS_VERBOSITY="error")


def test_fresh_offline_process_loads_the_export_and_reproduces_synthmed_predict(latent_run, tmp_path):
    ckpt, out = latent_run
    ours = predict_pngs(tmp_path, ckpt)
    requests = [(c, i, request_seed(SEED, c, i)) for c in range(3) for i in range(PER_CLASS)]
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(out), json.dumps(requests),
                             str(tmp_path / "theirs.npy")], env=fresh_env(tmp_path), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["SynthmedDiffusionPipeline", "DDIMScheduler", str(STEPS)]
    theirs = np.load(tmp_path / "theirs.npy")
    diffs = [np.abs(theirs[k].astype(int) - ours[(c, i)].astype(int)).max() for k, (c, i, _) in enumerate(requests)]
    assert max(diffs) <= 1, f"per-image max |diff| in 1/255 steps: {diffs}"
    assert np.abs(theirs[0].astype(int) - theirs[1].astype(int)).max() > 1, "different seeds must differ"


def test_without_trust_remote_code_diffusers_refuses_and_says_why(latent_run, tmp_path):
    _, out = latent_run
    code = ("import sys\nfrom diffusers import DiffusionPipeline\n"
            "try:\n    DiffusionPipeline.from_pretrained(sys.argv[1])\nexcept ValueError as err:\n    print(err)\n")
    result = subprocess.run([sys.executable, "-c", code, str(out)], env=fresh_env(tmp_path), capture_output=True,
                            text=True, timeout=300)
    assert "trust_remote_code=True" in result.stdout, result.stdout + result.stderr[-2000:]


def test_export_folder_layout_and_the_copied_pipeline_source(latent_run):
    _, out = latent_run
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == ["synthmed_pipeline", "SynthmedDiffusionPipeline"]
    assert index["unet"] == ["diffusers", "UNet2DModel"] and index["vae"] == ["diffusers", "AutoencoderKL"]
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]
    assert index["class_names"] == CLASS_NAMES and index["null_class"] == 3 and index["guidance_scale"] == 2.0
    assert (out / "synthmed_pipeline.py").read_bytes() == Path(diffusers_pipeline.__file__).read_bytes()
    tree = ast.parse((out / "synthmed_pipeline.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "typing", "torch", "diffusers"}, "the folder must load without synthmed"


def test_model_card_has_hub_metadata_run_facts_and_no_clinical_use(latent_run):
    ckpt, out = latent_run
    text = (out / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["library_name"] == "diffusers" and meta["license"] == "cc-by-nc-4.0"
    assert meta["pipeline_tag"] == "unconditional-image-generation"
    assert {"synthmed", "medical-imaging", "latent-diffusion", "class-conditional"} <= set(meta["tags"])
    assert "**Not for clinical use.**" in text and "## Intended use" in text
    assert "| `train/loss` | 0.4321 |" in text and "_info" not in text
    assert "optimizer steps: 3" in text and "`/data/phantoms`" in text
    assert "`benign`, `malignant`, `normal`" in text and "DiffusionPipeline.from_pretrained" in text


def test_pixel_class_conditional_export_with_dpm_solver_matches_the_module(tmp_path):
    torch.manual_seed(0)
    module = PixelDiffusionModule(unet=TINY_UNET, conditioning="class", num_classes=3, class_names=CLASS_NAMES,
                                  in_channels=1, image_size=16, sampler="dpmsolver++", num_inference_steps=5,
                                  guidance_scale=1.5, noise_schedule=NoiseSchedule("cosine", 200))
    t = trainer(tmp_path, max_steps=2)
    t.fit(module, loader())
    t.save_checkpoint(tmp_path / "pixel.ckpt")
    out = export_checkpoint(tmp_path / "pixel.ckpt", tmp_path / "export")
    index = json.loads((out / "model_index.json").read_text())
    assert index["vae"] == [None, None] and index["scheduler"] == ["diffusers", "DPMSolverMultistepScheduler"]
    from diffusers import DPMSolverMultistepScheduler, UNet2DModel

    config = {k: index[k] for k in ("class_names", "null_class", "sample_shape", "guidance_scale",
                                    "num_inference_steps")}
    pipe = SynthmedDiffusionPipeline(unet=UNet2DModel.from_pretrained(out, subfolder="unet"),
                                     scheduler=DPMSolverMultistepScheduler.from_pretrained(out, subfolder="scheduler"),
                                     **config)
    assert pipe.scheduler.config.algorithm_type == "dpmsolver++" and pipe.scheduler.config.solver_order == 2
    seeds = [3, 4, 5]
    theirs = pipe(class_labels=["normal", 0, 1], generator=[torch.Generator().manual_seed(s) for s in seeds],
                  output_type="pt").images
    ours = (module.sample(labels=[2, 0, 1], seeds=seeds) + 1) / 2
    assert torch.allclose(theirs, ours, atol=1e-5)
