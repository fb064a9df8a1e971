"""``synthmed reader-study {create,serve,report}``: the command line of the reader study.

    create --real DIR --fake DIR [--per-source N] [--seed S] [--size PX] [--mode L|RGB]
           --out STUDY.sqlite
    serve  STUDY.sqlite [--host 127.0.0.1] [--port 8765]
    report STUDY.sqlite [--out DIR] [--top N]
"""

from __future__ import annotations

import argparse
import ipaddress
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synthmed reader-study",
        description="Blinded real-vs-synthetic reader study: create a study file, serve the "
                    "voting page, report the results.")
    sub = parser.add_subparsers(dest="command", required=True)

    create = sub.add_parser("create", help="draw a balanced, blinded image set into a new "
                                           "study file")
    create.add_argument("--real", required=True, help="folder or ImageFolder tree of real "
                                                      "images")
    create.add_argument("--fake", required=True, help="folder or ImageFolder tree of "
                                                      "synthetic images")
    create.add_argument("--per-source", type=int, default=None,
                        help="images drawn from each source (default: as many as a "
                             "class-balanced draw allows)")
    create.add_argument("--seed", type=int, default=0, help="seed of the draw and order")
    create.add_argument("--size", type=int, default=256, help="side of the square images "
                                                              "readers see (pixels)")
    create.add_argument("--mode", choices=("L", "RGB"), default="L",
                        help="colour mode of every blinded image (L = greyscale)")
    create.add_argument("--out", required=True, help="new study file (never overwritten)")

    serve = sub.add_parser("serve", help="run the voting page")
    serve.add_argument("study", help="study file made by `create`")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default localhost only)")
    serve.add_argument("--port", type=int, default=8765)

    report = sub.add_parser("report", help="write the results (Markdown, CSV, PNG)")
    report.add_argument("study", help="study file made by `create`")
    report.add_argument("--out", default=None,
                        help="report folder (default: <study>_report next to the study)")
    report.add_argument("--top", type=int, default=16,
                        help="synthetic images shown in the taken-for-real contact sheet")
    return parser


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str]) -> int:
    """Run one reader-study command; returns the exit status."""
    args = _parser().parse_args(argv)
    # imports per command: `serve` must start fast and never load the plotting stack
    from .db import StudyFileError

    try:
        if args.command == "create":
            from .create import create_study

            out = create_study(args.real, args.fake, args.out, per_source=args.per_source,
                               seed=args.seed, size=args.size, mode=args.mode)
            print(f"out: {out}")
        elif args.command == "serve":
            from .app import make_app, serve

            if not 1 <= args.port <= 65535:
                raise ValueError(f"--port must be 1..65535, got {args.port}")
            make_app(args.study)  # fails here, with a clear message, on a bad study file
            if not _is_loopback(args.host):
                print(f"warning: --host {args.host} makes the study reachable from other "
                      "machines; the page has no TLS", file=sys.stderr)
            print(f"serving {args.study} at http://{args.host}:{args.port}/ (Ctrl+C stops)",
                  flush=True)
            serve(args.study, host=args.host, port=args.port)
        else:
            from .report import write_report

            if args.top < 1:
                raise ValueError(f"--top must be >= 1, got {args.top}")
            out = write_report(args.study, args.out, top=args.top)
            print(f"report: {out / 'reader_study_report.md'}")
            print(f"out: {out}")
    except (StudyFileError, ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
