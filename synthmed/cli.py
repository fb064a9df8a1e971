"""`synthmed`: LightningCLI for fit/validate/test/predict, plus extra verbs as small functions.

    synthmed fit --config experiments/quickstart/classifier.yaml [--config more.yaml] [--a.b value]
    synthmed cv --config experiments/nafi2024_tstr/classifier_real.yaml --folds 5
    synthmed <verb> ...            (see EXTRA_VERBS)

Adding a non-Trainer verb = write `main(argv: list[str]) -> int` in its own module and add one
line to EXTRA_VERBS. Verbs are imported only when called, so `synthmed reader-study serve` does
not pay for importing Lightning. Every verb ends by printing `run_dir: <path>` (writers: `out:`).
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable

from synthmed.offline import configure_offline

# verb -> "module:function"; each function takes argv (list[str]) and returns an exit code.
EXTRA_VERBS: dict[str, str] = {
    "cv": "synthmed.cv:main",
    "make-phantoms": "synthmed.make_phantoms:main",
    "explain": "synthmed.explain:main",
    "reader-study": "synthmed.reader_study.cli:main",
    "export": "synthmed.export:main",
    "evaluate": "synthmed.evaluate.cli:main",
    "sweep": "synthmed.sweep.cli:main",
    "sweep-summary": "synthmed.sweep.summary:main",
    "reproduce": "synthmed.pipeline.runner:main",
}



def _load_verb(spec: str) -> Callable[[list[str]], int]:
    module, _, func = spec.partition(":")
    return getattr(importlib.import_module(module), func)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    configure_offline()  # before any verb imports a library that would phone home
    if argv and argv[0] in EXTRA_VERBS:
        return int(_load_verb(EXTRA_VERBS[argv[0]])(argv[1:]) or 0)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print("Trainer verbs: fit, validate, test, predict (synthmed fit --help).")
        print("Extra verbs: " + ", ".join(sorted(EXTRA_VERBS)))
        if not argv:
            return 2
    from synthmed.lightning_cli import run_trainer_verb

    run_trainer_verb(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
