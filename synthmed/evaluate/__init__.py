"""Generative-model evaluation (`synthmed evaluate`): FID/KID, precision/recall, density/coverage,
SSIM/MS-SSIM/PSNR (nearest-real and random-pair definitions), LPIPS/CLIP score from local weights,
and a memorisation audit against the generator's training set.

Modules: images (folders -> tensors), extractors (named feature spaces), fidelity (FID/KID via
torchmetrics), manifold (k-NN metrics), similarity (paired pixel metrics), perceptual (LPIPS,
CLIP), memorisation, runtime (single-thread statistics), pipeline (`evaluate`), report (JSON +
Markdown), cli (`main(argv)`).
"""
