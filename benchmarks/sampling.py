"""Sampling: DDIM (20 steps) vs DDPM (all T = 1000 steps) images/s from one model.

    python -m benchmarks.sampling [--ckpt logs/quickstart/ldm/checkpoints/last.ckpt] [--num-images 8]

Both samplers run `LatentDiffusionModule.sample` (what `synthmed predict` and the sample grids
call) on the same module object: same weights, same labels and seeds, classifier-free guidance
as configured (guidance 4.0 in the quickstart: two U-Net evaluations per step), VAE decoding
included. Without --ckpt the module is the quickstart LDM (experiments/quickstart/ldm.yaml) with
random weights: speed does not depend on what was learned. Runs are interleaved.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import add_common_args, autocast, begin, check_positive, fmt, interleave, median, now, spread
from benchmarks.quickstart_fixtures import LDM_YAML, autoencoder_ckpt, init_args

MODULE = "benchmarks.sampling"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default=None, help="a LatentDiffusionModule checkpoint (default: the quickstart "
                                                     "LDM with random weights)")
    parser.add_argument("--autoencoder-ckpt", default=None,
                        help="with --ckpt: the autoencoder file, when the path stored in the checkpoint moved; "
                             "without: a trained quickstart autoencoder (default random weights)")
    parser.add_argument("--num-images", type=int, default=8, help="images per sampling call (one batch; default 8)")
    parser.add_argument("--ddim-steps", type=int, default=20, help="DDIM steps (default 20)")
    parser.add_argument("--train-timesteps", type=int, default=None,
                        help="random-weight model only: T of the noise schedule, i.e. the DDPM step count "
                             "(default: the YAML's, 1000; smaller only for smoke tests)")
    return add_common_args(parser, repeats=2)


def load_module(args: argparse.Namespace, work: Path):
    """(module, description of its weights)."""
    from lightning_modules.diffusion import LatentDiffusionModule
    from lightning_modules.nets.schedules import NoiseSchedule

    if args.ckpt:
        if not Path(args.ckpt).is_file():
            raise SystemExit(f"--ckpt {args.ckpt}: no such file")
        if args.train_timesteps is not None:
            raise SystemExit("--train-timesteps only applies to the random-weight model; a checkpoint keeps its T")
        overrides = {"autoencoder_ckpt": args.autoencoder_ckpt} if args.autoencoder_ckpt else {}
        try:
            module = LatentDiffusionModule.load_from_checkpoint(args.ckpt, map_location="cpu", **overrides)
        except FileNotFoundError as exc:
            raise SystemExit(f"--ckpt {args.ckpt}: {exc}\nPass --autoencoder-ckpt with the autoencoder's new path")
        return module, f"trained checkpoint {args.ckpt}"
    data = init_args(LDM_YAML, "data")
    size, channels = int(data["image_size"]), int(data["channels"])
    ae_ckpt, ae_note = autoencoder_ckpt(args.autoencoder_ckpt, work, size, channels)
    model = init_args(LDM_YAML, "model")
    model.update(autoencoder_ckpt=str(ae_ckpt), latent_scale=1.0, image_size=size, in_channels=channels,
                 num_classes=3, class_names=["benign", "malignant", "normal"])
    torch.manual_seed(args.seed)
    schedule = dict(model.pop("noise_schedule", None) or {})
    model.pop("optimizer", None), model.pop("lr_scheduler", None)  # sampling only
    module = LatentDiffusionModule(**model)
    if args.train_timesteps is not None:
        schedule["num_train_timesteps"] = args.train_timesteps
    module.set_noise_schedule(NoiseSchedule(**schedule))
    return module, f"random weights, quickstart ldm.yaml U-Net; autoencoder: {ae_note}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    check_positive(num_images=args.num_images, ddim_steps=args.ddim_steps, repeats=args.repeats)
    if args.train_timesteps is not None and args.train_timesteps < 2:
        raise SystemExit(f"--train-timesteps {args.train_timesteps}: must be >= 2")
    device, report, threads_before = begin("Sampling: DDIM vs DDPM images/s", argv, args)
    try:
        with tempfile.TemporaryDirectory(prefix="synthmed_bench_") as tmp:
            module, weights = load_module(args, Path(tmp))
        module = module.to(device).eval()
        classes = max(1, module.hparams.num_classes)
        labels = [i % classes for i in range(args.num_images)] if module.conditioning == "class" else None
        seeds = list(range(args.seed, args.seed + args.num_images))
        T = module.noise_schedule.num_train_timesteps
        plans = {"ddim": args.ddim_steps, "ddpm": T}

        def run(sampler: str, steps: int) -> tuple[float, float]:
            """(wall seconds, process CPU seconds) of one sampling call."""
            start, cpu_start = now(device), time.process_time()
            with autocast(device, args.precision):
                images = module.sample(labels=labels, num_images=args.num_images, seeds=seeds, sampler=sampler,
                                       num_inference_steps=steps)
            elapsed, cpu = now(device) - start, time.process_time() - cpu_start
            if images.shape[0] != args.num_images or not torch.isfinite(images).all():
                raise RuntimeError(f"{sampler} returned {tuple(images.shape)} with non-finite values")
            return elapsed, cpu

        run("ddim", 2)  # warm-up: allocations, first-call dispatch
        seconds = interleave({s: (lambda r, s=s: run(s, plans[s])) for s in plans}, args.repeats)
    finally:
        torch.set_num_threads(threads_before)
    cfg = module.conditioning != "none" and float(module.hparams.guidance_scale) != 1.0
    rate = {s: [args.num_images / wall for wall, _ in seconds[s]] for s in plans}
    cpu_rate = {s: [args.num_images / cpu for _, cpu in seconds[s]] for s in plans}
    rows = [[f"{s.upper()}-{plans[s]}", plans[s] * (2 if cfg else 1), fmt(median([w for w, _ in seconds[s]]), 2),
             fmt(median(rate[s]), 3), spread(rate[s], 3), fmt(median(cpu_rate[s]), 3)] for s in plans]
    report.table(["sampler", "U-Net evaluations per image", "s per batch wall (median)", "img/s wall (median)",
                  "img/s wall range", "img/CPU-s (median)"], rows)
    report.table(["ratio img/s DDIM / DDPM, wall", "ratio img/s DDIM / DDPM, CPU time", "step ratio"],
                 [[fmt(median(rate["ddim"]) / median(rate["ddpm"]), 1),
                   fmt(median(cpu_rate["ddim"]) / median(cpu_rate["ddpm"]), 1), fmt(T / args.ddim_steps, 1)]])
    report.note(f"{args.num_images} images per call (one batch; labels cycle over the classes), guidance scale "
                f"{module.hparams.guidance_scale} ({'CFG: conditional + unconditional pass' if cfg else 'no CFG'}), "
                f"VAE decoding included, {args.repeats} interleaved runs per sampler. Model: {weights}.")
    report.print(MODULE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
