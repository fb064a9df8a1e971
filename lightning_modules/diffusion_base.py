"""DiffusionModule: what latent and pixel diffusion share (training loss, conditioning, sampling).

The module is thin: the denoiser is a plain U-Net (`nets.unets`), the forward process the
`noise_schedule` argument (a `nets.schedules.NoiseSchedule`, saved with the hyper-parameters and
in every checkpoint; `callbacks.noise_schedule` only logs it), what the U-Net is conditioned on a
`conditioning.Conditioning`, the optimizer and LR schedule injected (`optim`), and sampling the loop
in `nets.sampling`. Subclasses only say how images map to the space the U-Net works in
(`encode_images`, `decode_samples`, `sample_shape`).
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn

from lightning_modules.conditioning import ConditioningName, build_conditioning
from lightning_modules.nets.sampling import generators_for, reverse_diffusion
from lightning_modules.nets.schedules import NoiseSchedule, build_scheduler, min_snr_weight, snr
from lightning_modules.nets.text import build_text_encoder
from lightning_modules.nets.unets import build_denoiser, denoise, unet_type
from lightning_modules.optim import LoadsLegacyCheckpoints, configure_injected, plain_hyperparameters

CHECKPOINT_KEY = "synthmed_diffusion"
PredictionType = Literal["epsilon", "v_prediction", "sample"]


class DiffusionModule(LoadsLegacyCheckpoints, LightningModule):
    """DDPM training and DDPM/DDIM sampling of a (conditional) denoising U-Net.

    Args:
        unet: the U-Net as a dict (`type:` unet2d | unet2d_condition | ablation, plus its
            arguments; see `lightning_modules.nets.unets`).
        conditioning: "none", "class" (label embedding, classifier-free guidance), "text"
            (captions through `text_encoder`, cross-attention; needs type unet2d_condition) or
            "class+text" (both).
        text_encoder: dict for `nets.text.build_text_encoder` (kind: small | clip, ...).
        noise_schedule: the forward process (name linear | scaled_linear | cosine | sigmoid,
            num_train_timesteps, beta_start, beta_end); default linear 1e-4..0.02, T=1000.
        num_classes / class_names / in_channels / image_size: linked from the data.
        prediction_type: "epsilon", "v_prediction" or "sample".
        loss: "l1" (seed 000) or "l2" (seeds 002-004) on the predicted quantity.
        snr_gamma: min-SNR-gamma loss weighting (e.g. 5.0); null = plain average.
        uncond_prob: probability a training label/caption is replaced by the null condition (CFG).
        mask_weight: when batches carry a lesion `mask`, the loss at (a one-cell dilation of) the
            lesion is weighted 1 + mask_weight: small lesions otherwise get a tiny share of the
            loss next to the irreducible speckle of the whole image.
        sampler: "ddim" (`num_inference_steps` steps, `eta`), "dpmsolver++" (DPM-Solver++(2M),
            `num_inference_steps` steps, deterministic) or "ddpm" (ancestral, all T steps).
        guidance_scale: classifier-free guidance at sampling (1.0 = conditional only, no guidance).
        timestep_spacing: diffusers timestep spacing for DDIM ("trailing" starts at pure noise).
        clip_sample: clip the predicted x0 to [-1, 1] while sampling (null = subclass default).
        optimizer: injected optimizer (`class_path: torch.optim.AdamW`, `init_args: {lr: ...}`);
            null = AdamW(lr 2e-4, no weight decay).
        lr_scheduler: injected LR scheduler, stepped every optimizer step (e.g.
            `lightning_modules.optim.WarmupCosineLR`); null = constant LR.
    """

    default_clip_sample = True
    default_optimizer = {"lr": 2e-4, "weight_decay": 0.0}

    def __init__(
        self,
        unet: dict[str, Any] | None = None,
        conditioning: ConditioningName = "class",
        text_encoder: dict[str, Any] | None = None,
        noise_schedule: NoiseSchedule | None = None,
        num_classes: int = 0,
        class_names: list[str] | None = None,
        in_channels: int = 1,
        image_size: int = 32,
        prediction_type: PredictionType = "epsilon",
        loss: Literal["l1", "l2"] = "l2",
        snr_gamma: float | None = None,
        uncond_prob: float = 0.1,
        mask_weight: float = 0.0,
        sampler: Literal["ddim", "ddpm", "dpmsolver++"] = "ddim",
        num_inference_steps: int = 20,
        eta: float = 0.0,
        guidance_scale: float = 1.0,
        timestep_spacing: Literal["leading", "trailing", "linspace"] = "trailing",
        clip_sample: bool | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()  # collects the subclass's arguments too
        plain_hyperparameters(self)
        # a subclass may resolve an argument the CLI's saved config holds as null (Stable Diffusion:
        # prediction_type from its folder); the value in use is what is saved
        self.hparams["prediction_type"] = prediction_type
        if loss not in ("l1", "l2"):  # Literal is checked by the CLI; this is for Python callers
            raise ValueError(f"model.loss={loss!r}; use one of ('l1', 'l2')")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but num_classes={num_classes}")
        self.conditioner = build_conditioning(conditioning, num_classes)
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.clip_sample = self.default_clip_sample if clip_sample is None else clip_sample
        self.text_encoder = None
        if self.conditioner.uses_text:
            self.text_encoder = build_text_encoder(**(text_encoder or {"kind": "small"}))
        if isinstance(noise_schedule, dict):  # from a checkpoint's hyper-parameters
            noise_schedule = NoiseSchedule.from_dict(noise_schedule)
        self.set_noise_schedule(noise_schedule or NoiseSchedule())

    @property
    def conditioning(self) -> str:
        """The conditioning's name ("none", "class", "text", "class+text")."""
        return self.conditioner.name

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
        text_dim = self.text_encoder.output_dim if self.text_encoder is not None else None
        self.unet = build_denoiser(unet or {}, in_channels=in_channels, sample_size=sample_size,
                                   **self.conditioner.denoiser_kwargs(text_dim))

    # --- noise schedule ---------------------------------------------------------------------
    def set_noise_schedule(self, schedule: NoiseSchedule) -> None:
        """Install `schedule` for training and sampling, and record it in the hyper-parameters."""
        self.noise_schedule = schedule
        self.hparams["noise_schedule"] = schedule.to_dict()
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
        return self.conditioner.inputs(labels, captions, drop, self.text_encoder, self.device)

    def null_inputs(self, batch_size: int) -> dict[str, torch.Tensor]:
        return self.conditioner.null_inputs(batch_size, self.text_encoder, self.device)

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
        return configure_injected(self, params, self.optimizer, self.lr_scheduler, self.default_optimizer)

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
        if self.conditioner.uses_labels and labels is None:
            labels = torch.full((n,), -1, dtype=torch.long)  # unconditional draw through the null class
        cond = self.condition_inputs(labels, captions)
        use_cfg = self.conditioner.guided and guidance != 1.0
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
            "conditioning": self.conditioner.name,
            "class_names": list(self.hparams.class_names or []),
            "num_classes": self.hparams.num_classes,
            "sample_shape": list(self.sample_shape),
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = self.export_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(CHECKPOINT_KEY)
        if state is None:
            from lightning_modules.checkpoint_io import require_module_checkpoint

            require_module_checkpoint(checkpoint, "<checkpoint>", "--ckpt_path", CHECKPOINT_KEY,
                                      f"a checkpoint of a {type(self).__name__} run")
        saved = NoiseSchedule.from_dict(state["noise_schedule"])
        if saved != self.noise_schedule:  # checkpoints written before the schedule was an argument
            rank_zero_warn(f"using the checkpoint's noise schedule {saved}, not the configured {self.noise_schedule}")
            self.set_noise_schedule(saved)
        saved, current = state.get("class_names") or [], list(self.hparams.class_names or [])
        if saved and current and saved != current:
            raise ValueError(f"the checkpoint was trained on classes {saved} but the data gives {current}; "
                             "give the generation data the training class_names in the same order")
