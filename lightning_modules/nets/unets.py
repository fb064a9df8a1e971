"""Denoising U-Nets built from YAML dicts, and one call signature for all of them.

A YAML `unet:` block is a dict with a `type` and that network's constructor arguments:

    unet:
      type: unet2d             # diffusers UNet2DModel (class conditioning via num_class_embeds)
      block_out_channels: [64, 128, 128]
      down_block_types: [DownBlock2D, AttnDownBlock2D, DownBlock2D]
      up_block_types: [UpBlock2D, AttnUpBlock2D, UpBlock2D]
      layers_per_block: 2

`type: unet2d_condition` is diffusers' UNet2DConditionModel (caption cross-attention),
`type: ablation` is seed 002's `AblationUNet`. Channels, sample size, class count and
cross-attention width come from the module (data links), so a YAML never repeats them; when a
YAML does give one, it must agree.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import UNet2DConditionModel, UNet2DModel
from torch import nn

from lightning_modules.nets.ablation_unet import AblationUNet

UNET_TYPES = {"unet2d": UNet2DModel, "unet2d_condition": UNet2DConditionModel, "ablation": AblationUNet}


def build_denoiser(
    config: dict[str, Any],
    *,
    in_channels: int,
    sample_size: int,
    num_class_embeds: int | None = None,
    cross_attention_dim: int | None = None,
) -> nn.Module:
    """Instantiate the U-Net described by `config` (see module docstring)."""
    config = dict(config or {})
    kind = config.pop("type", "unet2d")
    if kind not in UNET_TYPES:
        raise ValueError(f"model.unet.type={kind!r} is unknown; use one of {sorted(UNET_TYPES)}")
    derived: dict[str, Any] = {"in_channels": in_channels, "out_channels": in_channels, "sample_size": sample_size}
    if num_class_embeds:
        derived["num_class_embeds"] = num_class_embeds
    if kind == "unet2d_condition":
        if not cross_attention_dim:
            raise ValueError("unet type unet2d_condition needs text conditioning (cross_attention_dim)")
        derived["cross_attention_dim"] = cross_attention_dim
    for key, value in derived.items():
        if key in config and config[key] != value:
            raise ValueError(f"model.unet.{key}={config[key]} disagrees with the value derived from the data/"
                             f"conditioning ({value}); remove it from the YAML")
        config[key] = value
    for key in ("block_out_channels", "down_block_types", "up_block_types"):
        if key in config:
            config[key] = tuple(config[key])
    try:
        return UNET_TYPES[kind](**config)
    except TypeError as err:
        raise ValueError(f"model.unet ({kind}): {err}") from err


def unet_type(net: nn.Module) -> str:
    for name, cls in UNET_TYPES.items():
        if type(net) is cls:
            return name
    raise TypeError(f"{type(net).__name__} is not a synthmed denoiser")


def denoise(net: nn.Module, sample: torch.Tensor, timestep: torch.Tensor, *,
            class_labels: torch.Tensor | None = None,
            encoder_hidden_states: torch.Tensor | None = None) -> torch.Tensor:
    """Run any supported U-Net and return its prediction tensor."""
    if isinstance(net, UNet2DConditionModel):
        return net(sample, timestep, encoder_hidden_states=encoder_hidden_states, class_labels=class_labels).sample
    return net(sample, timestep, class_labels=class_labels).sample


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
