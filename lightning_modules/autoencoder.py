"""AutoencoderModule: the KL autoencoder that gives latent diffusion its latent space (seed 000).

The network is diffusers' `AutoencoderKL` (so it exports as a diffusers `vae/` folder); this
module only adds the loss (L1 reconstruction + a small KL term + an optional LPIPS term),
validation PSNR/SSIM and input|reconstruction grids in TensorBoard.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from lightning_modules.callbacks.sample_grid import log_image_grid
from lightning_modules.checkpoint_io import load_checkpoint, require_module_checkpoint
from lightning_modules.optim import LoadsLegacyCheckpoints, configure_injected, save_plain_hyperparameters


def build_autoencoder(in_channels: int, latent_channels: int, block_out_channels: list[int],
                      layers_per_block: int, norm_num_groups: int, image_size: int,
                      mid_block_attention: bool = True) -> AutoencoderKL:
    """A diffusers AutoencoderKL with len(block_out_channels) - 1 down- and up-sampling stages."""
    n = len(block_out_channels)
    if n < 2:
        raise ValueError("model.block_out_channels needs >= 2 entries (entries - 1 = down-sampling stages)")
    bad = [c for c in block_out_channels if c % norm_num_groups]
    if bad:
        raise ValueError(f"model.block_out_channels {bad} are not divisible by norm_num_groups={norm_num_groups}")
    if image_size % (2 ** (n - 1)):
        raise ValueError(f"image_size={image_size} is not divisible by the autoencoder factor 2**{n - 1}")
    return AutoencoderKL(
        in_channels=in_channels, out_channels=in_channels, latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
        norm_num_groups=norm_num_groups, sample_size=image_size, mid_block_add_attention=mid_block_attention,
    )


class AutoencoderModule(LoadsLegacyCheckpoints, LightningModule):
    """Trains a KL autoencoder on `image` batches in [-1, 1].

    Args:
        in_channels: image channels (linked from the data).
        image_size: image side (linked from the data).
        latent_channels: channels of the latent (4 by default; seed 000's "128-dimensional
            latent" is `latent_channels: 128` in its YAML).
        block_out_channels: channels per encoder stage; N entries give N-1 down-sampling stages
            (default 4 entries = seed 000's three down / three up stages, factor 8).
        layers_per_block / norm_num_groups / mid_block_attention: diffusers AutoencoderKL options.
        kl_weight: weight of the KL term (per-image KL summed over latent elements, averaged over the batch).
        perceptual_weight: > 0 adds LPIPS; needs the backbone weights already in
            $TORCH_HOME/hub/checkpoints (nothing is downloaded).
        lpips_net: "alex" | "vgg" | "squeeze".
        num_logged_images: reconstructions shown in TensorBoard per validation epoch.
        optimizer / lr_scheduler: injected (`lightning_modules.optim`); null = AdamW(lr 1e-3, no
            weight decay) at a constant LR. A scheduler steps every optimizer step.
    """

    default_optimizer = {"lr": 1e-3, "weight_decay": 0.0}

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 64,
        latent_channels: int = 4,
        block_out_channels: tuple[int, ...] = (32, 64, 64, 128),
        layers_per_block: int = 1,
        norm_num_groups: int = 32,
        mid_block_attention: bool = True,
        kl_weight: float = 1e-6,
        perceptual_weight: float = 0.0,
        lpips_net: str = "alex",
        num_logged_images: int = 8,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ):
        super().__init__()
        save_plain_hyperparameters(self, optimizer, lr_scheduler)
        self.vae = build_autoencoder(in_channels, latent_channels, list(block_out_channels), layers_per_block,
                                     norm_num_groups, image_size, mid_block_attention)
        self.lpips = self._build_lpips(perceptual_weight, lpips_net)
        self.val_psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.val_ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
        self.test_psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.test_ssim = StructuralSimilarityIndexMeasure(data_range=1.0)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.hparams.block_out_channels) - 1)

    @staticmethod
    def _build_lpips(weight: float, net: str):
        if weight <= 0:
            return None
        hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
        if not any(hub.glob(f"{net}*.pth")):
            raise FileNotFoundError(f"model.perceptual_weight={weight} needs local LPIPS backbone weights for "
                                    f"'{net}' in {hub} (nothing is downloaded); set perceptual_weight: 0 or copy "
                                    "the torchvision weights there")
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        lpips = LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=False)
        lpips.requires_grad_(False)
        return lpips

    # plain API (used by LatentDiffusionModule and export) ------------------------------------
    def encode(self, images: torch.Tensor, sample: bool = False) -> torch.Tensor:
        posterior = self.vae.encode(images).latent_dist
        return posterior.sample() if sample else posterior.mode()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents).sample

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))

    # training --------------------------------------------------------------------------------
    def _loss(self, images: torch.Tensor, stage: str):
        posterior = self.vae.encode(images).latent_dist
        recon = self.vae.decode(posterior.sample()).sample
        l1 = F.l1_loss(recon, images)
        kl = posterior.kl().mean()
        loss = l1 + self.hparams.kl_weight * kl
        if self.lpips is not None:
            rgb = (lambda x: x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x)
            perceptual = self.lpips(rgb(recon.clamp(-1, 1)), rgb(images))
            loss = loss + self.hparams.perceptual_weight * perceptual
            self.log(f"{stage}/lpips", perceptual, batch_size=len(images))
        self.log_dict({f"{stage}/loss": loss, f"{stage}/l1": l1, f"{stage}/kl": kl},
                      prog_bar=stage == "train", batch_size=len(images), sync_dist=stage != "train")
        return loss, recon

    def training_step(self, batch, batch_idx):
        loss, _ = self._loss(batch["image"], "train")
        return loss

    def validation_step(self, batch, batch_idx, stage: str = "val"):
        images = batch["image"]
        _, _ = self._loss(images, stage)
        recon = self.decode(self.encode(images))  # deterministic (posterior mode) for metrics
        target, pred = (images + 1) / 2, ((recon + 1) / 2).clamp(0, 1)
        psnr, ssim = (self.val_psnr, self.val_ssim) if stage == "val" else (self.test_psnr, self.test_ssim)
        psnr(pred, target)
        ssim(pred, target)
        self.log_dict({f"{stage}/psnr": psnr, f"{stage}/ssim": ssim}, prog_bar=True, batch_size=len(images))
        if batch_idx == 0 and stage == "val":
            n = self.hparams.num_logged_images
            pairs = torch.stack([images[:n], recon[:n].clamp(-1, 1)], dim=1).flatten(0, 1)
            log_image_grid(self.trainer, "reconstructions/input|output", pairs, nrow=2,
                           step=self.global_step)

    def test_step(self, batch, batch_idx):
        self.validation_step(batch, batch_idx, stage="test")

    def configure_optimizers(self):
        return configure_injected(self, self.vae.parameters(), self.optimizer, self.lr_scheduler,
                                  self.default_optimizer)


def load_autoencoder(path: str, option: str = "model.init_args.autoencoder_ckpt") -> tuple[AutoencoderKL, dict]:
    """The AutoencoderKL (weights as saved: EMA ones when EMA was on) and hparams of an AutoencoderModule checkpoint.

    Read with `torch.load(weights_only=True)` (`checkpoint_io`): a file that would run code is refused."""
    ckpt_path = Path(path)
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"autoencoder checkpoint {path!r} does not exist; train one first "
                                "(synthmed fit --config experiments/quickstart/autoencoder.yaml) and give its "
                                "checkpoints/*.ckpt path")
    expected = "an AutoencoderModule checkpoint (synthmed fit --config .../autoencoder.yaml)"
    checkpoint = load_checkpoint(ckpt_path, option, expected=expected)
    hp = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    if "latent_channels" not in hp or "block_out_channels" not in hp:
        require_module_checkpoint(checkpoint, ckpt_path, option, marker="__never__", expected=expected)
    vae = build_autoencoder(hp["in_channels"], hp["latent_channels"], list(hp["block_out_channels"]),
                            hp["layers_per_block"], hp["norm_num_groups"], hp["image_size"],
                            hp.get("mid_block_attention", True))
    weights = {k[len("vae."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("vae.")}
    vae.load_state_dict(weights)
    return vae, dict(hp)
