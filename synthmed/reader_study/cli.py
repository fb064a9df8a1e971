"""``synthmed reader-study {create,serve,report}``: the command line of the reader study.

    create --real DIR --fake DIR [--per-source N] [--seed S] [--size PX] [--mode L|RGB]
           [--readers ID,ID,...] --out STUDY.sqlite
    add-readers STUDY.sqlite --readers ID,ID,...
    serve  STUDY.sqlite [--host 127.0.0.1] [--port 8765] [--allowed-host NAME ...]
           [--open-registration]
    report STUDY.sqlite [--out DIR] [--top N]

``--readers`` creates each reader with a generated passcode and prints the passcodes once
(they are stored only as salted hashes): hand each reader theirs.
"""

from __future__ import annotations

import argparse
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
    create.add_argument("--readers", type=_reader_list, default=[],
                        help="comma-separated reader ids to create, each with a generated "
                             "passcode that is printed once")
    create.add_argument("--out", required=True, help="new study file (never overwritten)")

    add = sub.add_parser("add-readers", help="create readers with generated passcodes")
    add.add_argument("study", help="study file made by `create`")
    add.add_argument("--readers", type=_reader_list, required=True,
                     help="comma-separated reader ids")

    serve = sub.add_parser("serve", help="run the voting page")
    serve.add_argument("study", help="study file made by `create`")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default localhost only)")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--allowed-host", action="append", default=[], metavar="NAME[:PORT]",
                       help="another host name readers reach the server under (repeatable); "
                            "requests naming any other host are refused (DNS rebinding)")
    serve.add_argument("--open-registration", action="store_true",
                       help="let unknown reader ids sign up with a passcode of their own "
                            "(default: only readers made with --readers sign in)")

    report = sub.add_parser("report", help="write the results (Markdown, CSV, PNG)")
    report.add_argument("study", help="study file made by `create`")
    report.add_argument("--out", default=None,
                        help="report folder (default: <study>_report next to the study)")
    report.add_argument("--top", type=int, default=16,
                        help="synthetic images shown in the taken-for-real contact sheet")
    return parser


def _reader_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _print_passcodes(passcodes: dict[str, str]) -> None:
    if not passcodes:
        return
    print("readers (passcodes are shown only now; hand each reader theirs):")
    for reader_id, passcode in passcodes.items():
        print(f"  reader {reader_id}  passcode {passcode}")


def _add_readers(study, reader_ids: list[str]) -> dict[str, str]:
    from . import db

    with db.connection(study) as conn:
        return db.add_readers_with_passcodes(conn, reader_ids)


def main(argv: list[str]) -> int:
    """Run one reader-study command; returns the exit status."""
    args = _parser().parse_args(argv)
    # imports per command: `serve` must start fast and never load the plotting stack
    from .db import StudyFileError

    try:
        if args.command == "create":
            from .create import create_study

            from .db import check_new_reader_ids

            check_new_reader_ids(args.readers)  # before the (slow) build, not after it
            out = create_study(args.real, args.fake, args.out, per_source=args.per_source,
                               seed=args.seed, size=args.size, mode=args.mode)
            _print_passcodes(_add_readers(out, args.readers))
            print(f"out: {out}")
        elif args.command == "add-readers":
            _print_passcodes(_add_readers(args.study, args.readers))
        elif args.command == "serve":
            from .app import make_app, serve
            from .hosts import is_loopback

            if not 1 <= args.port <= 65535:
                raise ValueError(f"--port must be 1..65535, got {args.port}")
            # fails here, with a clear message, on a bad study file or host setting
            make_app(args.study, host=args.host, port=args.port,
                     allowed_hosts=args.allowed_host)
            if not is_loopback(args.host):
                print(f"warning: --host {args.host} makes the study reachable from other "
                      "machines; the page has no TLS", file=sys.stderr)
            from . import db
            from .hosts import allowed_host_names

            with db.connection(args.study) as conn:
                n_readers = conn.execute("SELECT COUNT(*) FROM readers").fetchone()[0]
            if not n_readers and not args.open_registration:
                print(f"warning: {args.study} has no readers yet, so nobody can sign in: "
                      f"add some with `synthmed reader-study add-readers {args.study} "
                      "--readers ID,ID` (or serve with --open-registration)", file=sys.stderr)
            names = ", ".join(allowed_host_names(args.host, args.allowed_host))
            print(f"serving {args.study} at http://{args.host}:{args.port}/ for host names "
                  f"{names} (Ctrl+C stops)", flush=True)
            serve(args.study, host=args.host, port=args.port, allowed_hosts=args.allowed_host,
                  open_registration=args.open_registration)
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
