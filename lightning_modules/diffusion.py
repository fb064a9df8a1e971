"""Pixel-space and latent-space diffusion modules (the shared logic is in `diffusion_base`)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import AutoencoderKL
from torch.utils.data import DataLoader

from lightning_modules.autoencoder import load_autoencoder
from lightning_modules.diffusion_base import DiffusionModule
from lightning_modules.latent_cache import LatentCache

log = logging.getLogger(__name__)
CACHE_MODES = ("none", "memory", "disk")


class PixelDiffusionModule(DiffusionModule):
    """Diffusion directly on images in [-1, 1] (seeds 002 and 003). Arguments: see DiffusionModule."""

    default_clip_sample = True

    def __init__(self, num_classes: int = 0, class_names: list[str] | None = None, in_channels: int = 1,
                 image_size: int = 32, **kwargs: Any):
        # the data-linked arguments are named here so the CLI sees them in this signature
        super().__init__(num_classes=num_classes, class_names=class_names, in_channels=in_channels,
                         image_size=image_size, **kwargs)
        self.build_unet(self.hparams.unet, self.hparams.in_channels, self.hparams.image_size)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return (self.hparams.in_channels, self.hparams.image_size, self.hparams.image_size)

    def encode_images(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["image"]

    def decode_samples(self, x: torch.Tensor) -> torch.Tensor:
        return x


class LatentDiffusionModule(DiffusionModule):
    """Diffusion in the latent space of a frozen AutoencoderModule (seed 000).

    Args:
        autoencoder_ckpt: checkpoint of a trained AutoencoderModule, read once to start training:
            its weights are copied into this module and its config into `autoencoder`, so this
            module's checkpoints are self-contained (load, sample, export and resume without it).
        autoencoder: the frozen AutoencoderKL's config, as saved in this module's checkpoints
            (set from `autoencoder_ckpt`; give it instead only when the weights come from a
            checkpoint of this module).
        latent_scale: multiply latents by this; null = 1 / std of the training latents,
            measured at the start of fit over `scale_batches` batches and stored in the checkpoint.
        cache_latents: "none", "memory" (the training set is encoded once, before the first step;
            under DDP each rank encodes its share and the ranks exchange them) or "disk" (also
            saved to `cache_dir` for later runs, one file written by rank zero). A cached latent
            is reused only while the image at that index is unchanged (a fingerprint is checked),
            so random augmentation simply re-encodes. Logs `latent_cache/encoded` (images the VAE
            encoded, all ranks) and `latent_cache/size`.
        sample_posterior: train on posterior samples (True) or on the posterior mean.
        Other arguments: see DiffusionModule.
    """

    default_clip_sample = False  # latents are not confined to [-1, 1]

    def __init__(self, autoencoder_ckpt: str | None = None, autoencoder: dict[str, Any] | None = None,
                 latent_scale: float | None = None, scale_batches: int = 4,
                 cache_latents: Literal["none", "memory", "disk"] = "none", cache_dir: str | None = None,
                 sample_posterior: bool = True, num_classes: int = 0, class_names: list[str] | None = None,
                 in_channels: int = 1, image_size: int = 32, **kwargs: Any):
        super().__init__(num_classes=num_classes, class_names=class_names, in_channels=in_channels,
                         image_size=image_size, **kwargs)
        if cache_latents not in CACHE_MODES:
            raise ValueError(f"model.cache_latents={cache_latents!r}; use one of {CACHE_MODES}")
        if cache_latents == "disk" and not cache_dir:
            raise ValueError("model.cache_latents='disk' needs model.cache_dir")
        self.vae = self._frozen_autoencoder(autoencoder_ckpt, autoencoder)
        ae = self.vae.config
        if ae["in_channels"] != self.hparams.in_channels:
            raise ValueError(f"the autoencoder {autoencoder_ckpt or '(from the checkpoint)'} takes "
                             f"{ae['in_channels']} channels but the data has {self.hparams.in_channels}")
        factor = 2 ** (len(ae["block_out_channels"]) - 1)
        if self.hparams.image_size % factor:
            raise ValueError(f"image_size={self.hparams.image_size} is not divisible by the autoencoder factor {factor}")
        self._latent_shape = (ae["latent_channels"], self.hparams.image_size // factor,
                              self.hparams.image_size // factor)
        self.latent_scale = latent_scale
        self.build_unet(self.hparams.unet, ae["latent_channels"], self._latent_shape[1])
        self.latent_cache = LatentCache()
        self._ae_digest: str | None = None

    def _frozen_autoencoder(self, autoencoder_ckpt: str | None, autoencoder: dict[str, Any] | None) -> AutoencoderKL:
        """The VAE from the saved config (weights follow with the checkpoint) or from the AE checkpoint."""
        if autoencoder is not None:
            vae = AutoencoderKL.from_config({k: v for k, v in autoencoder.items() if not k.startswith("_")})
        elif autoencoder_ckpt:
            vae, _ = load_autoencoder(autoencoder_ckpt)
        else:
            raise ValueError("LatentDiffusionModule needs model.init_args.autoencoder_ckpt (a trained "
                             "AutoencoderModule checkpoint) to start training")
        # saved with the hyper-parameters, so a checkpoint of this module rebuilds the VAE without the file
        self.hparams["autoencoder"] = {k: list(v) if isinstance(v, tuple) else v for k, v in vae.config.items()
                                       if not k.startswith("_")}
        return vae.requires_grad_(False).eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.vae.eval()  # frozen
        return self

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return self._latent_shape

    # --- latents ----------------------------------------------------------------------------
    @torch.no_grad()
    def _posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dist = self.vae.encode(images).latent_dist
        # float32 even under bf16/16-mixed autocast: the noising arithmetic needs the precision
        return dist.mean.float(), dist.std.float()

    def _cached_posterior(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        images = batch["image"]
        if self.hparams.cache_latents == "none" or not self.training or "index" not in batch:
            return self._posterior(images)
        keys = [int(i) for i in batch["index"]]
        prints = self.latent_cache.fingerprints(images)
        hit = self.latent_cache.lookup(keys, prints)
        if hit is not None:
            return hit[0].to(images.device), hit[1].to(images.device)
        mean, std = self._posterior(images)  # new or changed (augmented) images
        self.latent_cache.store(keys, mean, std, prints)
        return mean, std

    def encode_images(self, batch: dict[str, Any]) -> torch.Tensor:
        mean, std = self._cached_posterior(batch)
        z = mean + std * torch.randn_like(mean) if self.hparams.sample_posterior and self.training else mean
        if self.latent_scale is None:
            self.latent_scale = self._measure_scale([z])
        return z * self.latent_scale

    def decode_samples(self, x: torch.Tensor) -> torch.Tensor:
        if self.latent_scale is None:
            raise RuntimeError("latent_scale is unknown: train first or load a checkpoint")
        # times the reciprocal, as diffusers' DiTPipeline decodes (`1 / scaling_factor * latents`; x / s is
        # 1 ulp off that in many elements), so an exported DiT folder's images equal ours bit for bit
        return self.vae.decode(1.0 / self.latent_scale * x).sample

    def _measure_scale(self, latents: list[torch.Tensor]) -> float:
        std = torch.cat([z.flatten() for z in latents]).float().std()
        if self._trainer is not None and self.trainer.world_size > 1:
            std = self.all_gather(std).float().mean()
        scale = float(1.0 / std.clamp(min=1e-6))
        log.info("latent scale factor 1/std = %.4f", scale)
        return scale

    def on_fit_start(self) -> None:
        if self.hparams.cache_latents == "disk" and self.latent_cache.load(self._cache_file()):
            log.info("loaded %d cached latents from %s", len(self.latent_cache), self._cache_file())
        if self.latent_scale is not None:
            return
        datamodule = self.trainer.datamodule
        if datamodule is None:
            return  # measured on the first batch instead
        latents = []
        for i, batch in enumerate(datamodule.train_dataloader()):
            if i >= self.hparams.scale_batches:
                break
            mean, std = self._posterior(batch["image"].to(self.device))
            latents.append(mean + std * torch.randn_like(mean) if self.hparams.sample_posterior else mean)
        if latents:
            self.latent_scale = self._measure_scale(latents)

    def on_train_start(self) -> None:
        if self.hparams.cache_latents != "none":
            self._fill_latent_cache()

    def _fill_latent_cache(self) -> None:
        """Encode the training set once before the first step (each DDP rank its share; see `LatentCache`)."""
        loader = self.trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if not isinstance(loader, DataLoader) or not hasattr(dataset, "__len__") or len(dataset) == 0 or \
                "index" not in dataset[0]:
            return  # e.g. several train loaders: the cache fills batch by batch instead
        trainer = self.trainer
        encoded = self.latent_cache.fill(dataset, self._posterior, self._latent_shape, loader.batch_size or 32,
                                         self.device, trainer.global_rank, trainer.world_size, self.all_gather)
        # what each rank did, summed over ranks: under DDP too this equals the images that were not cached
        self.log("latent_cache/encoded", float(encoded), reduce_fx="sum", sync_dist=True)
        self.log("latent_cache/size", float(len(self.latent_cache)), reduce_fx="min", sync_dist=True)
        if self.hparams.cache_latents == "disk" and self.latent_cache.dirty:
            self._save_disk_cache()

    def on_train_epoch_end(self) -> None:
        if self.hparams.cache_latents == "disk" and self.latent_cache.dirty:  # augmented images were added
            self._save_disk_cache()

    def _cache_file(self) -> Path:
        if self._ae_digest is None:  # of the VAE weights in use (known once a checkpoint is restored)
            h = hashlib.sha256()
            for key, value in sorted(self.vae.state_dict().items()):
                h.update(key.encode())
                h.update(value.detach().float().cpu().numpy().tobytes())
            self._ae_digest = h.hexdigest()[:16]
        return Path(self.hparams.cache_dir) / f"latents-ae{self._ae_digest}.pt"

    def _save_disk_cache(self) -> None:
        # every rank holds the same entries after the exchange: rank zero writes the one file
        # (an entry only one rank re-encoded later, e.g. an augmented image, is simply encoded again)
        if self._trainer is None or self.trainer.is_global_zero:
            self.latent_cache.save(self._cache_file())
        self.latent_cache.dirty = False

    # --- checkpoint -------------------------------------------------------------------------
    def export_state(self) -> dict[str, Any]:
        state = super().export_state()
        state.update(latent_scale=self.latent_scale, vae_config=dict(self.hparams.autoencoder))
        return state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.latent_scale = checkpoint["synthmed_diffusion"]["latent_scale"]
