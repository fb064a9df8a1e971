"""Where the LDM training overhead goes: per-step CPU cost of the parts that differ from the plain loop.

    python -m benchmarks.ldm_overhead_parts [--iterations 50]

`ldm_fit_vs_plain_loop` measures the whole step; this script times, on the same module and data
as the quickstart LDM, the per-step parts where synthmed and the plain loop do different work:

- EMA update: the YAML's `lightning_modules.callbacks.ema.EMA` (Lightning's EMAWeightAveraging:
  an AveragedModel of the whole LightningModule, frozen autoencoder included, updated with a
  per-tensor `avg_fn`) vs diffusers' `EMAModel.step` on the U-Net parameters (the plain loop).
  A third row times the same AveragedModel with torch's foreach `multi_avg_fn` (a possible fix).
- Getting a batch of latents: the DataModule's loader (contract dict: image, label, index, mask)
  plus `encode_images` on a cache hit vs the plain loop's gather from in-memory latents.

Each pair is interleaved; times are process CPU time per call (insensitive to other jobs).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from benchmarks.common import add_common_args, begin, check_positive, fmt, interleave, median
from benchmarks.quickstart_fixtures import LDM_YAML, autoencoder_ckpt, callback_init_args, init_args

MODULE = "benchmarks.ldm_overhead_parts"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=50, help="calls per timed run (default 50)")
    parser.add_argument("--num-per-class", type=int, default=init_args(LDM_YAML, "data")["num_per_class"],
                        help="phantoms per class (default: the YAML's)")
    parser.add_argument("--autoencoder-ckpt", default=None, help="a trained quickstart autoencoder (default random)")
    return add_common_args(parser, repeats=3)


def cpu_ms_per_call(fn: Callable[[], object], iterations: int) -> float:
    fn()  # warm-up
    start = time.process_time()
    for _ in range(iterations):
        fn()
    return 1000.0 * (time.process_time() - start) / iterations


def build_parts(args: argparse.Namespace, device: torch.device, work: Path) -> dict[str, dict[str, Callable]]:
    """{part: {side: zero-argument callable doing that part once}}."""
    from diffusers.training_utils import EMAModel
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from datamodules.phantoms import PhantomDataModule
    from lightning_modules.callbacks.ema import EMA
    from lightning_modules.diffusion import LatentDiffusionModule

    data = init_args(LDM_YAML, "data")
    data["num_per_class"] = args.num_per_class
    datamodule = PhantomDataModule(**data)
    datamodule.setup("fit")
    ae_ckpt, _ = autoencoder_ckpt(args.autoencoder_ckpt, work, datamodule.image_size, datamodule.channels)
    model = init_args(LDM_YAML, "model")
    model.update(autoencoder_ckpt=str(ae_ckpt), latent_scale=1.0, num_classes=datamodule.num_classes,
                 class_names=datamodule.class_names, in_channels=datamodule.channels, image_size=datamodule.image_size)
    torch.manual_seed(args.seed)
    module = LatentDiffusionModule(**model).to(device).train()

    ema_args = callback_init_args(LDM_YAML, "EMA")
    callback = EMA(**ema_args)
    callback.setup(None, module, "fit")  # builds the AveragedModel exactly as in fit (trainer unused there)
    synthmed_average = callback._average_model
    proposed = AveragedModel(module, use_buffers=True, multi_avg_fn=get_ema_multi_avg_fn(ema_args["decay"]))
    plain_ema = EMAModel(module.unet.parameters(), decay=ema_args["decay"])
    plain_ema.to(device)
    for average in (synthmed_average, proposed):
        average.update_parameters(module)  # the first update only copies; time the steady ones

    loader = datamodule.train_dataloader()
    batches = iter(loader)

    def next_batch() -> dict:
        nonlocal batches
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}

    def synthmed_latents() -> torch.Tensor:
        return module.encode_images(next_batch())

    for _ in range(len(loader)):  # one epoch fills the latent cache, as epoch 0 of a fit does
        synthmed_latents()
    train = datamodule.dataset("train")
    with torch.no_grad():
        images = torch.from_numpy(train.images).float().div(127.5).sub(1.0).to(device)
        dist = module.vae.encode(images).latent_dist
    mean, std, batch_size = dist.mean, dist.std, datamodule.batch_size

    def plain_latents() -> torch.Tensor:
        idx = torch.randint(0, len(mean), (batch_size,), device=device)
        return (mean[idx] + std[idx] * torch.randn_like(mean[idx])) * 1.0

    return {
        "EMA update": {
            "synthmed (Lightning EMAWeightAveraging)": lambda: synthmed_average.update_parameters(module),
            "plain (diffusers EMAModel, U-Net only)": lambda: plain_ema.step(module.unet.parameters()),
            "proposed: same AveragedModel, foreach multi_avg_fn": lambda: proposed.update_parameters(module),
        },
        "batch of latents": {
            "synthmed (loader + cached encode_images)": synthmed_latents,
            "plain (gather from in-memory latents)": plain_latents,
        },
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    check_positive(iterations=args.iterations, num_per_class=args.num_per_class, repeats=args.repeats)
    device, report, threads_before = begin("LDM overhead parts: per-step CPU cost, synthmed vs plain loop", argv, args)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="synthmed_bench_") as tmp, torch.no_grad():
            for part, sides in build_parts(args, device, Path(tmp)).items():
                timed = interleave({name: (lambda r, fn=fn: cpu_ms_per_call(fn, args.iterations))
                                    for name, fn in sides.items()}, args.repeats)
                names = list(sides)
                plain = median(timed[names[1]])
                for name in names:
                    rows.append([part, name, fmt(median(timed[name]), 2),
                                 fmt(median(timed[name]) / plain, 2), fmt(median(timed[name]) - plain, 2)])
    finally:
        torch.set_num_threads(threads_before)
    report.table(["part", "side", "CPU ms per step (median)", "ratio to plain", "extra ms per step vs plain"], rows)
    report.note(f"Quickstart LDM module and data (batch {init_args(LDM_YAML, 'data')['batch_size']}), "
                f"{args.iterations} calls per timed run, {args.repeats} interleaved runs per side. Compare the extra "
                "ms with the whole step's CPU time in ldm_fit_vs_plain_loop (batch / img-per-CPU-s).")
    report.print(MODULE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
