"""`synthmed make-phantoms OUT --per-class N --size S [--seed K]`: write the phantom ImageFolder tree.

The tree is `OUT/<class>/<class>_<i:05d>.png`, the same images `PhantomDataModule(seed=K,
image_size=S)` renders; their lesion masks go to `OUT_masks/<class>/<class>_<i:05d>_mask.png`, so
`OUT` holds only images (torchvision's ImageFolder counts 3 x N, not 6 x N) and the loaders and
`synthmed explain` find the masks there.
"""

from __future__ import annotations

import argparse
import sys
import time

from datamodules.phantom_generator import CLASS_NAMES, MIN_SIZE, write_phantom_tree


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synthmed make-phantoms", description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output folder (must not exist, or be empty)")
    parser.add_argument("--per-class", type=int, required=True, help="images per class")
    parser.add_argument("--size", type=int, default=64, help=f"side in pixels (>= {MIN_SIZE}; default 64)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        out = write_phantom_tree(args.out, per_class=args.per_class, size=args.size, seed=args.seed)
    except (FileExistsError, ValueError) as exc:
        print(f"make-phantoms: {exc}", file=sys.stderr)
        return 2
    total = args.per_class * len(CLASS_NAMES)
    print(f"wrote {total} phantoms ({args.per_class} per class: {', '.join(CLASS_NAMES)}) at {args.size} px "
          f"with masks in {out.name}_masks/, seed {args.seed}, in {time.perf_counter() - start:.1f} s")
    print(f"out: {out.resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
