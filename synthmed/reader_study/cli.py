"""``synthmed reader-study {create,serve,report}``: the command line of the reader study.

    create [--mode real-vs-synthetic] --real DIR --fake DIR [--per-source N] [--seed S]
           [--size PX] [--colour L|RGB] [--readers ID,ID,...]
           [--background ID:SPECIALTY:YEARS:yes|no ...] --out STUDY.sqlite
    create --mode synthetic-only --fake DIR [--per-source N] ... --out STUDY.sqlite
    add-readers STUDY.sqlite [--readers ID,ID,...] [--background ID:SPECIALTY:YEARS:yes|no ...]
    serve  STUDY.sqlite [--host 127.0.0.1] [--port 8765] [--allowed-host NAME ...]
           [--open-registration]
    report STUDY.sqlite [--out DIR] [--top N] [--paper seed001|FILE.yaml|FILE.json]

``--readers`` creates each reader with a generated passcode and prints the passcodes once
(they are stored only as salted hashes): hand each reader theirs.

``--mode synthetic-only`` is seed 001's own protocol: "Every image we showed the specialists
was artificial", and they answered "real, phony, or unclear" with notes. Each reader's
background (specialty, years, familiar with generative AI) is given with ``--background`` or
asked once at the first sign-in. Every command takes all its inputs as options and never
prompts, so a pipeline stage can run it. ``--mode L|RGB`` (the colour mode, before
``--colour`` existed) is still accepted.
"""

from __future__ import annotations

import argparse
import sys

from .db import STUDY_MODES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synthmed reader-study",
        description="Blinded reader study (real-vs-synthetic, or seed 001's synthetic-only "
                    "protocol): create a study file, serve the voting page, report the "
                    "results.")
    sub = parser.add_subparsers(dest="command", required=True)

    create = sub.add_parser("create", help="draw a balanced, blinded image set into a new "
                                           "study file")
    create.add_argument("--mode", "--study-mode", dest="study_mode",
                        choices=(*STUDY_MODES, "L", "RGB"), default=STUDY_MODES[0],
                        help="real-vs-synthetic (default): balanced real and synthetic images; "
                             "synthetic-only: seed 001's protocol, only --fake images, answers "
                             "real / phony / unclear. (L / RGB: old spelling of --colour)")
    create.add_argument("--real", default=None, help="folder or ImageFolder tree of real "
                                                     "images (real-vs-synthetic mode only)")
    create.add_argument("--fake", required=True, help="folder or ImageFolder tree of "
                                                      "synthetic images")
    create.add_argument("--per-source", type=int, default=None,
                        help="images drawn from each source, i.e. in synthetic-only mode the "
                             "number of images (default: as many as a class-balanced draw "
                             "allows)")
    create.add_argument("--seed", type=int, default=0, help="seed of the draw and order")
    create.add_argument("--size", type=int, default=256, help="side of the square images "
                                                              "readers see (pixels)")
    create.add_argument("--colour", choices=("L", "RGB"), default=None,
                        help="colour mode of every blinded image (default L = greyscale)")
    create.add_argument("--readers", type=_reader_list, default=[],
                        help="comma-separated reader ids to create, each with a generated "
                             "passcode that is printed once")
    create.add_argument("--background", action="append", default=[],
                        metavar="ID:SPECIALTY:YEARS:yes|no",
                        help="a --readers reader's specialty, years of experience and whether "
                             "they know generative AI (repeatable)")
    create.add_argument("--out", required=True, help="new study file (never overwritten)")

    add = sub.add_parser("add-readers", help="create readers with generated passcodes")
    add.add_argument("study", help="study file made by `create`")
    add.add_argument("--readers", type=_reader_list, default=[],
                     help="comma-separated reader ids")
    add.add_argument("--background", action="append", default=[],
                     metavar="ID:SPECIALTY:YEARS:yes|no",
                     help="background of a reader named in --readers or already in the study "
                          "(repeatable; replaces an earlier one)")

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
    report.add_argument("--paper", default=None, metavar="seed001|FILE",
                        help="synthetic-only studies: print these per-specialist counts of a "
                             "paper beside the study's (built in: seed001; or a YAML / JSON "
                             "file, see paper_counts.py)")
    return parser


def _reader_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _print_passcodes(passcodes: dict[str, str]) -> None:
    if not passcodes:
        return
    print("readers (passcodes are shown only now; hand each reader theirs):")
    for reader_id, passcode in passcodes.items():
        print(f"  reader {reader_id}  passcode {passcode}")


def _parse_backgrounds(texts: list[str], known_ids: set[str]) -> dict:
    """--background options as {reader id: background}, checked against ``known_ids``."""
    from .background import parse_owner_background

    parsed = {}
    for text in texts:
        reader_id, background = parse_owner_background(text)
        if reader_id in parsed:
            raise ValueError(f"--background names reader {reader_id!r} twice")
        if reader_id not in known_ids:
            raise ValueError(f"--background names reader {reader_id!r}, who is neither in "
                             "--readers nor in the study")
        parsed[reader_id] = background
    return parsed


def _add_readers(study, reader_ids: list[str], backgrounds: list[str] = ()) -> dict[str, str]:
    from . import db
    from .background import save_background

    with db.connection(study) as conn:
        existing = {r[0] for r in conn.execute("SELECT reader_id FROM readers")}
        parsed = _parse_backgrounds(list(backgrounds), existing | set(reader_ids))
        passcodes = db.add_readers_with_passcodes(conn, reader_ids)
        for reader_id, background in parsed.items():
            save_background(conn, reader_id, background)
    return passcodes


def main(argv: list[str]) -> int:
    """Run one reader-study command; returns the exit status."""
    args = _parser().parse_args(argv)
    # imports per command: `serve` must start fast and never load the plotting stack
    from .db import StudyFileError

    try:
        if args.command == "create":
            from .create import create_study, create_synthetic_only_study

            from .db import check_new_reader_ids

            study_mode, colour = args.study_mode, args.colour
            if study_mode in ("L", "RGB"):  # the old spelling of --colour
                if colour is not None and colour != study_mode:
                    raise ValueError(f"--mode {study_mode} and --colour {colour} disagree")
                study_mode, colour = STUDY_MODES[0], study_mode
            colour = colour or "L"
            # all checks before the (slow) build, not after it
            check_new_reader_ids(args.readers)
            _parse_backgrounds(args.background, set(args.readers))
            if study_mode == "synthetic-only":
                if args.real is not None:
                    raise ValueError("--mode synthetic-only shows only synthetic images (seed "
                                     "001: \"Every image we showed the specialists was "
                                     "artificial\"); leave out --real")
                out = create_synthetic_only_study(args.fake, args.out, n_images=args.per_source,
                                                  seed=args.seed, size=args.size, mode=colour)
            else:
                if args.real is None:
                    raise ValueError("--mode real-vs-synthetic needs --real DIR (or use "
                                     "--mode synthetic-only)")
                out = create_study(args.real, args.fake, args.out, per_source=args.per_source,
                                   seed=args.seed, size=args.size, mode=colour)
            _print_passcodes(_add_readers(out, args.readers, args.background))
            print(f"out: {out}")
        elif args.command == "add-readers":
            if not args.readers and not args.background:
                raise ValueError("add-readers needs --readers ID,ID and/or --background ...")
            _print_passcodes(_add_readers(args.study, args.readers, args.background))
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
            paper = None
            if args.paper is not None:
                from .paper_counts import load_paper_counts

                paper = load_paper_counts(args.paper)
            out = write_report(args.study, args.out, top=args.top, paper=paper)
            print(f"report: {out / 'reader_study_report.md'}")
            print(f"out: {out}")
    except (StudyFileError, ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
