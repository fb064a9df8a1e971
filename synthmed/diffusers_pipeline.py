"""A diffusers pipeline for synthmed's class-conditional pixel models (and latent ones DiT cannot hold).

Latent models normally export as diffusers' own `DiTPipeline` (synthmed/dit_export.py), which
loads without `trust_remote_code`. diffusers has no class-conditional pixel pipeline, so for those
(and a latent model DiT does not fit: non-square latents, synthmed's own U-Net, >= 1000 classes)
`synthmed export` copies this file, unchanged, into the exported folder as
`synthmed_pipeline.py` and names it in `model_index.json` (`"_class_name": ["synthmed_pipeline",
"SynthmedDiffusionPipeline"]`), so the folder loads with diffusers alone, offline:

    from diffusers import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    images = pipe(class_labels=[0, 1, 2], num_inference_steps=20,
                  generator=torch.Generator().manual_seed(0)).images

diffusers (0.42) runs a pipeline class that is not its own only from a `.py` file in the folder,
and only with `trust_remote_code=True` (`pipeline_loading_utils._resolve_custom_pipeline_and_cls`
and `dynamic_modules_utils.get_cached_module_file`); that file is this one. It therefore imports
nothing but torch and diffusers, and must stay that way.

The loop repeats synthmed's sampler (`lightning_modules.nets.sampling.reverse_diffusion` and
`DiffusionModule.sample`) draw for draw: initial noise by `randn_tensor`, the scheduler's own
step noise, classifier-free guidance as `uncond + g * (cond - uncond)` on a [cond, null] batch, so
the same seed(s), labels, scheduler and steps give the images `synthmed predict` writes.
"""

from __future__ import annotations

from typing import Sequence

import torch
from diffusers import DDIMScheduler, DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor


class SynthmedDiffusionPipeline(DiffusionPipeline):
    """Class-conditional (or unconditional) diffusion in pixel space or an AutoencoderKL's latent space.

    Args:
        unet: the denoiser (`UNet2DModel`; class embedding with `null_class + 1` rows when conditional).
        scheduler: any diffusers scheduler on the training betas (DDIM, DDPM, DPMSolverMultistep, ...).
        vae: the `AutoencoderKL` of a latent model (its `scaling_factor` is synthmed's latent scale);
            None for a pixel model.
        class_names: the training classes, index order.
        null_class: the label of the unconditional ("null") class; None when the model is unconditional.
        sample_shape: (C, H, W) of what the U-Net denoises (latents or pixels).
        guidance_scale: the default classifier-free guidance (1.0 = conditional only).
        num_inference_steps: the default number of steps (the model's training-time setting).
    """

    model_cpu_offload_seq = "unet->vae"
    _optional_components = ["vae"]

    def __init__(self, unet, scheduler, vae=None, class_names: Sequence[str] | None = None,
                 null_class: int | None = None, sample_shape: Sequence[int] | None = None,
                 guidance_scale: float = 1.0, num_inference_steps: int = 20):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, vae=vae)
        self.register_to_config(class_names=list(class_names or []), null_class=null_class,
                                sample_shape=list(sample_shape) if sample_shape is not None else None,
                                guidance_scale=float(guidance_scale), num_inference_steps=int(num_inference_steps))

    def _labels(self, class_labels, batch_size: int) -> torch.Tensor | None:
        """Class indices (names are looked up in `class_names`); None for an unconditional model."""
        null = self.config.null_class
        if null is None:
            if class_labels is not None:
                raise ValueError("this model is unconditional: call it with batch_size, not class_labels")
            return None
        if class_labels is None:
            return torch.full((batch_size,), int(null), dtype=torch.long)
        if isinstance(class_labels, (int, str)) or (torch.is_tensor(class_labels) and class_labels.ndim == 0):
            class_labels = [class_labels]
        names = list(self.config.class_names)
        labels = [names.index(c) if isinstance(c, str) else int(c) for c in class_labels]
        # out-of-range labels (-1: "unlabeled") draw through the null class, as in synthmed
        return torch.tensor([c if 0 <= c < null else null for c in labels], dtype=torch.long)

    @torch.no_grad()
    def __call__(self, class_labels: Sequence[int | str] | torch.Tensor | int | str | None = None,
                 batch_size: int = 1, num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 eta: float = 0.0, generator: torch.Generator | list[torch.Generator] | None = None,
                 output_type: str = "pil", return_dict: bool = True):
        """Generate one image per class label (or `batch_size` unconditional images).

        Args:
            class_labels: class indices or names; None = `batch_size` draws from the null class.
            num_inference_steps: scheduler steps (default: the model's setting).
            guidance_scale: classifier-free guidance (default: the model's setting; 1.0 = none).
            eta: DDIM's eta (ignored by other schedulers).
            generator: one generator for the batch, or one per image (each image then depends on
                its own seed only, as in `synthmed predict`).
            output_type: "pil", "np" (float HxWxC in [0, 1]) or "pt" (float BxCxHxW in [0, 1]).
        """
        labels = self._labels(class_labels, batch_size)
        n = len(labels) if labels is not None else batch_size
        steps = self.config.num_inference_steps if num_inference_steps is None else num_inference_steps
        guidance = self.config.guidance_scale if guidance_scale is None else guidance_scale
        device, dtype = self.unet.device, self.unet.dtype
        shape = (n, *(self.config.sample_shape or (self.unet.config.in_channels, self.unet.config.sample_size,
                                                   self.unet.config.sample_size)))
        x = randn_tensor(shape, generator=generator, device=device, dtype=dtype) * self.scheduler.init_noise_sigma
        use_cfg = labels is not None and guidance != 1.0
        if labels is not None:
            labels = labels.to(device)
            both = torch.cat([labels, torch.full_like(labels, int(self.config.null_class))]) if use_cfg else labels
        self.scheduler.set_timesteps(steps)
        step_kwargs = {"eta": eta} if isinstance(self.scheduler, DDIMScheduler) else {}
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = self.scheduler.scale_model_input(x, t)
            if use_cfg:
                out_c, out_u = self.unet(torch.cat([model_input, model_input]), t.to(device),
                                         class_labels=both).sample.chunk(2)
                model_output = out_u + guidance * (out_c - out_u)
            else:
                model_output = self.unet(model_input, t.to(device),
                                         class_labels=labels if labels is not None else None).sample
            x = self.scheduler.step(model_output, t, x, generator=generator, **step_kwargs).prev_sample
        if self.vae is not None:
            x = self.vae.decode(1.0 / self.vae.config.scaling_factor * x).sample  # as synthmed and DiTPipeline
        images = ((x.clamp(-1, 1) + 1) / 2).float().clamp(0, 1).cpu()
        if output_type != "pt":
            images = images.permute(0, 2, 3, 1).numpy()
            if output_type == "pil":
                images = self.numpy_to_pil(images)
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
