"""Plain networks, schedules and the sampling loop: no Trainer involved."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from lightning_modules.nets.ablation_unet import AblationUNet
from lightning_modules.nets.sampling import generators_for, reverse_diffusion
from lightning_modules.nets.schedules import NoiseSchedule, build_scheduler, min_snr_weight, snr
from lightning_modules.nets.text import HashTokenizer, SmallTextEncoder, build_text_encoder
from lightning_modules.nets.unets import build_denoiser, count_parameters, denoise


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "cosine", "sigmoid"])
def test_schedules_are_monotone_and_shared_by_both_samplers(name):
    schedule = NoiseSchedule(name, num_train_timesteps=200)
    ac = schedule.alphas_cumprod()
    assert ac.shape == (200,)
    assert torch.all(ac[1:] < ac[:-1]), "alpha-bar must decrease"
    assert 0.9 < float(ac[0]) <= 1.0 and float(ac[-1]) < 0.3
    ddpm, ddim = build_scheduler("ddpm", schedule), build_scheduler("ddim", schedule)
    assert isinstance(ddpm, DDPMScheduler) and isinstance(ddim, DDIMScheduler)
    assert torch.equal(ddpm.betas, ddim.betas)


def test_default_schedule_is_ddpm_linear():
    betas = NoiseSchedule().betas()
    assert betas.shape == (1000,)
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    with pytest.raises(ValueError, match="unknown"):
        NoiseSchedule("quadratic")
    with pytest.raises(ValueError, match="beta_start"):
        NoiseSchedule("linear", beta_start=0.1, beta_end=0.01)


def test_cosine_spends_more_steps_at_high_snr_than_linear():
    linear, cosine = NoiseSchedule("linear").log_snr(), NoiseSchedule("cosine").log_snr()
    assert int((cosine > 0).sum()) > int((linear > 0).sum()) + 150


def test_min_snr_weight_caps_low_noise_steps():
    ac = NoiseSchedule().alphas_cumprod()
    t = torch.tensor([0, 500, 999])
    s = snr(ac, t)
    w = min_snr_weight(s, 5.0, "epsilon")
    assert w[0] < 0.01 and w[2] == pytest.approx(1.0)
    assert torch.equal(min_snr_weight(s, None, "epsilon"), torch.ones(3))
    assert torch.all(min_snr_weight(s, 5.0, "v_prediction") <= 1.0)


@pytest.mark.parametrize("mode", ["once", "first_half", "every_stage"])
@pytest.mark.parametrize("skips", [True, False])
def test_ablation_unet_variants_run_and_differ_in_structure(mode, skips):
    net = AblationUNet(in_channels=1, out_channels=1, sample_size=16, block_out_channels=(8, 16, 16, 16),
                       skip_connections=skips, time_embedding=mode, num_class_embeds=4)
    x = torch.randn(2, 1, 16, 16)
    out = net(x, torch.tensor([3, 700]), class_labels=torch.tensor([0, 3])).sample
    assert out.shape == x.shape
    injected = [n for n, _ in net.named_modules() if n.endswith(".emb")]
    expected = {"once": 0, "first_half": 4, "every_stage": 4 + 4}[mode]  # down + up stages, not the middle block
    assert len(injected) == expected
    assert (net.input_emb is not None) == (mode == "once")


def test_ablation_unet_time_actually_changes_output():
    torch.manual_seed(0)
    for mode in ("once", "every_stage"):
        net = AblationUNet(sample_size=16, block_out_channels=(8, 16), time_embedding=mode)
        x = torch.randn(1, 1, 16, 16)
        a, b = net(x, torch.tensor([1])).sample, net(x, torch.tensor([900])).sample
        assert not torch.allclose(a, b)


def test_ablation_unet_rejects_bad_options():
    with pytest.raises(ValueError, match="time_embedding"):
        AblationUNet(time_embedding="twice")
    with pytest.raises(ValueError, match="2 levels"):
        AblationUNet(block_out_channels=(8,))


def test_ablation_unet_takes_seed_002_size_236():
    net = AblationUNet(sample_size=236, block_out_channels=(4, 8, 8, 8), norm_num_groups=4)
    x = torch.randn(1, 1, 236, 236)
    assert net(x, torch.tensor([10])).sample.shape == x.shape


def test_build_denoiser_reproduces_seed_003_unet_shape():
    config = {
        "type": "unet2d", "layers_per_block": 3, "block_out_channels": [128, 128, 256, 256, 512, 512],
        "down_block_types": ["DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D",
                             "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"],
    }
    net = build_denoiser(config, in_channels=1, sample_size=128)
    assert net.config.sample_size == 128 and net.config.in_channels == 1 and net.config.out_channels == 1
    assert net.config.down_block_types[4] == "AttnDownBlock2D" and net.config.up_block_types[1] == "AttnUpBlock2D"
    # 149,979,393 parameters measured with diffusers 0.42 (layers_per_block=3 is what makes it this big)
    assert 140_000_000 < count_parameters(net) < 160_000_000
    assert len(net.down_blocks[0].resnets) == 3


def test_build_denoiser_checks_types_and_conflicts():
    with pytest.raises(ValueError, match="unknown"):
        build_denoiser({"type": "transformer"}, in_channels=1, sample_size=16)
    with pytest.raises(ValueError, match="disagrees"):
        build_denoiser({"in_channels": 3}, in_channels=1, sample_size=16)
    with pytest.raises(ValueError, match="cross_attention_dim"):
        build_denoiser({"type": "unet2d_condition"}, in_channels=4, sample_size=8)


def test_class_and_text_denoisers_accept_their_conditioning():
    small = {"block_out_channels": [16, 32], "down_block_types": ["DownBlock2D", "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "UpBlock2D"], "layers_per_block": 1, "norm_num_groups": 8}
    net = build_denoiser(small, in_channels=4, sample_size=8, num_class_embeds=4)
    x = torch.randn(2, 4, 8, 8)
    a = denoise(net, x, torch.tensor(10), class_labels=torch.tensor([0, 0]))
    b = denoise(net, x, torch.tensor(10), class_labels=torch.tensor([1, 1]))
    assert not torch.allclose(a, b), "class label must change the prediction"
    cond = dict(small, type="unet2d_condition", down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], attention_head_dim=4)
    text = SmallTextEncoder(output_dim=16, num_layers=1, num_heads=2)
    tnet = build_denoiser(cond, in_channels=4, sample_size=8, cross_attention_dim=16)
    h = text(["benign lesion", "normal tissue"])
    out = denoise(tnet, x, torch.tensor(10), encoder_hidden_states=h)
    assert out.shape == x.shape


def test_hash_tokenizer_is_stable_and_pads():
    tok = HashTokenizer(vocab_size=100, max_length=6)
    ids, keep = tok(["An ultrasound image", ""])
    ids2, _ = tok(["an ULTRASOUND image"])
    assert torch.equal(ids[0], ids2[0])
    assert keep[0].sum() == 4 and keep[1].sum() == 1  # start token only
    assert int(ids.max()) < 100
    with pytest.raises(ValueError, match="clip"):
        build_text_encoder("gpt")
    with pytest.raises(ValueError, match="path"):
        build_text_encoder("clip")


def test_reverse_diffusion_is_seeded_and_batch_invariant():
    torch.manual_seed(0)
    net = AblationUNet(sample_size=8, block_out_channels=(8, 8))
    schedule = NoiseSchedule(num_train_timesteps=50)

    def fn(x, t):
        return net(x, t).sample

    for sampler, steps in (("ddim", 5), ("ddpm", 50)):
        sched = build_scheduler(sampler, schedule)
        a = reverse_diffusion(fn, sched, (2, 1, 8, 8), num_inference_steps=steps, generator=generators_for([1, 2]))
        b = reverse_diffusion(fn, sched, (1, 1, 8, 8), num_inference_steps=steps, generator=generators_for([2]))
        assert torch.allclose(a[1], b[0], atol=1e-5), f"{sampler}: image 2 must not depend on its batch"
        assert not torch.allclose(a[0], a[1])
