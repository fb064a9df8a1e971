"""The `reproduce` stage line: `=== stage i/N name`, time so far, the stage's step budget and an ETA.

The ETA comes from the stage's step budget when a rate is known: the same command's duration in
an earlier run of this pipeline folder (pipeline_state.json keeps it), scaled by the budget if
that changed. Otherwise the line says "no ETA" and the fit itself prints a line with its own ETA
every 30 s (lightning_modules.callbacks.progress_line).
"""

from __future__ import annotations

from lightning_modules.durations import format_seconds


def _option(argv: list[str], name: str) -> str | None:
    """The last value of `--name V` or `--name=V` in argv (the CLI's rule: the last one wins)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def step_budget(argv: list[str]) -> tuple[int | None, str]:
    """(training steps or None, a description) from a stage's --trainer.max_steps / max_epochs options."""
    steps, epochs = _option(argv, "--trainer.max_steps"), _option(argv, "--trainer.max_epochs")
    batches = _option(argv, "--trainer.limit_train_batches")
    folds = _option(argv, "--folds") if argv and argv[0] == "cv" else None
    per_fold = f" x {folds} folds" if folds else ""
    if steps is not None and steps.lstrip("-").isdigit() and int(steps) > 0:
        return int(steps) * int(folds or 1), f"{steps} steps{per_fold}"
    if epochs is not None and epochs.isdigit() and int(epochs) > 0:
        if batches is not None and batches.isdigit():  # an integer limit_train_batches is batches per epoch
            return int(epochs) * int(batches) * int(folds or 1), f"{epochs} epochs x {batches} batches{per_fold}"
        return None, f"up to {epochs} epochs{per_fold}"
    return None, ""


def stage_header(number: int, total: int, name: str, argv: list[str], elapsed_s: float,
                 earlier: dict | None = None) -> str:
    """The line printed when a stage starts; `earlier` is the stage's record from a previous run."""
    steps, budget = step_budget(argv)
    eta = "no ETA"
    if earlier and earlier.get("seconds") and earlier.get("argv") and earlier.get("status") != "failed":
        before, _ = step_budget(list(earlier["argv"]))
        if earlier["argv"] == argv:
            eta = f"ETA {format_seconds(float(earlier['seconds']))} (its earlier run)"
        elif steps and before:
            eta = f"ETA {format_seconds(float(earlier['seconds']) * steps / before)} (scaled from an earlier run)"
    parts = [f"{format_seconds(elapsed_s)} elapsed"] + ([f"budget {budget}"] if budget else []) + [eta]
    return f"=== stage {number}/{total} {name} ({', '.join(parts)})"
