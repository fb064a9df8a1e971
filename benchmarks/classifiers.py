"""Classifiers: train img/s per architecture at 64 px, and data-loader img/s vs model img/s.

    python -m benchmarks.classifiers [--archs resnet18,vgg16] [--steps 10] [--device cuda --precision bf16-mixed]

Data: a phantom ImageFolder tree written by `synthmed make-phantoms` (the real verb), loaded by
`ImageFolderDataModule`, which decodes and resizes every image once at setup into a uint8 cache
(the quickstart classifier's HorizontalFlip augmentation stays on). Per architecture, two sides
run interleaved: the training loop (`ClassifierModule` under a Lightning Trainer, the loader
included since it runs in the training process) and the loader alone (same batches, no model).
Loader img/s far above train img/s means decoding and collation are not the bottleneck.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import add_common_args, begin, check_positive, fmt, interleave, median, spread
from benchmarks.timing import StepTimer

MODULE = "benchmarks.classifiers"


def build_parser() -> argparse.ArgumentParser:
    from lightning_modules.nets.backbones import ARCHS

    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=",".join(ARCHS), help=f"comma-separated subset of {','.join(ARCHS)}")
    parser.add_argument("--image-size", type=int, default=64, help="side in px (default 64)")
    parser.add_argument("--batch-size", type=int, default=32, help="(quickstart classifier.yaml: 32)")
    parser.add_argument("--per-class", type=int, default=100, help="phantoms per class in the tree (default 100)")
    parser.add_argument("--warmup-steps", type=int, default=1, help="untimed steps per training run (default 1)")
    parser.add_argument("--steps", type=int, default=2,
                        help="timed training steps per run (default 2: VGG takes ~10 s a step on one CPU thread)")
    parser.add_argument("--loader-batches", type=int, default=30, help="timed loader batches per run (default 30)")
    return add_common_args(parser, repeats=2)


class Benchmark:
    """The phantom tree, its DataModule (uint8 cache) and the two timed sides."""

    def __init__(self, args: argparse.Namespace, device: torch.device, work: Path):
        from datamodules.image_folder import ImageFolderDataModule
        from synthmed.make_phantoms import main as make_phantoms

        self.args, self.device, self.work = args, device, work
        tree = work / "phantoms"
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # keep the report clean; failures still raise
            code = make_phantoms([str(tree), "--per-class", str(args.per_class), "--size", str(args.image_size),
                                  "--seed", str(args.seed)])
        if code != 0:
            raise SystemExit(f"synthmed make-phantoms failed with exit code {code}")
        self.render_s = time.perf_counter() - start
        self.datamodule = ImageFolderDataModule(
            root=str(tree), image_size=args.image_size, channels=1, batch_size=args.batch_size, seed=args.seed,
            train_transforms=[{"name": "HorizontalFlip", "p": 0.5}])
        self.datamodule.prepare_manifest()  # file listing, hashes, splits: no pixels yet
        start = time.perf_counter()
        self.datamodule.setup("fit")  # decodes + resizes train and val into the uint8 cache
        self.decode_s = time.perf_counter() - start
        self.decoded = len(self.datamodule.dataset("train")) + len(self.datamodule.dataset("val"))
        self.params: dict[str, float] = {}

    def loader(self, run: int) -> tuple[float, float]:
        """(wall img/s, img per CPU-s) of the training DataLoader alone (contract batches, moved to the device)."""
        batches, images = iter(self.datamodule.train_dataloader()), 0
        next(batches)  # warm-up
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(self.args.loader_batches):
            try:
                batch = next(batches)
            except StopIteration:
                batches = iter(self.datamodule.train_dataloader())
                batch = next(batches)
            batch["image"].to(self.device, non_blocking=True)
            images += len(batch["image"])
        return images / (time.perf_counter() - start), images / (time.process_time() - cpu_start)

    def train(self, arch: str, run: int):
        from lightning.pytorch import Trainer, seed_everything

        from lightning_modules.classifier import ClassifierModule

        seed_everything(self.args.seed, verbose=False)
        dm = self.datamodule
        module = ClassifierModule(arch=arch, num_classes=dm.num_classes, in_channels=dm.channels,
                                  image_size=dm.image_size, class_names=dm.class_names)
        self.params[arch] = sum(p.numel() for p in module.parameters()) / 1e6
        timer = StepTimer()
        trainer = Trainer(accelerator="gpu" if self.device.type == "cuda" else "cpu", devices=1,
                          precision="32-true" if self.args.precision == "32" else self.args.precision,
                          max_steps=self.args.warmup_steps + self.args.steps, max_epochs=-1, logger=False,
                          enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                          limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer],
                          default_root_dir=str(self.work / "trainer"))
        trainer.fit(module, datamodule=dm)
        return timer.clock.window(self.args.warmup_steps, self.args.steps)


def main(argv: list[str] | None = None) -> int:
    from lightning_modules.nets.backbones import ARCHS

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    unknown = [a for a in archs if a not in ARCHS]
    if unknown or not archs:
        raise SystemExit(f"--archs: unknown {unknown or 'empty list'}; choose from {', '.join(ARCHS)}")
    check_positive(image_size=args.image_size, batch_size=args.batch_size, per_class=args.per_class,
                   warmup_steps=args.warmup_steps, steps=args.steps, loader_batches=args.loader_batches,
                   repeats=args.repeats)
    device, report, threads_before = begin(
        f"Classifiers: train img/s per architecture at {args.image_size} px vs data-loader img/s", argv, args)
    rows, worst = [], None
    try:
        with tempfile.TemporaryDirectory(prefix="synthmed_bench_") as tmp:
            bench = Benchmark(args, device, Path(tmp))
            for arch in archs:
                out = interleave({"train": lambda r, a=arch: bench.train(a, r), "loader": bench.loader}, args.repeats)
                train = [w.images_per_s for w in out["train"]]
                train_cpu = median([w.images_per_cpu_s for w in out["train"]])
                loader = median([wall for wall, _ in out["loader"]])
                loader_cpu = median([cpu for _, cpu in out["loader"]])
                ratio, ratio_cpu = loader / median(train), loader_cpu / train_cpu
                worst = ratio_cpu if worst is None else min(worst, ratio_cpu)
                rows.append([arch, fmt(bench.params[arch], 2), fmt(median(train)), spread(train), fmt(train_cpu),
                             fmt(median([w.ms_per_step for w in out["train"]]), 0), fmt(loader, 0),
                             fmt(loader_cpu, 0), fmt(ratio, 1), fmt(ratio_cpu, 1),
                             f"{100 * train_cpu / loader_cpu:.1f} %"])
    finally:
        torch.set_num_threads(threads_before)
    report.table(["arch", "params (M)", "train img/s wall (median)", "train wall range", "train img/CPU-s",
                  "ms/step wall", "loader img/s wall", "loader img/CPU-s", "ratio loader / train, wall",
                  "ratio loader / train, CPU time", "loader share of a step's CPU time"], rows)
    train_n = len(bench.datamodule.dataset("train"))
    report.note(
        f"Decoding happens once: {bench.decoded} PNGs decoded + resized at setup in {bench.decode_s:.2f} s "
        f"({bench.decoded / bench.decode_s:.0f} img/s) into a uint8 cache of "
        f"{bench.datamodule.dataset('train').images.nbytes / 1e6:.1f} MB (train split, {train_n} images); "
        f"`synthmed make-phantoms` rendered and wrote {3 * args.per_class} phantoms in {bench.render_s:.1f} s. "
        f"Batch {args.batch_size}, {args.warmup_steps} untimed + {args.steps} timed training steps and "
        f"{args.loader_batches} timed loader batches per run, {args.repeats} interleaved runs per side; "
        f"num_workers 0 (the DataModule default), HorizontalFlip on. img/CPU-s = images per second of this "
        f"process's CPU time, insensitive to other jobs on a shared CPU. Smallest loader / train CPU-time ratio: {worst:.1f} "
        f"({'the loader is not the bottleneck' if worst >= 5 else 'the loader is a noticeable share of a step'}).")
    report.print(MODULE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
