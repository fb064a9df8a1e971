"""The 8 CNNs of seed 004: build, train a step, minimum sizes, local weights, offline pretrained."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
import torchvision

from lightning_modules.nets import backbones
from lightning_modules.nets.backbones import ARCHS, PretrainedWeightsUnavailable, build_backbone

ALL_ARCHS = ["resnet18", "resnet50", "vgg16", "vgg19", "alexnet", "densenet121", "mobilenet_v2", "googlenet"]


def test_registry_has_exactly_the_eight_archs():
    assert sorted(ARCHS) == sorted(ALL_ARCHS)


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_arch_trains_one_step_on_32px(arch, in_channels):
    torch.manual_seed(0)
    net = build_backbone(arch, num_classes=3, in_channels=in_channels)
    first_conv = net.net.get_submodule(ARCHS[arch].first_conv).weight
    head = net.net.get_submodule(ARCHS[arch].head).weight
    assert first_conv.shape[1] == in_channels and head.shape[0] == 3
    before = [first_conv.detach().clone(), head.detach().clone()]
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x, y = torch.randn(2, in_channels, 32, 32), torch.tensor([0, 2])
    logits = net(x)
    assert logits.shape == (2, 3)
    loss = F.cross_entropy(logits, y)
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    assert not torch.equal(before[0], first_conv) and not torch.equal(before[1], head)
    net.eval()
    with torch.no_grad():
        feats = net.features(x)
    assert feats.shape == (2, net.num_features) and torch.isfinite(feats).all()


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_min_size_is_the_real_minimum_for_a_batch_of_one(arch):
    """At min_size a batch of one trains; one pixel less breaks the bare net, not the wrapper."""
    net = build_backbone(arch, num_classes=2, in_channels=1).train()
    size = ARCHS[arch].min_size
    with torch.no_grad():
        net.net(torch.randn(1, 1, size, size))
        with pytest.raises((RuntimeError, ValueError)):
            net.net(torch.randn(1, 1, size - 1, size - 1))
        assert net(torch.randn(1, 1, size - 1, size - 1)).shape == (1, 2)


def test_small_inputs_are_upsampled_and_wrong_channels_are_named():
    net = build_backbone("alexnet", num_classes=4, in_channels=1).eval()
    up = net.fit_min_size(torch.zeros(2, 1, 8, 16))
    assert up.shape == (2, 1, 63, 126)  # smaller side to the minimum, aspect kept
    assert net.fit_min_size(torch.zeros(1, 1, 64, 64)).shape[-1] == 64  # large enough: untouched
    with torch.no_grad():
        assert net(torch.randn(2, 1, 8, 8)).shape == (2, 4)
    with pytest.raises(ValueError, match="in_channels=1.*data.channels"):
        net(torch.randn(2, 3, 64, 64))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="model.arch='resnet34' is not one of"):
        build_backbone("resnet34", 2, 1)
    with pytest.raises(ValueError, match="in_channels must be 1 or 3"):
        build_backbone("resnet18", 2, 4)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        build_backbone("resnet18", 1, 1)


# ------------------------------------------------------------------ local weights files

@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_state_dict_loads_exactly(tmp_path, suffix):
    torch.manual_seed(1)
    source = build_backbone("resnet18", num_classes=3, in_channels=1)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(source.net.state_dict(), str(path))
    else:
        torch.save(source.net.state_dict(), path)
    torch.manual_seed(2)
    loaded = build_backbone("resnet18", num_classes=3, in_channels=1, pretrained=str(path))
    for key, value in source.net.state_dict().items():
        assert torch.equal(value, loaded.net.state_dict()[key]), key
    assert loaded.load_report.skipped_head == [] and loaded.load_report.unexpected == []


def test_lightning_checkpoint_with_other_head_and_channels_loads_body(tmp_path, caplog):
    """Prefixed keys (backbone.net.*), 3-ch conv into 1-ch, 5-class head into 2: all tolerated."""
    torch.manual_seed(3)
    source = build_backbone("googlenet", num_classes=5, in_channels=3)
    path = tmp_path / "run.ckpt"
    torch.save({"epoch": 3, "state_dict": {f"backbone.{k}": v for k, v in source.state_dict().items()}}, path)
    with caplog.at_level("WARNING"):
        loaded = build_backbone("googlenet", num_classes=2, in_channels=1, pretrained=path)
    report = loaded.load_report
    assert report.skipped_head == ["fc.weight", "fc.bias"]
    assert report.adapted == ["conv1.conv.weight"]
    assert "skipped head keys" in caplog.text and "fc.weight" in caplog.text
    conv = loaded.net.conv1.conv.weight
    assert torch.allclose(conv, source.net.conv1.conv.weight.sum(dim=1, keepdim=True))
    for key, value in loaded.net.state_dict().items():
        if not key.startswith(("fc.", "conv1.conv.")):
            assert torch.equal(value, source.net.state_dict()[key]), key


def test_torchvision_vgg16_file_loads_into_timm_vgg16(tmp_path):
    torch.manual_seed(4)
    tv = torchvision.models.vgg16(num_classes=10)
    path = tmp_path / "vgg16_torchvision.pth"
    torch.save(tv.state_dict(), path)
    loaded = build_backbone("vgg16", num_classes=2, in_channels=3, pretrained=path)
    assert torch.equal(loaded.net.features[0].weight, tv.features[0].weight)
    assert torch.equal(loaded.net.pre_logits.fc1.weight.flatten(1), tv.classifier[0].weight)
    assert loaded.load_report.skipped_head == ["head.fc.weight", "head.fc.bias"]


def test_wrong_or_missing_weights_file_is_named(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(build_backbone("resnet18", 2, 1).net.state_dict(), path)
    with pytest.raises(ValueError, match="does not fit arch 'resnet50'"):
        build_backbone("resnet50", 2, 1, pretrained=path)
    with pytest.raises(FileNotFoundError, match="model.pretrained=.*nope.pth"):
        build_backbone("resnet18", 2, 1, pretrained=str(tmp_path / "nope.pth"))
    torch.save({"note": "no tensors"}, tmp_path / "empty.pth")
    with pytest.raises(ValueError, match="holds no state_dict"):
        build_backbone("resnet18", 2, 1, pretrained=tmp_path / "empty.pth")


# ------------------------------------------------------------------ pretrained=True

@pytest.mark.parametrize("arch", ["resnet18", "alexnet"])
def test_pretrained_true_offline_fails_fast_with_hint(monkeypatch, arch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(backbones, "_cached_weights_file", lambda spec: None)
    start = time.perf_counter()
    with pytest.raises(PretrainedWeightsUnavailable) as err:
        build_backbone(arch, 2, 1, pretrained=True)
    assert time.perf_counter() - start < 5
    assert "model.pretrained: /path/to/weights.pth" in str(err.value)
    assert "HF_HUB_OFFLINE=1 is set" in str(err.value)


def test_pretrained_true_unreachable_host_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(backbones, "_cached_weights_file", lambda spec: None)
    monkeypatch.setattr(backbones, "_host_reachable", lambda host, timeout=3.0: False)
    with pytest.raises(PretrainedWeightsUnavailable, match="huggingface.co cannot be reached.*model.pretrained:"):
        build_backbone("densenet121", 2, 3, pretrained=True)


def test_host_probe_is_bounded_in_time():
    start = time.perf_counter()
    backbones._host_reachable("host.invalid", timeout=1.0)
    assert time.perf_counter() - start < 2.5


def test_pretrained_true_uses_cached_timm_weights_offline(tmp_path, monkeypatch):
    """A cached hub file loads without network: 1000-class RGB weights -> 2-class gray model."""
    import timm
    torch.manual_seed(5)
    imagenet_like = timm.create_model("resnet18", num_classes=1000)
    cached = tmp_path / "model.pth"
    torch.save(imagenet_like.state_dict(), cached)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(backbones, "_cached_weights_file", lambda spec: str(cached))
    net = build_backbone("resnet18", 2, 1, pretrained=True)
    assert net.net.fc.out_features == 2
    assert torch.allclose(net.net.conv1.weight, imagenet_like.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(net.net.layer4[1].conv2.weight, imagenet_like.layer4[1].conv2.weight)


def test_pretrained_true_uses_torch_hub_cache_for_torchvision(tmp_path, monkeypatch):
    torch.manual_seed(6)
    url = torchvision.models.GoogLeNet_Weights.DEFAULT.url
    imagenet_like = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(imagenet_like.state_dict(), tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[-1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    net = build_backbone("googlenet", 3, 1, pretrained=True)
    assert net.net.fc.out_features == 3 and net.net.aux1 is None and not net.net.transform_input
    assert torch.allclose(net.net.conv1.conv.weight, imagenet_like.conv1.conv.weight.sum(1, keepdim=True))
    assert torch.equal(net.net.inception5b.branch1.conv.weight, imagenet_like.inception5b.branch1.conv.weight)
    with torch.no_grad():
        assert net.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 3)
