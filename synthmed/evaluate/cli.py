"""`synthmed evaluate`: generative metrics of a fake image set against real (and training) images.

    synthmed evaluate --real DIR --fake DIR [--train DIR] --extractor classifier:<ckpt>
        [--inception-weights FILE] [--lpips-weights FILE] [--clip-model DIR] [--image-size S]
        [--max-images N] [--seed 0] [--out DIR]

DIRs are ImageFolder trees (one sub-folder per class) or flat folders; `*_mask*` files are
skipped. Writes `<out>/evaluation.json` (typed results: name, feature space or definition, value,
n_real, n_fake, direction, seeded bootstrap 95 % interval, reliability), `<out>/evaluation.md`
(and, with --train, the copy audit's closest fake/train pairs as PNGs), prints the metric table
and ends with `run_dir: <out>`. Every feature-space metric names its extractor
(`fid[classifier:resnet18@1a2b3c4d]`); FID from fewer images than feature dimensions is marked
unreliable; LPIPS and CLIP score are computed only from local weights, otherwise not computed.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

from synthmed.offline import configure_offline

configure_offline()

from synthmed.evaluate.manifold import DEFAULT_K  # noqa: E402
from synthmed.evaluate.bootstrap import DEFAULT_ROUNDS  # noqa: E402
from synthmed.runs import fresh_out_dir


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="synthmed evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--real", required=True, help="real images (held out from the generator's training): a folder, or a run's "
                   "split_manifest.csv[:splits] (default split: test)")
    p.add_argument("--fake", required=True, help="generated images")
    p.add_argument("--train", default=None, help="the generator's training images (enables the copy audit): a folder, or "
                   "the generator run's split_manifest.csv[:splits] (default splits: train,val)")
    p.add_argument("--extractor", default=None,
                   help="classifier:<ckpt> | inception | autoencoder:<ckpt> (required: no default downloads weights)")
    p.add_argument("--inception-weights", default=None,
                   help="local torch-fidelity Inception-v3 weights file for --extractor inception")
    p.add_argument("--lpips-weights", default=None, help="local torchvision backbone weights for LPIPS")
    p.add_argument("--lpips-net", default="alex", choices=("alex", "vgg", "squeeze"), help="LPIPS backbone (alex)")
    p.add_argument("--clip-model", default=None, help="local transformers CLIP folder for CLIP score")
    p.add_argument("--clip-prompt", default="a medical image of {class}",
                   help="prompt template for CLIP score when <fake>/metadata.parquet (or .csv) has no caption column")
    p.add_argument("--image-size", type=int, default=None,
                   help="evaluation size in px (default: the extractor's training size; inception 299)")
    p.add_argument("--max-images", type=int, default=None, help="seeded random subset of at most N images per set")
    p.add_argument("--seed", type=int, default=0, help="seed of subsets, random pairs and KID subsets (0)")
    p.add_argument("--k", type=int, default=DEFAULT_K, help=f"neighbours of the k-NN manifolds ({DEFAULT_K})")
    p.add_argument("--bootstrap-rounds", type=int, default=DEFAULT_ROUNDS,
                   help=f"seeded bootstrap rounds of every 95 %% interval ({DEFAULT_ROUNDS}; 0: no intervals)")
    p.add_argument("--resize-mode", default="pad", choices=("pad", "stretch", "crop"), help="as the DataModules (pad)")
    p.add_argument("--batch-size", type=int, default=64, help="feature-extraction batch size (64)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    p.add_argument("--out", default=None, help="output folder (default logs/evaluate/<time>); a folder that "
                   "already holds files is never reused: a new sibling is made")
    return p


def resolve_out_dir(out: str | None) -> Path:
    """`--out` or logs/evaluate/<time>; an existing non-empty folder gets a new sibling `<name>_<n>`."""
    base = Path(out) if out else Path("logs") / "evaluate" / datetime.now().strftime("%Y%m%d-%H%M%S")
    return fresh_out_dir(base)


def _check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.k < 1:
        parser.error(f"--k {args.k} must be >= 1")
    if args.bootstrap_rounds < 0:
        parser.error(f"--bootstrap-rounds {args.bootstrap_rounds} must be >= 0")
    if args.image_size is not None and args.image_size < 16:
        parser.error(f"--image-size {args.image_size} must be >= 16")
    if args.batch_size < 1:
        parser.error(f"--batch-size {args.batch_size} must be >= 1")
    from synthmed.evaluate.images import split_manifest_spec

    for option in ("real", "fake", "train"):
        folder = getattr(args, option)
        if folder is None:
            continue
        manifest = split_manifest_spec(folder)
        if manifest is not None and not manifest[0].is_file():
            parser.error(f"--{option} {manifest[0]} does not exist (a split manifest: run_dir/split_manifest.csv[:splits])")
        if manifest is None and not Path(folder).is_dir():
            parser.error(f"--{option} {folder} is not a folder (or a run's split_manifest.csv[:splits])")


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(args, parser)

    from synthmed.evaluate.extractors import ExtractorError, build_extractor
    from synthmed.evaluate.images import ImageSetError
    from synthmed.evaluate.perceptual import PerceptualError
    from synthmed.evaluate.pipeline import EvaluateOptions, evaluate
    from synthmed.evaluate.report import console_metrics_table, write_reports
    from synthmed.runs import environment_record

    opts = EvaluateOptions(**{k: v for k, v in vars(args).items() if k != "out"})
    staging = None
    try:
        # validate everything that can fail before creating the output folder
        extractor = build_extractor(opts.extractor, opts.inception_weights)
        staging = resolve_out_dir(args.out)
        record = evaluate(opts, staging, extractor)
    except (ExtractorError, ImageSetError, PerceptualError, ValueError) as exc:
        print(f"synthmed evaluate: error: {exc}", file=sys.stderr)
        if staging is not None and staging.is_dir() and not any(staging.iterdir()):
            staging.rmdir()
        return 2
    record["command"] = "synthmed evaluate " + " ".join(argv)
    write_reports(record, staging)
    (staging / "env.json").write_text(json.dumps(environment_record(), indent=2) + "\n")
    print(console_metrics_table(record))  # evaluation.md in the run folder has every column
    print(f"run_dir: {staging}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
