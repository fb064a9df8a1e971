"""DPM-Solver++ vs DDIM: images per CPU-second at equal KID, on one trained latent diffusion model.

    python -m benchmarks.dpm_solver [--run logs/reproduce/quickstart-mini] [--num-per-class 40]
        [--configs dpmsolver++:10,dpmsolver++:15,dpmsolver++:20,ddim:20,ddim:50]

Every configuration samples the same requests (class c, index i, seed `request_seed(seed, c, i)`,
as `synthmed predict` does) with `LatentDiffusionModule.sample` (guidance as trained, VAE decoding
included), quantised to uint8 as the synthetic-set writer does. KID (synthmed.evaluate.fidelity:
whole-set unbiased MMD^2 with a seeded bootstrap 95 % interval) is measured against the real test
images in the features of the run's own autoencoder (`autoencoder:<ckpt>`; no Inception weights
are needed offline). CPU seconds are `time.process_time()` of the sampling only (all threads of
this process), so other load on the machine shows in wall time, not in CPU time. Configurations
run in the order given, each once: the measured quantity is a mean over the whole set.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import add_common_args, begin, fmt

MODULE = "benchmarks.dpm_solver"
DEFAULT_RUN = "logs/reproduce/quickstart-mini"
DEFAULT_CONFIGS = "dpmsolver++:10,dpmsolver++:15,dpmsolver++:20,ddim:20,ddim:50"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=DEFAULT_RUN,
                        help=f"a `synthmed reproduce` quickstart output folder (default {DEFAULT_RUN})")
    parser.add_argument("--ckpt", default=None, help="LDM checkpoint (default <run>/ldm/run/checkpoints/last.ckpt)")
    parser.add_argument("--real", default=None, help="real image folder (default <run>/real_test)")
    parser.add_argument("--extractor", default=None,
                        help="feature space (default autoencoder:<run>/autoencoder/run/checkpoints/last.ckpt)")
    parser.add_argument("--num-per-class", type=int, default=40, help="synthetic images per class (default 40)")
    parser.add_argument("--batch-size", type=int, default=40, help="images per sampling call (default 40)")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"sampler:steps list (default {DEFAULT_CONFIGS})")
    parser.add_argument("--bootstrap-rounds", type=int, default=200, help="KID interval rounds (default 200)")
    return add_common_args(parser, repeats=1)


def parse_configs(text: str) -> list[tuple[str, int]]:
    configs = []
    for item in text.split(","):
        sampler, _, steps = item.strip().rpartition(":")
        if sampler not in ("ddim", "dpmsolver++", "ddpm") or not steps.isdigit() or int(steps) < 1:
            raise SystemExit(f"--configs {item!r}: use sampler:steps with sampler ddim, dpmsolver++ or ddpm")
        configs.append((sampler, int(steps)))
    return configs


def sample_set(module, sampler: str, steps: int, requests: list[tuple[int, int]], batch_size: int) -> tuple[
        torch.Tensor, float, float]:
    """uint8 N x C x H x W images for `requests`, CPU seconds and wall seconds of the sampling."""
    out, cpu0, wall0 = [], time.process_time(), time.perf_counter()
    for start in range(0, len(requests), batch_size):
        chunk = requests[start:start + batch_size]
        images = module.sample(labels=[c for c, _ in chunk], seeds=[s for _, s in chunk], sampler=sampler,
                               num_inference_steps=steps)
        out.append(((images + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8))
    return torch.cat(out), time.process_time() - cpu0, time.perf_counter() - wall0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    configs = parse_configs(args.configs)
    run = Path(args.run)
    ckpt = Path(args.ckpt or run / "ldm" / "run" / "checkpoints" / "last.ckpt")
    real_root = Path(args.real or run / "real_test")
    extractor_spec = args.extractor or f"autoencoder:{run / 'autoencoder' / 'run' / 'checkpoints' / 'last.ckpt'}"
    if not ckpt.is_file():
        raise SystemExit(f"{ckpt}: no LDM checkpoint; train the quickstart first "
                         "(synthmed reproduce experiments/quickstart/pipeline.yaml) or pass --ckpt")
    device, report, _ = begin("DPM-Solver++ vs DDIM at equal KID", argv, args)

    from datamodules.generation import request_seed
    from lightning_modules.diffusion import LatentDiffusionModule
    from synthmed.evaluate.extractors import build_extractor, extract_features
    from synthmed.evaluate.fidelity import kid_result
    from synthmed.evaluate.images import load_image_set

    module = LatentDiffusionModule.load_from_checkpoint(str(ckpt), map_location="cpu").eval()
    classes = list(module.hparams.class_names)
    hp = module.hparams
    extractor = build_extractor(extractor_spec)
    real = load_image_set(real_root, size=hp.image_size, channels=hp.in_channels, option="--real")
    real_features = extract_features(extractor, real.images)
    requests = [(c, request_seed(args.seed, c, i)) for c in range(len(classes)) for i in range(args.num_per_class)]
    report.note(f"model: {ckpt} (guidance {hp.guidance_scale}, T={module.noise_schedule.num_train_timesteps}, "
                f"{hp.timestep_spacing} spacing); {len(requests)} images ({args.num_per_class} per class of "
                f"{classes}), batch {args.batch_size}")
    report.note(f"KID vs {len(real.images)} real images of {real_root} in `{extractor.name}` features, "
                f"{args.bootstrap_rounds} bootstrap rounds; the same seeds for every sampler")
    rows = []
    for sampler, steps in configs:
        images, cpu_s, wall_s = sample_set(module, sampler, steps, requests, args.batch_size)
        kid = kid_result(real_features, extract_features(extractor, images), extractor.name,
                         rounds=args.bootstrap_rounds, seed=args.seed)
        rows.append((sampler, steps, len(images), cpu_s, wall_s, kid))
        print(f"  {sampler}-{steps}: {cpu_s:.1f} CPU-s, KID {kid.value * 1e3:.2f}e-3", file=sys.stderr, flush=True)
    table = []
    for sampler, steps, n, cpu_s, wall_s, kid in rows:
        low, high = kid.interval if kid.interval else (float("nan"), float("nan"))
        table.append((sampler, steps, n, fmt(cpu_s), f"{n / cpu_s:.2f}", fmt(wall_s),
                      f"{kid.value * 1e3:.2f} [{low * 1e3:.2f}, {high * 1e3:.2f}]"))
    report.table(("sampler", "steps", "images", "CPU s", "images / CPU-s", "wall s", "KID x 1e3 [95 % CI]"), table)
    report.print(MODULE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
