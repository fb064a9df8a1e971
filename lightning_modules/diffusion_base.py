"""DiffusionModule: what latent and pixel diffusion share (training loss, conditioning, sampling).

The module is thin: the denoiser is a plain U-Net (`nets.unets`), the forward process a
`nets.schedules.NoiseSchedule` (installed by `callbacks.noise_schedule.NoiseScheduleCallback`,
saved in every checkpoint and restored on load), and sampling the loop in `nets.sampling`.
Subclasses only say how images map to the space the U-Net works in (`encode_images`,
`decode_samples`, `sample_shape`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule

from lightning_modules.nets.sampling import generators_for, reverse_diffusion
from lightning_modules.nets.schedules import NoiseSchedule, build_scheduler, min_snr_weight, snr
from lightning_modules.nets.text import build_text_encoder
from lightning_modules.nets.unets import build_denoiser, denoise, unet_type

CONDITIONING = ("none", "class", "text")
LOSSES = ("l1", "l2")
CHECKPOINT_KEY = "synthmed_diffusion"


class DiffusionModule(LightningModule):
    """DDPM training and DDPM/DDIM sampling of a (conditional) denoising U-Net.

    Args:
        unet: the U-Net as a dict (`type:` unet2d | unet2d_condition | ablation, plus its
            arguments; see `lightning_modules.nets.unets`).
        conditioning: "none", "class" (label embedding, classifier-free guidance) or "text"
            (captions through `text_encoder`, cross-attention; needs type unet2d_condition).
        num_classes / class_names / in_channels / image_size: linked from the data.
        prediction_type: "epsilon", "v_prediction" or "sample".
        loss: "l1" (seed 000) or "l2" (seeds 002-004) on the predicted quantity.
        snr_gamma: min-SNR-gamma loss weighting (e.g. 5.0); null = plain average.
        uncond_prob: probability a training label/caption is replaced by the null condition (CFG).
        guidance_scale: classifier-free guidance at sampling (1.0 = conditional only, no guidance).
        sampler: "ddim" (`num_inference_steps` steps, `eta`) or "ddpm" (ancestral, all T steps).
        timestep_spacing: diffusers timestep spacing for DDIM ("trailing" starts at pure noise).
        clip_sample: clip the predicted x0 to [-1, 1] while sampling (null = subclass default).
        text_encoder: dict for `nets.text.build_text_encoder` (kind: small | clip, ...).
        lr / weight_decay / warmup_steps / lr_schedule: AdamW, linear warm-up, then "constant"
            or "cosine" decay to 0 over the run.
        mask_weight: when batches carry a lesion `mask`, the loss at (a one-cell dilation of) the
            lesion is weighted 1 + mask_weight: small lesions otherwise get a tiny share of the
            loss next to the irreducible speckle of the whole image.
    """

    default_clip_sample = True

    def __init__(
        self,
        unet: dict[str, Any] | None = None,
        conditioning: str = "class",
        num_classes: int = 0,
        class_names: list[str] | None = None,
        in_channels: int = 1,
        image_size: int = 32,
        prediction_type: str = "epsilon",
        loss: str = "l2",
        snr_gamma: float | None = None,
        uncond_prob: float = 0.1,
        guidance_scale: float = 1.0,
        sampler: str = "ddim",
        num_inference_steps: int = 20,
        eta: float = 0.0,
        timestep_spacing: str = "trailing",
        clip_sample: bool | None = None,
        text_encoder: dict[str, Any] | None = None,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        lr_schedule: str = "constant",
        mask_weight: float = 0.0,
    ):
        super().__init__()
        base_args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.save_hyperparameters()  # collects the subclass's arguments too
        # what this base received wins: a subclass may resolve a value (e.g. a Stable Diffusion
        # folder's prediction_type) that the CLI's saved hyper-parameters still hold as null
        self.hparams.update(base_args)
        if conditioning not in CONDITIONING:
            raise ValueError(f"model.conditioning={conditioning!r}; use one of {CONDITIONING}")
        if loss not in LOSSES:
            raise ValueError(f"model.loss={loss!r}; use one of {LOSSES}")
        if conditioning == "class" and num_classes < 1:
            raise ValueError("model.conditioning='class' needs num_classes >= 1 (linked from the data); "
                             "use conditioning: none for unlabeled data")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but num_classes={num_classes}")
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"model.lr_schedule={lr_schedule!r}; use constant or cosine")
        self.conditioning = conditioning
        self.clip_sample = self.default_clip_sample if clip_sample is None else clip_sample
        self.text_encoder = None
        if conditioning == "text":
            self.text_encoder = build_text_encoder(**(text_encoder or {"kind": "small"}))
        self.noise_schedule = NoiseSchedule()
        self.set_noise_schedule(self.noise_schedule)

    # --- to override ------------------------------------------------------------------------
    def encode_images(self, batch: dict[str, Any]) -> torch.Tensor:
        """The clean sample x0 the U-Net learns to denoise, from a contract batch."""
        raise NotImplementedError

    def decode_samples(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from sampled x0."""
        raise NotImplementedError

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        raise NotImplementedError

    def build_unet(self, unet: dict[str, Any] | None, in_channels: int, sample_size: int) -> None:
        """Create `self.unet` with the conditioning inputs this module needs."""
        hp = self.hparams
        self.unet = build_denoiser(
            unet or {}, in_channels=in_channels, sample_size=sample_size,
            num_class_embeds=hp.num_classes + 1 if self.conditioning == "class" else None,  # + the null class
            cross_attention_dim=self.text_encoder.output_dim if self.text_encoder is not None else None)

    # --- noise schedule ---------------------------------------------------------------------
    def set_noise_schedule(self, schedule: NoiseSchedule) -> None:
        """Install `schedule` for training and sampling (called by NoiseScheduleCallback and on load)."""
        self.noise_schedule = schedule
        self.train_scheduler = self.make_scheduler("ddpm")
        self._alphas_cumprod = self.train_scheduler.alphas_cumprod.clone()

    def make_scheduler(self, sampler: str):
        return build_scheduler(sampler, self.noise_schedule, prediction_type=self.hparams.prediction_type,
                               clip_sample=self.clip_sample, timestep_spacing=self.hparams.timestep_spacing)

    # --- conditioning -----------------------------------------------------------------------
    @property
    def null_class(self) -> int:
        return self.hparams.num_classes

    def condition_inputs(self, labels: torch.Tensor | None, captions: Sequence[str] | None,
                         drop: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """U-Net keyword inputs for a batch; `drop` marks rows that get the null condition."""
        if self.conditioning == "class":
            if labels is None:
                raise ValueError("class-conditional model: batches need `label`")
            labels = labels.to(self.device).long()
            null = (labels < 0) | (labels >= self.hparams.num_classes)
            if drop is not None:
                null = null | drop.to(self.device)
            return {"class_labels": torch.where(null, torch.full_like(labels, self.null_class), labels)}
        if self.conditioning == "text":
            if captions is None:
                raise ValueError("text-conditional model: batches need `caption`")
            captions = ["" if drop is not None and bool(drop[i]) else c for i, c in enumerate(captions)]
            return {"encoder_hidden_states": self.text_encoder(list(captions))}
        return {}

    def null_inputs(self, batch_size: int) -> dict[str, torch.Tensor]:
        if self.conditioning == "class":
            return {"class_labels": torch.full((batch_size,), self.null_class, device=self.device, dtype=torch.long)}
        if self.conditioning == "text":
            return {"encoder_hidden_states": self.text_encoder([""] * batch_size)}
        return {}

    # --- training ---------------------------------------------------------------------------
    def loss_weight_map(self, batch: dict[str, Any], x0: torch.Tensor) -> torch.Tensor | None:
        """1 + mask_weight on the lesion (resized to x0's grid by max-pooling, dilated by one cell)."""
        if self.hparams.mask_weight <= 0 or batch.get("mask") is None:
            return None
        mask = F.adaptive_max_pool2d(batch["mask"].float().to(x0.device), x0.shape[-2:])
        mask = F.max_pool2d(mask, kernel_size=3, stride=1, padding=1)
        return 1.0 + self.hparams.mask_weight * mask

    def diffusion_loss(self, x0: torch.Tensor, cond: dict[str, torch.Tensor],
                       generator: torch.Generator | None = None,
                       weight_map: torch.Tensor | None = None) -> torch.Tensor:
        """Noise x0 at random t, predict, and return the (min-SNR weighted) L1/L2 loss."""
        b = x0.shape[0]
        T = self.noise_schedule.num_train_timesteps
        noise = torch.randn(x0.shape, generator=generator, device="cpu" if generator else x0.device).to(x0)
        t = torch.randint(0, T, (b,), generator=generator, device="cpu" if generator else x0.device).to(x0.device)
        x_t = self.train_scheduler.add_noise(x0, noise, t)
        pred_type = self.hparams.prediction_type
        if pred_type == "epsilon":
            target = noise
        elif pred_type == "v_prediction":
            target = self.train_scheduler.get_velocity(x0, noise, t)
        else:
            target = x0
        pred = denoise(self.unet, x_t, t, **cond)
        err = (pred.float() - target.float())
        err = err.abs() if self.hparams.loss == "l1" else err.pow(2)
        if weight_map is not None:
            err = err * weight_map
        per_sample = err.flatten(1).mean(1)
        weight = min_snr_weight(snr(self._alphas_cumprod, t), self.hparams.snr_gamma, pred_type)
        return (weight * per_sample).mean()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x0 = self.encode_images(batch)
        drop = torch.rand(x0.shape[0], device=x0.device) < self.hparams.uncond_prob
        cond = self.condition_inputs(batch.get("label"), batch.get("caption"), drop=drop)
        loss = self.diffusion_loss(x0, cond, weight_map=self.loss_weight_map(batch, x0))
        self.log("train/loss", loss, prog_bar=True, batch_size=x0.shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int, stage: str = "val") -> None:
        x0 = self.encode_images(batch)
        cond = self.condition_inputs(batch.get("label"), batch.get("caption"))
        # same noise and t every epoch, so val/loss curves are comparable
        loss = self.diffusion_loss(x0, cond, generator=torch.Generator().manual_seed(1000 + batch_idx))
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=x0.shape[0], sync_dist=True)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.validation_step(batch, batch_idx, stage="test")

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        warmup, kind = int(self.hparams.warmup_steps), self.hparams.lr_schedule
        if warmup <= 0 and kind == "constant":
            return optimizer
        total: list[int] = []  # the run's length, read at the first decaying step (see below)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if kind == "cosine" and step > warmup:  # at step == warmup the cosine factor is 1
                if not total:
                    # not read in configure_optimizers: estimated_stepping_batches would build the
                    # train loader before Lightning restores a checkpoint, so a resumed fit would
                    # lose the loader's mid-epoch position (Lightning issue #20550)
                    total.append(max(1, int(self.trainer.estimated_stepping_batches)))
                progress = min(1.0, (step - warmup) / max(1, total[0] - warmup))
                return 0.5 * (1.0 + torch.cos(torch.tensor(progress * torch.pi)).item())
            return 1.0

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --- sampling ---------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        num_images: int | None = None,
        labels: torch.Tensor | Sequence[int] | None = None,
        captions: Sequence[str] | None = None,
        seeds: int | Sequence[int] | None = None,
        sampler: str | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        eta: float | None = None,
        noise: torch.Tensor | None = None,
        decode: bool = True,
    ) -> torch.Tensor:
        """Generate images in [-1, 1] (or model-space samples with decode=False).

        One int seed seeds the whole batch (as diffusers pipelines do); a list gives each image
        its own generator, so an image depends only on its seed and label.
        """
        hp = self.hparams
        sampler = sampler or hp.sampler
        guidance = hp.guidance_scale if guidance_scale is None else guidance_scale
        eta = hp.eta if eta is None else eta
        if labels is not None and not torch.is_tensor(labels):
            labels = torch.tensor(list(labels), dtype=torch.long)
        n = len(labels) if labels is not None else len(captions) if captions is not None else num_images
        if not n:
            raise ValueError("sample() needs num_images, labels or captions")
        if self.conditioning == "class" and labels is None:
            labels = torch.full((n,), -1, dtype=torch.long)  # unconditional draw through the null class
        cond = self.condition_inputs(labels, captions)
        use_cfg = self.conditioning != "none" and guidance != 1.0
        both = {k: torch.cat([v, self.null_inputs(n)[k]]) for k, v in cond.items()} if use_cfg else cond

        def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if not use_cfg:
                return denoise(self.unet, x, t, **cond)
            out_c, out_u = denoise(self.unet, torch.cat([x, x]), t, **both).chunk(2)
            return out_u + guidance * (out_c - out_u)

        scheduler = self.make_scheduler(sampler)
        steps = self.noise_schedule.num_train_timesteps if sampler == "ddpm" else (
            num_inference_steps or hp.num_inference_steps)
        was_training = self.training
        self.eval()
        try:
            x = reverse_diffusion(model_fn, scheduler, (n, *self.sample_shape), num_inference_steps=steps,
                                  generator=generators_for(seeds), eta=eta, device=self.device,
                                  dtype=next(self.unet.parameters()).dtype, noise=noise)
            return self.decode_samples(x).clamp(-1, 1) if decode else x
        finally:
            self.train(was_training)

    def predict_step(self, batch: dict[str, Any], batch_idx: int = 0) -> dict[str, Any]:
        """Generate one image per request row of a `GenerationDataModule` batch."""
        seeds = [int(s) for s in batch["seed"]]
        hp = self.hparams
        # per-set overrides from the GenerationDataModule (same value in every row)
        first = lambda key, default: type(default)(batch[key][0]) if key in batch else default  # noqa: E731
        sampler = batch["sampler"][0] if "sampler" in batch else hp.sampler
        steps = first("num_inference_steps", int(hp.num_inference_steps))
        guidance = first("guidance_scale", float(hp.guidance_scale))
        eta = first("eta", float(hp.eta))
        images = self.sample(labels=batch.get("label"), captions=batch.get("caption"), num_images=len(seeds),
                             seeds=seeds, sampler=sampler, num_inference_steps=steps, guidance_scale=guidance,
                             eta=eta)
        if sampler == "ddpm":
            steps = self.noise_schedule.num_train_timesteps
        return {"images": ((images + 1) / 2).float().cpu(), "label": batch["label"].cpu(),
                "index": batch["index"].cpu(), "seed": batch["seed"].cpu(), "sampler": sampler,
                "steps": steps, "guidance": guidance}

    # --- checkpoint -------------------------------------------------------------------------
    def export_state(self) -> dict[str, Any]:
        """What export and reload need besides the weights (stored in every checkpoint)."""
        return {
            "module": type(self).__name__,
            "noise_schedule": self.noise_schedule.to_dict(),
            "unet_type": unet_type(self.unet),
            "unet_config": dict(self.unet.config),
            "prediction_type": self.hparams.prediction_type,
            "clip_sample": self.clip_sample,
            "timestep_spacing": self.hparams.timestep_spacing,
            "conditioning": self.conditioning,
            "class_names": list(self.hparams.class_names or []),
            "num_classes": self.hparams.num_classes,
            "sample_shape": list(self.sample_shape),
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = self.export_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(CHECKPOINT_KEY)
        if state is None:
            raise ValueError("this checkpoint was not written by a synthmed diffusion module "
                             f"(no '{CHECKPOINT_KEY}' entry)")
        self.set_noise_schedule(NoiseSchedule.from_dict(state["noise_schedule"]))
        saved, current = state.get("class_names") or [], list(self.hparams.class_names or [])
        if saved and current and saved != current:
            raise ValueError(f"the checkpoint was trained on classes {saved} but the data gives {current}; "
                             "give the generation data the training class_names in the same order")
