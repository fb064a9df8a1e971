"""`synthmed export` writes a complete diffusers pipeline folder with a model card.

The acceptance test: in a fresh process with HF_HUB_OFFLINE=1, plain
`DiffusionPipeline.from_pretrained(export)` (no trust_remote_code) on a class-conditional latent
model's export is diffusers' own DiTPipeline and gives, for the same seeds, labels, guidance and
steps, exactly the PNGs `synthmed predict` (the module's predict_step + SyntheticSetWriter,
restored from the checkpoint as `predict --ckpt_path` does) wrote: every pixel equal. The only
lines diffusers logs on that load are the ones the model card explains.

Class-conditional pixel models have no diffusers pipeline class: their folder ships
SynthmedDiffusionPipeline's source and loads with trust_remote_code=True (tested here too).
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
from diffusers import DiffusionPipeline, DiTPipeline, DPMSolverMultistepScheduler, UNet2DModel
from PIL import Image

from datamodules.generation import GenerationDataModule, request_seed
from lightning_modules.autoencoder import AutoencoderModule
from lightning_modules.callbacks.synthetic_writer import SyntheticSetWriter
from lightning_modules.diffusion import LatentDiffusionModule, PixelDiffusionModule
from lightning_modules.nets.schedules import NoiseSchedule
from synthmed import diffusers_pipeline
from synthmed.diffusers_pipeline import SynthmedDiffusionPipeline
from synthmed.dit_export import DIT_NULL_CLASS, dit_notes
from synthmed.export import export_checkpoint
from test_gen_helpers import CLASS_NAMES, TINY_AE, TINY_UNET, loader, trainer

SEED, PER_CLASS, STEPS = 7, 2, 4
# what diffusers logs when it loads a DiT export, each explained in the model card
EXPLAINED_LOG_LINES = ("Expected types for transformer: (<class 'diffusers.models.transformers.dit_transformer_2d."
                       "DiTTransformer2DModel'>,), got <class 'diffusers.models.unets.unet_2d.UNet2DModel'>.",
                       "Expected types for id2label: (dict[int, str], <class 'NoneType'>), got typing.Dict[str, str].",
                       "Cannot initialize model with low cpu memory usage because `accelerate` was not found",
                       "Loading pipeline components...")  # the last: diffusers' tqdm bar, not a warning


@pytest.fixture(scope="module")
def autoencoder_ckpt(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ae")
    torch.manual_seed(0)
    ae = AutoencoderModule(in_channels=1, image_size=16, **TINY_AE)
    t = trainer(tmp, max_steps=2)
    t.fit(ae, loader())
    t.save_checkpoint(tmp / "ae.ckpt")
    return tmp / "ae.ckpt"


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory, autoencoder_ckpt):
    """A class-conditional LDM checkpoint inside a run directory (config.yaml, metrics.json)."""
    tmp = tmp_path_factory.mktemp("ldm_run")
    torch.manual_seed(0)
    ldm = LatentDiffusionModule(autoencoder_ckpt=str(autoencoder_ckpt), unet=TINY_UNET, conditioning="class",
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


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory):
    """A class-conditional pixel model (DPM-Solver++ sampler) and its SynthmedDiffusionPipeline export."""
    tmp = tmp_path_factory.mktemp("pixel_run")
    torch.manual_seed(0)
    module = PixelDiffusionModule(unet=TINY_UNET, conditioning="class", num_classes=3, class_names=CLASS_NAMES,
                                  in_channels=1, image_size=16, sampler="dpmsolver++", num_inference_steps=5,
                                  guidance_scale=1.5, noise_schedule=NoiseSchedule("cosine", 200))
    t = trainer(tmp, max_steps=2)
    t.fit(module, loader())
    t.save_checkpoint(tmp / "pixel.ckpt")
    return module.eval(), export_checkpoint(tmp / "pixel.ckpt", tmp / "export")


def predict_pngs(tmp: Path, ckpt: Path) -> dict[tuple[int, int], np.ndarray]:
    module = LatentDiffusionModule.load_from_checkpoint(ckpt)
    dm = GenerationDataModule(num_per_class=PER_CLASS, class_names=CLASS_NAMES, output_dir=str(tmp / "synthetic"),
                              seed=SEED, batch_size=2, image_size=16)
    trainer(tmp, callbacks=[SyntheticSetWriter()], max_steps=1).predict(module, datamodule=dm, ckpt_path=str(ckpt),
                                                                        return_predictions=False)
    return {(c, i): np.asarray(Image.open(tmp / "synthetic" / name / f"{i:06d}.png"))
            for c, name in enumerate(CLASS_NAMES) for i in range(PER_CLASS)}


# argv: folder, [[label, index, seed], ...], out.npy, extra from_pretrained kwargs (JSON)
FRESH_PROCESS = """
import json, sys
import numpy as np, torch
from diffusers import DiffusionPipeline
folder, requests = sys.argv[1], json.loads(sys.argv[2])
pipe = DiffusionPipeline.from_pretrained(folder, **json.loads(sys.argv[4]))
pipe.set_progress_bar_config(disable=True)
info = json.load(open(f"{folder}/synthmed.json"))
labels = [r[0] for r in requests]
generators = [torch.Generator().manual_seed(r[2]) for r in requests]
images = pipe(class_labels=labels, generator=generators, output_type="np", guidance_scale=info["guidance_scale"],
              num_inference_steps=info["num_inference_steps"]).images
np.save(sys.argv[3], (np.clip(images, 0, 1) * 255).round().astype(np.uint8)[..., 0])
print(type(pipe).__name__, type(pipe.scheduler).__name__, type(pipe.transformer if hasattr(pipe, "transformer") else pipe.unet).__name__)
"""


def fresh_env(tmp: Path) -> dict[str, str]:
    # HF_MODULES_CACHE: where diffusers copies a folder's pipeline file before importing it
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp / "hf_modules"), HF_HOME=str(tmp / "hf_home"))
    env.pop("DIFFUSERS_VERBOSITY", None)  # diffusers' default (warnings shown): the test reads what it logs
    return env


def run_fresh(tmp: Path, folder: Path, requests: list, **from_pretrained_kwargs) -> tuple[list[str], np.ndarray, str]:
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(folder), json.dumps(requests),
                             str(tmp / "theirs.npy"), json.dumps(from_pretrained_kwargs)], env=fresh_env(tmp),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split(), np.load(tmp / "theirs.npy"), result.stderr


def test_plain_from_pretrained_in_a_fresh_offline_process_gives_synthmed_predicts_pngs(latent_run, tmp_path):
    ckpt, out = latent_run
    ours = predict_pngs(tmp_path, ckpt)
    requests = [(c, i, request_seed(SEED, c, i)) for c in range(3) for i in range(PER_CLASS)]
    names, theirs, log = run_fresh(tmp_path, out, requests)
    assert names == ["DiTPipeline", "DDIMScheduler", "UNet2DModel"]
    for k, (c, i, _) in enumerate(requests):
        assert np.array_equal(theirs[k], ours[(c, i)]), f"class {c} image {i}: max |diff| " \
            f"{np.abs(theirs[k].astype(int) - ours[(c, i)].astype(int)).max()} / 255"
    assert np.abs(theirs[0].astype(int) - theirs[1].astype(int)).max() > 1, "different seeds must differ"
    unexplained = [line for line in log.splitlines() if line.strip() and line.strip() not in {"```", "."}
                   and not line.startswith(EXPLAINED_LOG_LINES) and "pip install accelerate" not in line]
    assert not unexplained, unexplained
    card = (out / "README.md").read_text()
    assert "Expected types for transformer" in card and "Expected types for id2label" in card and "`accelerate`" in card


@pytest.mark.parametrize("sampler", ["ddim", "dpmsolver++"])
@pytest.mark.parametrize("guidance", [2.0, 1.0])
def test_dit_export_equals_module_sample_bit_for_bit(latent_run, sampler, guidance):
    ckpt, out = latent_run
    module = LatentDiffusionModule.load_from_checkpoint(ckpt).eval()
    pipe = DiffusionPipeline.from_pretrained(out)
    if sampler == "dpmsolver++":  # DPM-Solver++(2M) exactly as synthmed builds it, on the folder's betas
        pipe.scheduler = module.make_scheduler(sampler)
        assert isinstance(pipe.scheduler, DPMSolverMultistepScheduler)
    pipe.set_progress_bar_config(disable=True)
    labels, seeds = [2, 0, 1, 1], [5, 6, 7, 8]
    theirs = pipe(class_labels=labels, guidance_scale=guidance, num_inference_steps=STEPS, output_type="pt",
                  generator=[torch.Generator().manual_seed(s) for s in seeds]).images
    ours = (module.sample(labels=labels, seeds=seeds, sampler=sampler, guidance_scale=guidance) + 1) / 2
    assert torch.equal(theirs, ours), (theirs - ours).abs().max()


def test_dit_null_label_1000_is_synthmeds_unconditional_draw(latent_run):
    ckpt, out = latent_run
    module = LatentDiffusionModule.load_from_checkpoint(ckpt).eval()
    pipe = DiffusionPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    table = pipe.transformer.class_embedding.weight
    original = module.unet.class_embedding.weight
    assert table.shape[0] == DIT_NULL_CLASS + 1
    assert torch.equal(table[:3], original[:3]) and torch.equal(table[3:], original[3].expand(DIT_NULL_CLASS - 2, -1))
    assert pipe.get_label_ids(["normal", "benign"]) == [2, 0]
    theirs = pipe(class_labels=[DIT_NULL_CLASS], guidance_scale=2.0, num_inference_steps=STEPS, output_type="pt",
                  generator=[torch.Generator().manual_seed(3)]).images
    ours = (module.sample(labels=[-1], seeds=[3]) + 1) / 2  # -1: synthmed's unconditional draw (null class)
    assert torch.equal(theirs, ours)


def test_unconditional_latent_export_is_a_dit_folder_with_a_zero_class_embedding(tmp_path, autoencoder_ckpt):
    torch.manual_seed(1)
    module = LatentDiffusionModule(autoencoder_ckpt=str(autoencoder_ckpt), unet=TINY_UNET, conditioning="none",
                                   in_channels=1, image_size=16, num_inference_steps=3,
                                   noise_schedule=NoiseSchedule(num_train_timesteps=50))
    t = trainer(tmp_path, max_steps=2)
    t.fit(module, loader())
    t.save_checkpoint(tmp_path / "uncond.ckpt")
    out = export_checkpoint(tmp_path / "uncond.ckpt", tmp_path / "export")
    pipe = DiffusionPipeline.from_pretrained(out)
    assert isinstance(pipe, DiTPipeline) and not pipe.transformer.class_embedding.weight.any()
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(class_labels=[0, 0], guidance_scale=1.0, num_inference_steps=3, output_type="pt",
                  generator=[torch.Generator().manual_seed(s) for s in (1, 2)]).images
    assert torch.equal(theirs, (module.eval().sample(num_images=2, seeds=[1, 2]) + 1) / 2)
    assert "class_labels=[0] * n" in (out / "README.md").read_text()


def test_dit_folder_layout(latent_run):
    _, out = latent_run
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "DiTPipeline"
    assert index["transformer"] == ["diffusers", "UNet2DModel"] and index["vae"] == ["diffusers", "AutoencoderKL"]
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]
    assert index["id2label"] == {"0": "benign", "1": "malignant", "2": "normal"}
    assert not (out / "synthmed_pipeline.py").exists() and not (out / "unet").exists()
    info = json.loads((out / "synthmed.json").read_text())
    assert info["pipeline"] == "DiTPipeline" and info["null_class"] == 3 and info["diffusers_null_class"] == 1000
    assert UNet2DModel.from_pretrained(out, subfolder="transformer").config.num_class_embeds == 1001


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
    assert "`benign`, `malignant`, `normal`" in text
    assert f'DiffusionPipeline.from_pretrained("{out}")' in text and "trust_remote_code=True" not in text
    assert f"guidance_scale=2.0, num_inference_steps={STEPS}" in text and "pixel for pixel" in text
    assert "null (unconditional) class index 3 (1000 in this folder's DiTPipeline)" in text


def test_card_says_where_dit_does_not_reproduce_synthmed():
    info = {"null_class": 3, "sampler": "ddpm", "guidance_scale": 2.0}
    assert "torch's global RNG" in dit_notes(info, eta=0.0)[-1]
    assert "eta 0.5" in dit_notes(dict(info, sampler="ddim"), eta=0.5)[-1]
    assert "pixel for pixel" in dit_notes(dict(info, sampler="dpmsolver++"), eta=0.0)[-1]
    assert "does not guide at all" in dit_notes(dict(info, sampler="ddim", guidance_scale=0.5), eta=0.0)[-1]


def test_pixel_class_conditional_export_with_dpm_solver_matches_the_module(pixel_run):
    module, out = pixel_run
    index = json.loads((out / "model_index.json").read_text())
    assert index["vae"] == [None, None] and index["scheduler"] == ["diffusers", "DPMSolverMultistepScheduler"]
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


def test_pixel_export_folder_ships_the_pipeline_source(pixel_run):
    _, out = pixel_run
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == ["synthmed_pipeline", "SynthmedDiffusionPipeline"]
    assert index["class_names"] == CLASS_NAMES and index["null_class"] == 3 and index["guidance_scale"] == 1.5
    assert (out / "synthmed_pipeline.py").read_bytes() == Path(diffusers_pipeline.__file__).read_bytes()
    tree = ast.parse((out / "synthmed_pipeline.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "typing", "torch", "diffusers"}, "the folder must load without synthmed"
    card = (out / "README.md").read_text()
    assert "trust_remote_code=True" in card and "no built-in pipeline" in card


@pytest.mark.slow  # two fresh processes (~40 s on a busy 2-core machine); the DiT acceptance test runs by default
def test_pixel_export_loads_in_a_fresh_process_with_trust_remote_code_only(pixel_run, tmp_path):
    module, out = pixel_run
    requests = [(2, 0, 11), (0, 0, 12)]
    names, theirs, _ = run_fresh(tmp_path, out, requests, trust_remote_code=True)
    assert names == ["SynthmedDiffusionPipeline", "DPMSolverMultistepScheduler", "UNet2DModel"]
    ours = (((module.sample(labels=[2, 0], seeds=[11, 12]) + 1) / 2).clamp(0, 1) * 255).round().to(torch.uint8)
    assert np.abs(theirs.astype(int) - ours[:, 0].numpy().astype(int)).max() <= 1
    code = ("import sys\nfrom diffusers import DiffusionPipeline\n"
            "try:\n    DiffusionPipeline.from_pretrained(sys.argv[1])\nexcept ValueError as err:\n    print(err)\n")
    result = subprocess.run([sys.executable, "-c", code, str(out)], env=fresh_env(tmp_path), capture_output=True,
                            text=True, timeout=300)
    assert "trust_remote_code=True" in result.stdout, result.stdout + result.stderr[-2000:]
