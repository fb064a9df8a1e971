"""Generator options: choices are Literal types the CLI checks, conditioning is a composable strategy
(class+text included), and Stable Diffusion refuses the options its folder fixes (issue 11 items 4, SD)."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.conditioning import build_conditioning
from lightning_modules.diffusion import PixelDiffusionModule
from lightning_modules.nets.schedules import NoiseSchedule
from lightning_modules.stable_diffusion import StableDiffusionFinetuneModule
from synthmed.lightning_cli import run_trainer_verb
from test_checkpoint_cli import YAML
from test_gen_helpers import CLASS_NAMES, TINY_TEXT_UNET, build_tiny_sd


@pytest.mark.parametrize("option, value", [("conditioning", "mask"), ("sampler", "euler"), ("loss", "huber"),
                                           ("prediction_type", "noise")])
def test_bad_choice_is_refused_by_the_cli_naming_the_option(tmp_path, capsys, option, value):
    config = tmp_path / "gen.yaml"
    config.write_text(YAML)
    with pytest.raises(SystemExit):
        run_trainer_verb(["fit", "--config", str(config), f"--model.init_args.{option}", value, "--print_config"])
    err = capsys.readouterr().err
    assert option in err and value in err


def test_class_plus_text_conditioning_trains_inputs_and_samples():
    conditioning = build_conditioning("class+text", num_classes=3)
    assert conditioning.uses_labels and conditioning.uses_text and conditioning.guided
    assert conditioning.denoiser_kwargs(text_dim=16) == {"num_class_embeds": 4, "cross_attention_dim": 16}
    torch.manual_seed(0)
    module = PixelDiffusionModule(unet=dict(TINY_TEXT_UNET), conditioning="class+text", num_classes=3,
                                  class_names=CLASS_NAMES, image_size=16, num_inference_steps=2, guidance_scale=2.0,
                                  text_encoder={"kind": "small", "output_dim": 16}, noise_schedule=NoiseSchedule(
                                      num_train_timesteps=20))
    inputs = module.condition_inputs(torch.tensor([0, 5]), ["a", "b"], drop=torch.tensor([False, True]))
    assert inputs["class_labels"].tolist() == [0, 3] and inputs["encoder_hidden_states"].shape[0] == 2
    a = module.sample(labels=[0], captions=["a benign square"], seeds=[1])
    b = module.sample(labels=[1], captions=["a benign square"], seeds=[1])
    assert a.shape == (1, 1, 16, 16) and not torch.allclose(a, b), "the label conditions the image"
    with pytest.raises(ValueError, match="num_classes >= 1"):
        build_conditioning("class+text", num_classes=0)


@pytest.mark.parametrize("option, value", [("conditioning", "class"), ("unet", {"type": "unet2d"}),
                                           ("text_encoder", {"kind": "small"})])
def test_stable_diffusion_refuses_what_its_folder_fixes(tmp_path, option, value):
    folder = build_tiny_sd(tmp_path)
    with pytest.raises(ValueError, match=f"model.init_args.{option}=.*cannot be set"):
        StableDiffusionFinetuneModule(pretrained_path=str(folder), in_channels=1, image_size=16, **{option: value})
    module = StableDiffusionFinetuneModule(pretrained_path=str(folder), in_channels=1, image_size=16,
                                           conditioning="text", text_encoder={"kind": "clip", "path": str(folder)})
    assert module.conditioning == "text" and module.hparams.prediction_type is not None
