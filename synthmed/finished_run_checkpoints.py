"""Shrink a finished run's checkpoints: weights-only best checkpoint(s), no resumable last.ckpt; or none.

A finished cv fold is never resumed (cv reuses a fold with a metrics.json), so the optimizer state
in its checkpoints and its `last.ckpt` only take disk: a 32-px quickstart left 1.7 GB, 12
ResNet-18 checkpoints of 134 MB (best + last per fold; Adam's two moments double the weights).
What is kept is what Lightning's `ModelCheckpoint(save_weights_only=True)` would have written
(weights, hyper-parameters, epoch/step and loop counters), so `Module.load_from_checkpoint`,
`synthmed explain`, `evaluate`'s classifier extractor and `runs.find_checkpoint` read it as before.
Lightning offers no "strip a saved checkpoint" call, hence these few lines.

Of a finished cross-validation, later stages read one checkpoint: the best fold's (`runs.best_fold_run`,
what a pipeline's `best_ckpt` names); `remove_checkpoints` deletes the other folds' (as scikit-learn's
`cross_validate` keeps no fitted estimator unless `return_estimator=True`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lightning_modules.checkpoint_io import load_checkpoint
from synthmed.runs import CHECKPOINT_DIR

# What `Trainer.save_checkpoint(weights_only=False)` adds beyond a weights-only checkpoint
# (lightning.pytorch.trainer.connectors.checkpoint_connector.dump_checkpoint); the precision plugin's
# state is stored under its class name, which AMP / bf16 runs add.
RESUME_ONLY_KEYS = ("optimizer_states", "lr_schedulers", "callbacks", "MixedPrecision", "HalfPrecision",
                    "DoublePrecision", "FSDPPrecision", "DeepSpeedPrecision")


def strip_to_weights(path: Path) -> int:
    """Rewrite `path` without its resume-only state (atomically); returns the bytes saved (0: nothing to strip)."""
    checkpoint = load_checkpoint(path, option=str(path))
    if not isinstance(checkpoint, dict) or not any(key in checkpoint for key in RESUME_ONLY_KEYS):
        return 0
    before = path.stat().st_size
    for key in RESUME_ONLY_KEYS:
        checkpoint.pop(key, None)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)
    return before - path.stat().st_size


def remove_checkpoints(run_dir: str | Path) -> tuple[int, list[str]]:
    """Delete every checkpoint of a finished run (`checkpoints/*.ckpt`, Lightning's `hpc_ckpt_*.ckpt`).

    For the cv folds that downstream stages do not read (`synthmed cv --keep-fold-checkpoints best`):
    their metrics.json, test_predictions.csv, split manifest and TensorBoard events stay. Returns
    (bytes freed, the names removed); a symlink counts 0 bytes (its target is counted when it is removed).
    """
    run_dir = Path(run_dir)
    freed, removed = 0, []
    for path in sorted([*(run_dir / CHECKPOINT_DIR).glob("*.ckpt"), *run_dir.glob("hpc_ckpt_*.ckpt")]):
        freed += 0 if path.is_symlink() else path.stat().st_size
        path.unlink()
        removed.append(path.name)
    return freed, removed


def slim_finished_run(run_dir: str | Path, keep_last: bool = False) -> tuple[int, list[str]]:
    """Weights-only best checkpoints and (unless `keep_last`) no `last*.ckpt` in `<run_dir>/checkpoints`.

    With `keep_last` the last.ckpt stays as it is (resumable). Returns (bytes freed, what was done
    to which file). A last.ckpt that is the only
    checkpoint (a run without a monitored ModelCheckpoint) is kept, stripped, since it is then the
    run's best checkpoint too.
    """
    ckpts = Path(run_dir) / CHECKPOINT_DIR
    if not ckpts.is_dir():
        return 0, []
    freed, touched = 0, []
    files = sorted(ckpts.glob("*.ckpt"))
    best = [p for p in files if not p.name.startswith("last")]
    for path in files:
        if path.name.startswith("last") and keep_last:
            continue  # kept as it is: resumable (`fit --ckpt_path last` extends the fold)
        if path.name.startswith("last") and best:
            freed += path.stat().st_size
            path.unlink()
            touched.append(f"removed {path.name}")
            continue
        saved = strip_to_weights(path)
        if saved:
            freed += saved
            touched.append(f"weights only: {path.name}")
    return freed, touched
