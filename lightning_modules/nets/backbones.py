"""The eight CNN classifiers of seed 004 (Nafi et al. 2024) as plain `nn.Module`s (no Lightning).

    net = build_backbone("resnet18", num_classes=3, in_channels=1)            # random init
    net = build_backbone("vgg16", 2, 3, pretrained="/path/to/vgg16.pth")     # local weights file
    logits = net(x)           # x: B x C x H x W; inputs below the arch's minimum are upsampled
    feats = net.features(x)   # B x net.num_features, the penultimate vector (FID extractor)

timm builds resnet18/50, vgg16/19, densenet121 and mobilenet_v2 (timm `mobilenetv2_100`);
torchvision builds alexnet and googlenet, which timm does not have.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import timm
from timm.models import adapt_input_conv
from lightning_modules.checkpoint_io import load_weights

log = logging.getLogger(__name__)

OFFLINE_HINT = ("Download the weights on a machine with network access and pass a local file path "
                "via `model.pretrained: /path/to/weights.pth` (a state_dict .pth/.pt/.safetensors or "
                "a Lightning .ckpt); or, online, set HF_HUB_OFFLINE=0.")


@dataclass(frozen=True)
class ArchSpec:
    """How to build one architecture and where its first conv / classifier head live.

    min_size: smallest square input (px) at which the net trains with a batch of ONE (measured
    by trying every size; BatchNorm in train mode needs > 1 value per channel, so batch-1 is the
    binding case). Smaller inputs are bilinearly upsampled to it inside `Backbone`.
    """

    source: str          # "timm" or "torchvision"
    name: str            # timm model name or torchvision builder name
    min_size: int
    first_conv: str      # state_dict prefix of the input conv (its in-channels may differ)
    head: str            # state_dict prefix of the classifier layer (its classes may differ)
    host: str            # where pretrained=True downloads from


ARCHS: dict[str, ArchSpec] = {
    "resnet18": ArchSpec("timm", "resnet18", 33, "conv1", "fc", "huggingface.co"),
    "resnet50": ArchSpec("timm", "resnet50", 33, "conv1", "fc", "huggingface.co"),
    "vgg16": ArchSpec("timm", "vgg16", 32, "features.0", "head.fc", "huggingface.co"),
    "vgg19": ArchSpec("timm", "vgg19", 32, "features.0", "head.fc", "huggingface.co"),
    "alexnet": ArchSpec("torchvision", "alexnet", 63, "features.0", "classifier.6", "download.pytorch.org"),
    "densenet121": ArchSpec("timm", "densenet121", 61, "features.conv0", "classifier", "huggingface.co"),
    "mobilenet_v2": ArchSpec("timm", "mobilenetv2_100", 33, "conv_stem", "classifier", "huggingface.co"),
    "googlenet": ArchSpec("torchvision", "googlenet", 47, "conv1.conv", "fc", "download.pytorch.org"),
}


class PretrainedWeightsUnavailable(RuntimeError):
    """pretrained=True but the hub cannot be reached and the weights are not cached."""


class Backbone(nn.Module):
    """One of the ARCHS wrapped so any input >= 1 px works and the penultimate features are exposed.

    Attributes: arch, net (the timm/torchvision model), min_size, in_channels, num_classes,
    num_features (D of `features`), load_report (what a local weights file filled, or None).
    """

    def __init__(self, arch: str, net: nn.Module, in_channels: int, num_classes: int):
        super().__init__()
        self.arch, self.net = arch, net
        self.spec = ARCHS[arch]
        self.min_size, self.in_channels, self.num_classes = self.spec.min_size, in_channels, num_classes
        self.load_report: LoadReport | None = None
        self.num_features = self.net.get_submodule(self.spec.head).in_features

    def fit_min_size(self, x: torch.Tensor) -> torch.Tensor:
        """Check channels; bilinearly upsample so the smaller side is at least `min_size`."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{self.arch} was built for in_channels={self.in_channels} (B x C x H x W) "
                             f"but got a batch of shape {tuple(x.shape)}; set model.in_channels / "
                             "data.channels to match the images")
        h, w = x.shape[-2:]
        if min(h, w) >= self.min_size:
            return x
        scale = self.min_size / min(h, w)
        size = (max(self.min_size, round(h * scale)), max(self.min_size, round(w * scale)))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.fit_min_size(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate (pre-logits) feature vector, B x num_features."""
        x = self.fit_min_size(x)
        if self.spec.source == "timm":
            return self.net.forward_head(self.net.forward_features(x), pre_logits=True)
        # torchvision: run the net with its last Linear swapped for Identity. Swapping (rather than
        # renaming the head) keeps torchvision's state_dict names, so its weight files still load.
        parent_name, _, leaf = self.spec.head.rpartition(".")
        parent = self.net.get_submodule(parent_name) if parent_name else self.net
        head = getattr(parent, leaf)
        setattr(parent, leaf, nn.Identity())
        try:
            return self.net(x).flatten(1)
        finally:
            setattr(parent, leaf, head)

    forward_features = features  # same name as timm's, but pooled: B x D (not a feature map)


def build_backbone(arch: str, num_classes: int, in_channels: int,
                   pretrained: bool | str | os.PathLike = False) -> Backbone:
    """Build one of ARCHS for `num_classes` outputs and 1 or 3 input channels.

    pretrained: False = random init; a path = load that local weights file (head / first-conv
    mismatches tolerated and reported); True = ImageNet weights from the hub (cache first;
    offline it raises PretrainedWeightsUnavailable at once).
    """
    if arch not in ARCHS:
        raise ValueError(f"model.arch={arch!r} is not one of {sorted(ARCHS)}")
    if in_channels not in (1, 3):
        raise ValueError(f"model.in_channels must be 1 or 3, got {in_channels}")
    if num_classes < 2:
        raise ValueError(f"model.num_classes must be >= 2 for a classifier, got {num_classes}")
    spec = ARCHS[arch]
    if pretrained is True:
        net = _build_hub_pretrained(arch, spec, num_classes, in_channels)
        return Backbone(arch, net, in_channels, num_classes)
    net = _build_random(spec, num_classes, in_channels)
    backbone = Backbone(arch, net, in_channels, num_classes)
    if pretrained not in (False, None, ""):
        backbone.load_report = load_local_weights(backbone.net, spec, pretrained)
    return backbone


def _build_random(spec: ArchSpec, num_classes: int, in_channels: int) -> nn.Module:
    if spec.source == "timm":
        return timm.create_model(spec.name, pretrained=False, num_classes=num_classes, in_chans=in_channels)
    if spec.name == "googlenet":
        net = torchvision.models.googlenet(weights=None, num_classes=num_classes, aux_logits=False,
                                           init_weights=True, transform_input=False)
    else:
        net = torchvision.models.alexnet(weights=None, num_classes=num_classes)
    if in_channels != 3:
        _replace_first_conv(net, spec, in_channels)
    return net


def _replace_first_conv(net: nn.Module, spec: ArchSpec, in_channels: int) -> None:
    """torchvision models are 3-channel; swap the input conv, adapting any weights it holds."""
    parent_name, _, leaf = spec.first_conv.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    old: nn.Conv2d = getattr(parent, leaf)
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                    old.dilation, old.groups, old.bias is not None)
    with torch.no_grad():  # timm's rule: sum RGB kernels for 1 channel (gray = R = G = B)
        new.weight.copy_(adapt_input_conv(in_channels, old.weight))
        if old.bias is not None:
            new.bias.copy_(old.bias)
    setattr(parent, leaf, new)


# ---------------------------------------------------------------- pretrained=True (hub)

def _offline_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def _host_reachable(host: str, timeout: float = 3.0) -> bool:
    """TCP connect to host:443 in a thread, so even a hanging DNS lookup is bounded by `timeout`."""
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _cached_weights_file(spec: ArchSpec) -> str | None:
    """Local copy of the hub weights if an earlier download left one in the cache."""
    if spec.source == "timm":
        from huggingface_hub import try_to_load_from_cache
        repo = timm.models.get_pretrained_cfg(spec.name).hf_hub_id
        for filename in ("model.safetensors", "pytorch_model.bin"):
            hit = try_to_load_from_cache(repo, filename) if repo else None
            if isinstance(hit, str):
                return hit
        return None
    url = torchvision.models.get_model_weights(spec.name).DEFAULT.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    return str(path) if path.is_file() else None


def _build_hub_pretrained(arch: str, spec: ArchSpec, num_classes: int, in_channels: int) -> nn.Module:
    cached = _cached_weights_file(spec)
    if cached is None and (_offline_env() or not _host_reachable(spec.host)):
        why = "HF_HUB_OFFLINE=1 is set" if _offline_env() else f"{spec.host} cannot be reached"
        raise PretrainedWeightsUnavailable(
            f"model.pretrained=true needs the ImageNet weights of {arch!r} from {spec.host}, but {why} "
            f"and they are not in the local cache. {OFFLINE_HINT}")
    if spec.source == "timm":
        overlay = {"file": cached} if cached else None  # a cached file loads with no network call
        return timm.create_model(spec.name, pretrained=True, num_classes=num_classes,
                                 in_chans=in_channels, pretrained_cfg_overlay=overlay)
    weights = torchvision.models.get_model_weights(spec.name).DEFAULT  # reads the torch.hub cache first
    if spec.name == "googlenet":
        # aux heads are dropped by torchvision itself; transform_input indexes 3 channels
        net = torchvision.models.googlenet(weights=weights, transform_input=in_channels == 3)
    else:
        net = torchvision.models.alexnet(weights=weights)
    head: nn.Linear = net.get_submodule(spec.head)
    parent_name, _, leaf = spec.head.rpartition(".")
    setattr(net.get_submodule(parent_name) if parent_name else net, leaf,
            nn.Linear(head.in_features, num_classes))
    if in_channels != 3:
        _replace_first_conv(net, spec, in_channels)
    return net


# ---------------------------------------------------------------- pretrained=<local file>

@dataclass
class LoadReport:
    """What `load_local_weights` did with each key of the file."""

    path: str
    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)       # first conv, channels converted
    skipped_head: list[str] = field(default_factory=list)  # head shape differs: left at random init
    unexpected: list[str] = field(default_factory=list)    # in the file, not in the model
    missing: list[str] = field(default_factory=list)       # in the model, not in the file (head/buffers)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A flat name -> tensor dict from .safetensors, a torch state_dict, or a Lightning checkpoint."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model.pretrained={str(path)!r}: no such weights file. Pass false, true "
                                "(hub download) or the path of a .pth/.pt/.safetensors/.ckpt file")
    # tensors only (safetensors, or torch.load(weights_only=True)): a file that would run code is refused
    obj = load_weights(path, "model.init_args.pretrained")
    for key in ("state_dict", "model_state_dict", "model"):  # Lightning, common training scripts
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, dict) else {}
    if not tensors:
        raise ValueError(f"model.pretrained={str(path)!r} holds no state_dict of tensors "
                         f"(found {type(obj).__name__}); save one with torch.save(model.state_dict(), path)")
    return tensors


def _strip_common_prefix(source: dict[str, torch.Tensor], target_keys: set[str]) -> dict[str, torch.Tensor]:
    """Drop the wrapper prefix ('backbone.net.', 'module.', ...) that makes most keys match."""
    votes: dict[str, int] = {}
    for key in source:
        parts = key.split(".")
        for i in range(len(parts)):
            if ".".join(parts[i:]) in target_keys:
                prefix = ".".join(parts[:i]) + ("." if i else "")
                votes[prefix] = votes.get(prefix, 0) + 1
                break
    if not votes:
        return source
    prefix = max(votes, key=votes.get)
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in source.items()}


# timm's own converters from torchvision key names/shapes, so torchvision vgg/densenet weight
# files load into the timm models (both are no-ops on timm-format files).
_TORCHVISION_TO_TIMM = {"vgg16": ("timm.models.vgg", "_filter_fn"), "vgg19": ("timm.models.vgg", "_filter_fn"),
                        "densenet121": ("timm.models.densenet", "_filter_torchvision_pretrained")}


def _convert_torchvision_keys(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    module_name, fn_name = _TORCHVISION_TO_TIMM.get(name, ("", ""))
    convert = getattr(sys.modules.get(module_name), fn_name, None) if module_name else None
    return convert(dict(state)) if convert else state


def load_local_weights(net: nn.Module, spec: ArchSpec, path: str | os.PathLike) -> LoadReport:
    """Load a local weights file into `net`, tolerating only a different head or input channels.

    Body parameters that are missing or have another shape mean the file is for another
    architecture: that raises, naming the keys. Skipped keys are logged at WARNING.
    """
    target = net.state_dict()
    source = _strip_common_prefix(read_state_dict(path), set(target))
    if spec.source == "timm":
        source = _convert_torchvision_keys(spec.name, source)
    report = LoadReport(path=str(path))

    def in_layer(key: str, layer: str) -> bool:
        return key.startswith(layer + ".")

    new_state, wrong = {}, []
    for key, value in source.items():
        if key not in target:
            report.unexpected.append(key)
        elif value.shape == target[key].shape:
            new_state[key] = value
            report.loaded.append(key)
        elif in_layer(key, spec.first_conv) and key.endswith("weight") and value.ndim == 4 \
                and value.shape[0] == target[key].shape[0] and value.shape[2:] == target[key].shape[2:]:
            new_state[key] = adapt_input_conv(target[key].shape[1], value)
            report.adapted.append(key)
        elif in_layer(key, spec.head):
            report.skipped_head.append(key)
        else:
            wrong.append(f"{key}: file {tuple(value.shape)} vs model {tuple(target[key].shape)}")
    report.missing = [k for k in target if k not in source]
    body_missing = [k for k in report.missing if not in_layer(k, spec.head)
                    and not k.endswith("num_batches_tracked")]
    if wrong or body_missing or not report.loaded:
        detail = "; ".join(wrong[:5] + [f"{k}: not in file" for k in body_missing[:5]])
        raise ValueError(f"model.pretrained={str(path)!r} does not fit arch {spec.name!r}: {len(wrong)} "
                         f"shape mismatches, {len(body_missing)} missing body keys, {len(report.loaded)} "
                         f"keys matched ({detail or 'no key names in common'}). Is it a {spec.name} file?")
    net.load_state_dict(new_state, strict=False)
    if report.adapted:
        log.warning("%s: first conv %s converted to %d input channel(s)", path, report.adapted, net.state_dict()[
            report.adapted[0]].shape[1])
    if report.skipped_head or report.unexpected:
        log.warning("%s: loaded %d tensors; skipped head keys (shape differs, random init): %s; "
                    "skipped keys not in %s: %s", path, len(report.loaded), report.skipped_head,
                    spec.name, report.unexpected)
    return report
