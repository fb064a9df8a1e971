"""Generator training: `synthmed fit` of the quickstart LDM vs a plain PyTorch + diffusers loop (img/s).

    python -m benchmarks.ldm_fit_vs_plain_loop [--device cuda --precision bf16-mixed] [--repeats 5]

synthmed side: the real CLI entry point in-process (`synthmed.lightning_cli.run_trainer_verb`,
what `synthmed fit` runs) on experiments/quickstart/ldm.yaml as shipped (LatentDiffusionModule,
cached latents, class conditioning, EMA, progress bar, logging every 10 steps), plus only:
a step clock callback, max_steps, `--test_after_fit false`, a temporary logs folder, device and
precision. Plain side: `benchmarks.plain_ldm_loop` with the same U-Net, batch, precision, data
(the same training phantoms, latents held in memory), optimizer, LR warm-up and EMA start.
Both are timed on the same steady-state window (see `benchmarks.timing`), interleaved.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import Report, add_common_args, begin, check_positive, fmt, interleave, median, spread
from benchmarks.plain_ldm_loop import PlainLoopSettings, build_unet, encode_posteriors, run_plain_loop
from benchmarks.quickstart_fixtures import (LDM_YAML, autoencoder_ckpt, callback_init_args, init_args,
                                            trainer_flags)
from benchmarks.timing import StepLog, Window, find_timer

MODULE = "benchmarks.ldm_fit_vs_plain_loop"
PLAIN = "plain PyTorch + diffusers"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    data = init_args(LDM_YAML, "data")
    ema_start = int(callback_init_args(LDM_YAML, "EMA").get("update_starting_at_step", 0))
    parser.add_argument("--num-per-class", type=int, default=data["num_per_class"],
                        help=f"phantoms per class (YAML: {data['num_per_class']})")
    parser.add_argument("--batch-size", type=int, default=data["batch_size"], help=f"(YAML: {data['batch_size']})")
    parser.add_argument("--warmup-steps", type=int, default=ema_start + 5,
                        help="steps before the timed window (default: 5 past the YAML's EMA start, "
                             f"step {ema_start}, so the window includes the EMA updates)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run (default 30)")
    parser.add_argument("--autoencoder-ckpt", default=None,
                        help="a trained quickstart autoencoder (default: random weights; speed is the same)")
    parser.add_argument("--synthmed-args", default="",
                        help="extra CLI overrides for every synthmed side, e.g. "
                             "'--trainer.enable_progress_bar false' (reported under the table)")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL=ARGS",
                        help="add another synthmed side with these extra CLI overrides, interleaved with the "
                             "others (repeatable), e.g. 'no progress bar=--trainer.enable_progress_bar false'")
    return add_common_args(parser, repeats=3)


class Benchmark:
    """Holds what both sides share (data, latents, settings) and runs one repeat of either side."""

    def __init__(self, args: argparse.Namespace, device: torch.device, work: Path):
        self.args, self.device, self.work = args, device, work
        data = init_args(LDM_YAML, "data")
        self.image_size, self.channels = int(data["image_size"]), int(data["channels"])
        self.ae_ckpt, self.ae_note = autoencoder_ckpt(args.autoencoder_ckpt, work, self.image_size, self.channels)
        self.total_steps = args.warmup_steps + args.steps
        self._plain_inputs: tuple | None = None
        self.unet_params: dict[str, int] = {}
        self.runs = 0

    # ---- synthmed ---------------------------------------------------------------------------
    def synthmed_argv(self, run: int, extra: str) -> list[str]:
        a = self.args
        return ["fit", "--config", str(LDM_YAML),
                "--model.init_args.autoencoder_ckpt", str(self.ae_ckpt),
                "--data.init_args.num_per_class", str(a.num_per_class),
                "--data.init_args.batch_size", str(a.batch_size),
                "--trainer.max_steps", str(self.total_steps),
                "--trainer.max_epochs", "-1",
                *trainer_flags(self.device.type, a.precision),
                "--trainer.callbacks+=benchmarks.timing.StepTimer",
                "--test_after_fit", "false", "--seed_everything", str(a.seed),
                "--logs_root", str(self.work / "logs"), "--experiment", "bench", "--run_version", f"run_{self.runs}",
                *shlex.split(a.synthmed_args), *shlex.split(extra)]

    def run_synthmed(self, run: int, extra: str = "") -> StepLog:
        from synthmed.lightning_cli import run_trainer_verb

        self.runs += 1
        cli = run_trainer_verb(self.synthmed_argv(run, extra))
        self.unet_params["synthmed"] = sum(p.numel() for p in cli.model.unet.parameters())
        shutil.rmtree(self.work / "logs" / "bench" / f"run_{self.runs}", ignore_errors=True)  # ~160 MB of checkpoints
        return find_timer(cli.trainer).clock

    # ---- plain ------------------------------------------------------------------------------
    def plain_inputs(self):
        """Training phantoms of the same split (PhantomDataModule, YAML options), encoded once."""
        if self._plain_inputs is None:
            from datamodules.phantoms import PhantomDataModule
            from lightning_modules.autoencoder import load_autoencoder

            data = init_args(LDM_YAML, "data")
            data.update(num_per_class=self.args.num_per_class, batch_size=self.args.batch_size)
            datamodule = PhantomDataModule(**data)
            datamodule.setup("fit")
            train = datamodule.dataset("train")
            vae, _ = load_autoencoder(str(self.ae_ckpt))
            mean, std = encode_posteriors(vae, train.images, self.device)
            settings = PlainLoopSettings.from_ldm_yaml(
                init_args(LDM_YAML, "model"), dict(init_args(LDM_YAML, "model").get("noise_schedule") or {}),
                callback_init_args(LDM_YAML, "EMA"), datamodule.num_classes, self.args.batch_size)
            labels = torch.as_tensor(train.labels, dtype=torch.long)
            self._plain_inputs = (settings, mean, std, labels)
        return self._plain_inputs

    def run_plain(self, run: int) -> StepLog:
        settings, mean, std, labels = self.plain_inputs()
        self.unet_params["plain"] = sum(p.numel() for p in build_unet(settings, mean.shape[1], mean.shape[2]).parameters())
        return run_plain_loop(settings, mean, std, labels, self.total_steps, self.device, self.args.precision,
                              self.args.seed)


def report_tables(report: Report, windows: dict[str, list[Window]], unet_params: dict[str, int],
                  device: torch.device) -> None:
    wall = {side: median([w.images_per_s for w in ws]) for side, ws in windows.items()}
    cpu = {side: median([w.images_per_cpu_s for w in ws]) for side, ws in windows.items()}
    rows = []
    for side, ws in windows.items():
        rows.append([side, fmt(wall[side]), spread([w.images_per_s for w in ws]), fmt(cpu[side]),
                     spread([w.images_per_cpu_s for w in ws]), fmt(median([w.ms_per_step for w in ws]), 0),
                     ws[0].images, unet_params["plain" if side == PLAIN else "synthmed"],
                     sum(w.validations for w in ws)])
    report.table(["side", "img/s wall (median)", "wall range", "img/CPU-s (median)", "CPU range", "ms/step wall",
                  "images in window", "U-Net params", "validations in window"], rows)
    ratios = []
    for side in windows:
        if side == PLAIN:
            continue
        r_wall, r_cpu = wall[side] / wall[PLAIN], cpu[side] / cpu[PLAIN]
        judged = r_cpu if device.type == "cpu" else r_wall
        ratios.append([side, fmt(r_wall, 3), fmt(r_cpu, 3), "met" if judged >= 0.9 else "NOT met"])
    judged_on = "CPU-time ratio (CPU run)" if device.type == "cpu" else "wall ratio (GPU run)"
    report.table(["synthmed side", "ratio wall img/s synthmed / plain", "ratio CPU-time img/s synthmed / plain",
                  f"goal >= 0.9, judged on the {judged_on}"], ratios)


def parse_variants(values: list[str]) -> list[tuple[str, str]]:
    variants = []
    for value in values:
        label, sep, extra = value.partition("=")
        if not sep or not label.strip() or not extra.strip():
            raise SystemExit(f"--variant {value!r}: write LABEL=CLI-OVERRIDES, e.g. "
                             "'no progress bar=--trainer.enable_progress_bar false'")
        variants.append((label.strip(), extra))
    return variants


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    check_positive(num_per_class=args.num_per_class, batch_size=args.batch_size, warmup_steps=args.warmup_steps,
                   steps=args.steps, repeats=args.repeats)
    variants = parse_variants(args.variant)
    device, report, threads_before = begin("LDM training: synthmed fit vs plain PyTorch + diffusers loop", argv, args)
    try:
        with tempfile.TemporaryDirectory(prefix="synthmed_bench_") as tmp:
            bench = Benchmark(args, device, Path(tmp))
            bench.plain_inputs()  # encode once before the timed rounds
            sides = {"synthmed fit (quickstart ldm.yaml)": bench.run_synthmed}
            for label, extra in variants:
                sides[f"synthmed fit, {label}"] = lambda r, extra=extra: bench.run_synthmed(r, extra)
            sides[PLAIN] = bench.run_plain
            logs = interleave(sides, args.repeats)
        windows = {side: [log.window(args.warmup_steps, args.steps) for log in runs] for side, runs in logs.items()}
        report_tables(report, windows, bench.unet_params, device)
        report.note(
            f"Batch {args.batch_size}, {args.num_per_class} phantoms per class (training split of the YAML), "
            f"warm-up {args.warmup_steps} steps then {args.steps} timed steps per run, {args.repeats} interleaved "
            f"runs per side. Autoencoder: {bench.ae_note}. Extra args on every synthmed side: "
            f"`{args.synthmed_args or 'none'}`. img/CPU-s = images per second of this process's CPU time (all "
            "threads): on a shared CPU it is insensitive to other jobs, so its ratio is the overhead measure; on a "
            "GPU use the wall ratio.")
    finally:
        torch.set_num_threads(threads_before)
    report.print(MODULE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
