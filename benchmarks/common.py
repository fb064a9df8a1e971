"""What every benchmark shares: options, the machine record, interleaved repeats, the Markdown report.

The machine these run on is often shared (another training job at the same time), so every
comparison runs its two sides interleaved (A, B, A, B, ...) and reports the median of each side:
a slow drift of the background load then hits both sides alike. The load average is printed
before and after, so a reader can judge how noisy the numbers are.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # the checkout's packages, also when run from another folder
    sys.path.insert(0, str(REPO_ROOT))

from synthmed.offline import configure_offline  # noqa: E402

configure_offline()

import torch  # noqa: E402

PRECISIONS = ("32", "bf16-mixed")


# ---- options ---------------------------------------------------------------------------------
def add_common_args(parser: argparse.ArgumentParser, repeats: int = 3) -> argparse.ArgumentParser:
    """--device, --precision, --threads, --repeats, --seed: the same meaning in every script."""
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                        help="cpu (default), cuda, or auto (cuda when available)")
    parser.add_argument("--precision", choices=PRECISIONS, default="32",
                        help="32 (float32) or bf16-mixed (autocast to bfloat16), the same on both sides")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads for both sides (default: torch's current setting, "
                             "which follows OMP_NUM_THREADS)")
    parser.add_argument("--repeats", type=int, default=repeats,
                        help=f"interleaved repeats of each side; the median is reported (default {repeats})")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible here (torch.cuda.is_available() is False); "
                         "use --device cpu or auto")
    return torch.device(name)


def apply_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count (both sides of a comparison run in this one process)."""
    if threads is not None:
        if threads < 1:
            raise SystemExit(f"--threads {threads}: must be >= 1")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def begin(title: str, argv: list[str], args: argparse.Namespace) -> tuple[torch.device, "Report", int]:
    """Resolve --device, apply --threads and open the report; returns the thread count to restore."""
    device = resolve_device(args.device)
    threads_before = torch.get_num_threads()
    apply_threads(args.threads)
    return device, Report(title, argv, device, args.precision), threads_before


def check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise SystemExit(f"--{name.replace('_', '-')} {value}: must be >= 1")


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """The autocast region Lightning's `bf16-mixed` opens around a step; a no-op for 32."""
    if precision == "bf16-mixed":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a clock read means the work is done (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now(device: torch.device) -> float:
    synchronize(device)
    return time.perf_counter()


# ---- interleaving ----------------------------------------------------------------------------
def interleave(sides: dict[str, Callable[[int], Any]], repeats: int) -> dict[str, list[Any]]:
    """Call each side once per round (A, B, A, B, ...); side(r) gets the round number r.

    The order within a round alternates (A B, then B A, ...) so neither side always runs
    right after the other one's warm caches or allocations.
    """
    results: dict[str, list[Any]] = {name: [] for name in sides}
    names = list(sides)
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            results[name].append(sides[name](r))
    return results


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float], digits: int = 1) -> str:
    """'min..max' of the repeats, so a reader sees the noise behind a median."""
    return f"{min(values):.{digits}f}..{max(values):.{digits}f}" if len(values) > 1 else "-"


# ---- machine record and report -----------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def code_state() -> str:
    from synthmed.runs import git_state

    state = git_state(REPO_ROOT)
    if not state.get("commit"):
        return "not a git checkout"
    return f"git {state['commit'][:12]}" + (" + uncommitted changes" if state.get("dirty") else "")


def machine_lines(device: torch.device, precision: str) -> list[str]:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none used"
    return [f"- code: {code_state()}",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores; torch threads: {torch.get_num_threads()}",
        f"- torch {torch.__version__}; device: {device.type} (GPU: {gpu}); precision: {precision}",
        f"- Python {platform.python_version()}, {platform.platform()}",
    ]


class Report:
    """Collects the header, tables and notes of one benchmark run and prints them as Markdown.

    The printed block is what RESULTS.md holds: command, date, machine, load average before and
    after, then the tables.
    """

    def __init__(self, title: str, argv: Sequence[str], device: torch.device, precision: str):
        self.title = title
        self.argv = list(argv)
        self.device, self.precision = device, precision
        self.started = datetime.now(timezone.utc)
        self.load_before = load_average()
        self.start_clock = time.perf_counter()
        self.blocks: list[str] = []

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
        self.blocks.append("\n".join(lines))

    def note(self, text: str) -> None:
        self.blocks.append(text)

    def render(self, module: str) -> str:
        elapsed = time.perf_counter() - self.start_clock
        command = " ".join(["python -m", module, *(shlex.quote(a) for a in self.argv)])
        head = [f"### {self.title}", "", f"- command: `{command}`",
                f"- date: {self.started.strftime('%Y-%m-%d %H:%M UTC')}; wall time {elapsed:.0f} s",
                *machine_lines(self.device, self.precision),
                f"- load average (1/5/15 min) before: {self.load_before}; after: {load_average()}", ""]
        return "\n".join(head) + "\n" + "\n\n".join(self.blocks) + "\n"

    def print(self, module: str) -> None:
        print(self.render(module), flush=True)


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}"
