"""Generative-model evaluation (`synthmed evaluate`): FID/KID, precision/recall, density/coverage,
SSIM/MS-SSIM/PSNR (nearest-real and random-pair definitions), LPIPS/CLIP score from local weights,
degenerate samples, and a calibrated copy audit against the generator's training set — each number
a typed result with n_real, n_fake, direction and a seeded bootstrap 95 % interval, pooled and per class.

Modules: results (MetricResult, the one reader), bootstrap (seeded resampling, intervals), images
(folders -> tensors), extractors (named feature spaces), fidelity (FID/KID), manifold (k-NN
metrics), similarity (paired pixel metrics), perceptual (LPIPS, CLIP), degenerate, copy_detector
(+ copy_representations, data_copying: Meehan et al. 2020's C_T), pictures (closest pairs),
runtime (single-thread statistics), pipeline (`evaluate`), report (JSON + Markdown, the one
renderer), cli (`main(argv)`).
"""
