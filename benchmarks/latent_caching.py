"""Latent caching: LDM epoch time with vs without cached latents (`model.cache_latents`).

    python -m benchmarks.latent_caching [--epochs 4] [--device cuda --precision bf16-mixed]

Both sides are `synthmed fit` of experiments/quickstart/ldm.yaml through the real CLI entry
point, differing only in `--model.init_args.cache_latents` (`none`: the frozen autoencoder
encodes every batch; `memory`: each training image is encoded once, in the first epoch, and its
posterior reused after). The cache is filled once (in `on_train_start`, or during epoch 0 in
older versions of the module), so the time before the first epoch and epoch 0 are reported
apart; the comparison is the median of the later (steady) epochs. An epoch is timed from its start to the end of its last
step (epoch-end hooks such as the final sample grid are not part of the data path). Runs of the
two modes are interleaved.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import add_common_args, begin, check_positive, fmt, interleave, median, spread
from benchmarks.quickstart_fixtures import LDM_YAML, autoencoder_ckpt, init_args, trainer_flags
from benchmarks.timing import StepLog, find_timer

MODULE = "benchmarks.latent_caching"
MODES = ("none", "memory")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    data = init_args(LDM_YAML, "data")
    parser.add_argument("--num-per-class", type=int, default=200,
                        help=f"phantoms per class (default 200 for a short run; the YAML has {data['num_per_class']})")
    parser.add_argument("--batch-size", type=int, default=data["batch_size"], help=f"(YAML: {data['batch_size']})")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run; epochs 1.. are compared (default 4)")
    parser.add_argument("--autoencoder-ckpt", default=None,
                        help="a trained quickstart autoencoder (default: random weights; speed is the same)")
    parser.add_argument("--synthmed-args", default="", help="extra CLI overrides for both modes")
    return add_common_args(parser, repeats=3)


def run_fit(args: argparse.Namespace, device: torch.device, work: Path, ae_ckpt: Path, mode: str, run: int) -> StepLog:
    from synthmed.lightning_cli import run_trainer_verb

    argv = ["fit", "--config", str(LDM_YAML),
            "--model.init_args.autoencoder_ckpt", str(ae_ckpt),
            "--model.init_args.cache_latents", mode,
            "--data.init_args.num_per_class", str(args.num_per_class),
            "--data.init_args.batch_size", str(args.batch_size),
            "--trainer.max_epochs", str(args.epochs), "--trainer.max_steps", "-1",
            *trainer_flags(device.type, args.precision),
            "--trainer.callbacks+=benchmarks.timing.StepTimer",
            "--test_after_fit", "false", "--seed_everything", str(args.seed),
            "--logs_root", str(work / "logs"), "--experiment", "bench", "--run_version", f"{mode}_{run}",
            *shlex.split(args.synthmed_args)]
    clock = find_timer(run_trainer_verb(argv).trainer).clock
    shutil.rmtree(work / "logs" / "bench" / f"{mode}_{run}", ignore_errors=True)  # checkpoints: ~160 MB a run
    return clock


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    check_positive(num_per_class=args.num_per_class, batch_size=args.batch_size, repeats=args.repeats)
    if args.epochs < 2:
        raise SystemExit(f"--epochs {args.epochs}: needs >= 2 (epoch 0 is reported apart; later epochs are compared)")
    device, report, threads_before = begin("Latent caching: LDM epoch time without vs with cached latents", argv, args)
    try:
        with tempfile.TemporaryDirectory(prefix="synthmed_bench_") as tmp:
            data = init_args(LDM_YAML, "data")
            ae_ckpt, ae_note = autoencoder_ckpt(args.autoencoder_ckpt, Path(tmp), int(data["image_size"]),
                                                int(data["channels"]))
            sides = {mode: (lambda r, mode=mode: run_fit(args, device, Path(tmp), ae_ckpt, mode, r)) for mode in MODES}
            logs = interleave(sides, args.repeats)
    finally:
        torch.set_num_threads(threads_before)
    steady, steady_cpu, first, before, images = {}, {}, {}, {}, {}
    for mode, runs in logs.items():
        epochs = [[log.epoch_seconds(e) for e in range(1, args.epochs)] for log in runs]
        steady[mode] = [median([wall for wall, _, _ in run]) for run in epochs]
        steady_cpu[mode] = [median([cpu for _, cpu, _ in run]) for run in epochs]
        first[mode] = [log.epoch_seconds(0)[1] for log in runs]
        before[mode] = [log.before_first_epoch()[1] for log in runs]
        images[mode] = epochs[0][0][2]
    rows = [[f"cache_latents: {mode}", fmt(median(steady[mode]), 2), spread(steady[mode], 2),
             fmt(median(steady_cpu[mode]), 2), spread(steady_cpu[mode], 2),
             fmt(images[mode] / median(steady[mode])), fmt(median(before[mode]), 2), fmt(median(first[mode]), 2),
             images[mode]] for mode in MODES]
    report.table(["mode", "steady epoch s wall (median)", "wall range", "steady epoch CPU s (median)", "CPU range",
                  "img/s wall", "on_train_start CPU s", "epoch 0 CPU s", "images per epoch"], rows)
    report.table(["ratio epoch time none / memory, wall", "ratio epoch time none / memory, CPU time"],
                 [[fmt(median(steady["none"]) / median(steady["memory"]), 2),
                   fmt(median(steady_cpu["none"]) / median(steady_cpu["memory"]), 2)]])
    report.note(f"Batch {args.batch_size}, {args.num_per_class} phantoms per class (training split of the YAML), "
                f"{args.epochs} epochs per run (epochs 1..{args.epochs - 1} are the steady ones), {args.repeats} "
                f"interleaved runs per mode. Autoencoder: {ae_note}. Extra args: `{args.synthmed_args or 'none'}`. "
                "CPU s = this process's CPU time (all threads), insensitive to other jobs on a shared CPU. "
                "on_train_start = from the fit's on_train_start to epoch 0 (the module fills its latent cache there).")
    report.print(MODULE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
