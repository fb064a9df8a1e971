"""A lightweight pixel-space denoising U-Net with the two switches of seed 002's ablation.

Seed 002 (Nguyen et al., Table I) compares four networks that differ only in two places:

| row | `skip_connections` | `time_embedding` |
|---|---|---|
| encoder-decoder architecture | false | every_stage |
| U-Net with one-time embedded | true | once (at the input) |
| U-Net with four-time embedded | true | first_half (each of the 4 down stages) |
| proposed U-Net | true | every_stage (each down and up stage) |

Where "every_stage" injects: the paper's "the best way is to embed it into all the feature maps
that result from down convolution or up convolution, as shown in Fig.2" names the down and up
stages only, so the default (`time_in_mid_block=False`) injects once per down and once per up
stage (8 injections with 4 levels) and the bottleneck block between them gets none.
`time_in_mid_block=True` is synthmed's earlier variant (also the middle block: 9 injections with
4 levels), kept as a named option; the paper does not describe a middle block at all.

The paper does not say where the "once" embedding enters nor what the encoder-decoder row
uses for time; we inject "once" right after the input convolution and give the
encoder-decoder row the proposed (every-stage) embedding, so that row isolates the skips.
Injection means adding a per-stage linear projection of the time (+ class) embedding to the
feature map that a down or up convolution produced (Fig. 2 of seed 002).
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d import UNet2DOutput
from torch import nn

TIME_EMBEDDING_MODES = ("once", "first_half", "every_stage")


def _groups(channels: int, wanted: int) -> int:
    groups = min(wanted, channels)
    while channels % groups:
        groups -= 1
    return groups


class ConvBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm + SiLU and a residual path; optional embedding injection."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int | None, norm_groups: int):
        super().__init__()
        self.conv1 = nn.Sequential(nn.GroupNorm(_groups(in_ch, norm_groups), in_ch), nn.SiLU(),
                                   nn.Conv2d(in_ch, out_ch, 3, padding=1))
        self.emb = nn.Linear(emb_dim, out_ch) if emb_dim else None
        self.conv2 = nn.Sequential(nn.GroupNorm(_groups(out_ch, norm_groups), out_ch), nn.SiLU(),
                                   nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(x)
        if self.emb is not None:
            h = h + self.emb(emb)[:, :, None, None]
        return self.conv2(h) + self.shortcut(x)


class AblationUNet(ModelMixin, ConfigMixin):
    """Pixel U-Net of seed 002 with switchable skip connections and time-embedding placement.

    Args:
        in_channels / out_channels: image channels.
        sample_size: nominal input side (recorded in the config; any size works: inputs are
            reflect-padded to a multiple of 2 ** (len(block_out_channels) - 1) and the output
            cropped back, so seed 002's 236 px needs no resizing).
        block_out_channels: channels per resolution level; 4 levels give the "four-time" row.
        skip_connections: concatenate encoder features into the decoder (U-Net) or not (encoder-decoder).
        time_embedding: "once" | "first_half" | "every_stage" (see the module docstring).
        num_class_embeds: > 0 adds a class embedding to the time embedding (class conditioning).
        time_in_mid_block: with "every_stage", also inject into the bottleneck block between the
            last down and first up stage (synthmed's earlier variant; False is the paper's "feature
            maps that result from down convolution or up convolution" only).
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        sample_size: int = 32,
        block_out_channels: tuple[int, ...] = (32, 64, 128, 128),
        skip_connections: bool = True,
        time_embedding: str = "every_stage",
        num_class_embeds: int | None = None,
        norm_num_groups: int = 8,
        time_in_mid_block: bool = False,
    ):
        super().__init__()
        if time_embedding not in TIME_EMBEDDING_MODES:
            raise ValueError(f"time_embedding={time_embedding!r}; use one of {TIME_EMBEDDING_MODES}")
        levels = len(block_out_channels)
        if time_in_mid_block and time_embedding != "every_stage":
            raise ValueError(f"time_in_mid_block=True needs time_embedding='every_stage', not {time_embedding!r}")
        if levels < 2:
            raise ValueError("block_out_channels needs at least 2 levels")
        ch0 = block_out_channels[0]
        emb_dim = ch0 * 4
        self.time_proj = Timesteps(ch0, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(ch0, emb_dim)
        self.class_embed = nn.Embedding(num_class_embeds, emb_dim) if num_class_embeds else None
        inject_down = time_embedding in ("first_half", "every_stage")
        inject_up = time_embedding == "every_stage"

        self.conv_in = nn.Conv2d(in_channels, ch0, 3, padding=1)
        self.input_emb = nn.Linear(emb_dim, ch0) if time_embedding == "once" else None
        self.down_blocks = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        prev = ch0
        for i, ch in enumerate(block_out_channels):
            self.down_blocks.append(ConvBlock(prev, ch, emb_dim if inject_down else None, norm_num_groups))
            last = i == levels - 1
            self.downsamplers.append(nn.Identity() if last else nn.Conv2d(ch, ch, 3, stride=2, padding=1))
            prev = ch
        self.mid = ConvBlock(prev, prev, emb_dim if time_in_mid_block else None, norm_num_groups)
        self.up_blocks = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for i, ch in reversed(list(enumerate(block_out_channels))):
            first = i == levels - 1
            self.upsamplers.append(nn.Identity() if first else nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(prev, prev, 3, padding=1)))
            in_ch = prev + (ch if skip_connections else 0)
            self.up_blocks.append(ConvBlock(in_ch, ch, emb_dim if inject_up else None, norm_num_groups))
            prev = ch
        self.conv_out = nn.Sequential(nn.GroupNorm(_groups(prev, norm_num_groups), prev), nn.SiLU(),
                                      nn.Conv2d(prev, out_channels, 3, padding=1))

    def _embedding(self, sample: torch.Tensor, timestep, class_labels) -> torch.Tensor:
        t = torch.as_tensor(timestep, device=sample.device)
        if t.ndim == 0:
            t = t[None]
        t = t.expand(sample.shape[0])
        emb = self.time_embed(self.time_proj(t).to(sample.dtype))
        if self.class_embed is not None:
            if class_labels is None:
                raise ValueError("class_labels are required: this AblationUNet was built with num_class_embeds")
            emb = emb + self.class_embed(class_labels).to(emb.dtype)
        return emb

    def forward(self, sample: torch.Tensor, timestep, class_labels: torch.Tensor | None = None,
                return_dict: bool = True) -> UNet2DOutput | tuple[torch.Tensor]:
        emb = self._embedding(sample, timestep, class_labels)
        height, width = sample.shape[-2:]
        multiple = 2 ** (len(self.config.block_out_channels) - 1)
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        if pad_h or pad_w:
            sample = torch.nn.functional.pad(sample, (0, pad_w, 0, pad_h), mode="reflect")
        h = self.conv_in(sample)
        if self.input_emb is not None:  # "once": the only place time enters
            h = h + self.input_emb(emb)[:, :, None, None]
        skips = []
        for block, down in zip(self.down_blocks, self.downsamplers):
            h = block(h, emb)
            skips.append(h)
            h = down(h)
        h = self.mid(h, emb)
        for block, up in zip(self.up_blocks, self.upsamplers):
            h = up(h)
            skip = skips.pop()
            if self.config.skip_connections:
                h = torch.cat([h, skip], dim=1)
            h = block(h, emb)
        out = self.conv_out(h)[..., :height, :width]
        return UNet2DOutput(sample=out) if return_dict else (out,)
