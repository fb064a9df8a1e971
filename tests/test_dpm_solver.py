"""The DPM-Solver++ sampler option: built on the training betas, N steps, deterministic, DDIM's ODE."""

from __future__ import annotations

import io

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler

from datamodules.generation import GenerationDataModule
from lightning_modules.diffusion import PixelDiffusionModule
from lightning_modules.nets.sampling import StepProgress, reverse_diffusion
from lightning_modules.nets.schedules import NoiseSchedule, build_scheduler
from test_gen_helpers import CLASS_NAMES, TINY_UNET, loader, trainer


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_dpm_solver_scheduler_uses_the_training_betas(name):
    schedule = NoiseSchedule(name, 100)
    scheduler = build_scheduler("dpmsolver++", schedule, clip_sample=True)
    assert isinstance(scheduler, DPMSolverMultistepScheduler)
    assert scheduler.config.algorithm_type == "dpmsolver++" and scheduler.config.solver_order == 2
    assert scheduler.config.thresholding and scheduler.config.sample_max_value == 1.0  # = clip x0 to [-1, 1]
    assert torch.allclose(scheduler.betas, schedule.betas())


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.manual_seed(0)
    module = PixelDiffusionModule(unet=TINY_UNET, conditioning="class", num_classes=3, class_names=CLASS_NAMES,
                                  in_channels=1, image_size=16, clip_sample=False, guidance_scale=1.5,
                                  noise_schedule=NoiseSchedule(num_train_timesteps=200))
    trainer(tmp_path_factory.mktemp("dpm"), max_steps=3).fit(module, loader())
    return module.eval()


def test_dpm_solver_runs_n_steps_and_is_deterministic_per_seed(tiny_model):
    calls = []
    handle = tiny_model.unet.register_forward_hook(lambda *_: calls.append(1))
    try:
        a = tiny_model.sample(labels=[0, 1], seeds=[5, 6], sampler="dpmsolver++", num_inference_steps=7)
    finally:
        handle.remove()
    assert len(calls) == 7, "one (guided, batched) U-Net call per step"
    b = tiny_model.sample(labels=[0, 1], seeds=[5, 6], sampler="dpmsolver++", num_inference_steps=7)
    assert torch.equal(a, b)
    alone = tiny_model.sample(labels=[1], seeds=[6], sampler="dpmsolver++", num_inference_steps=7)
    assert torch.allclose(alone[0], a[1], atol=1e-5), "an image depends on its own seed only"
    other = tiny_model.sample(labels=[0, 1], seeds=[7, 8], sampler="dpmsolver++", num_inference_steps=7)
    assert (a - other).abs().max() > 0.1


@pytest.mark.slow  # 2 x 100 steps: ~10 s on idle cores, minutes on loaded ones
def test_dpm_solver_with_many_steps_approaches_ddim(tiny_model):
    """Both solve the same probability-flow ODE; with many steps their answers meet."""
    kwargs = dict(labels=[0, 2], seeds=[11, 12])
    ddim = tiny_model.sample(sampler="ddim", num_inference_steps=100, **kwargs)
    many = tiny_model.sample(sampler="dpmsolver++", num_inference_steps=100, **kwargs)
    few = tiny_model.sample(sampler="dpmsolver++", num_inference_steps=3, **kwargs)
    far, near = (few - ddim).abs().mean().item(), (many - ddim).abs().mean().item()
    assert near < 0.02 and near < far / 3, (near, far)


def test_predict_request_accepts_dpm_solver(tiny_model, tmp_path):
    dm = GenerationDataModule(num_per_class=1, class_names=CLASS_NAMES, output_dir=str(tmp_path / "s"),
                              sampler="dpmsolver++", num_inference_steps=4, image_size=16)
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    out = tiny_model.predict_step(batch)
    assert out["sampler"] == "dpmsolver++" and out["steps"] == 4 and out["images"].shape == (3, 1, 16, 16)
    with pytest.raises(ValueError, match="dpmsolver"):
        GenerationDataModule(num_per_class=1, class_names=CLASS_NAMES, sampler="euler")


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_sampling_progress_is_a_bar_on_a_tty_and_periodic_lines_in_a_log():
    log = io.StringIO()
    progress = StepProgress(4, desc="sampling", stream=log, every_s=0.0)
    for _ in range(4):
        progress.update()
    progress.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 4 and lines[-1].startswith("sampling: step 4/4,") and "ETA 0 s" in lines[-1]
    quiet = io.StringIO()
    progress = StepProgress(4, stream=quiet)  # default 30 s between lines: a quick run prints nothing
    for _ in range(4):
        progress.update()
    assert quiet.getvalue() == ""
    tty = FakeTTY()
    progress = StepProgress(4, desc="sampling", stream=tty)
    for _ in range(4):
        progress.update()
    progress.close()
    drawn = tty.getvalue()
    assert drawn.startswith("\rsampling:") and "0/4" in drawn, "a tqdm bar, redrawn in place, on a terminal"
    assert "step" not in drawn, "no plain lines on a terminal"


def test_reverse_diffusion_progress_can_be_silenced(capsys):
    scheduler = build_scheduler("dpmsolver++", NoiseSchedule(num_train_timesteps=50))
    x = reverse_diffusion(lambda x, t: torch.zeros_like(x), scheduler, (1, 1, 4, 4), num_inference_steps=3,
                          generator=torch.Generator().manual_seed(0), progress=False)
    assert x.shape == (1, 1, 4, 4) and capsys.readouterr().err == ""


def test_benchmark_parses_configs_and_names_a_missing_model(tmp_path):
    from benchmarks import dpm_solver

    assert dpm_solver.parse_configs("dpmsolver++:10, ddim:50") == [("dpmsolver++", 10), ("ddim", 50)]
    with pytest.raises(SystemExit, match="sampler:steps"):
        dpm_solver.parse_configs("euler:10")
    with pytest.raises(SystemExit, match="no LDM checkpoint; train the quickstart first"):
        dpm_solver.main(["--run", str(tmp_path)])
