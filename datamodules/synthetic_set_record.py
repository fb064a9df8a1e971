"""`synthetic_set.json`: what a synthetic-set folder was generated with, so one folder holds one set.

`GenerationDataModule.setup` writes it into `output_dir` before the first image and, on every
later `predict` into the same folder, compares it with the new request: the sha256 of the
generator checkpoint's weights (`datamodules.weights_digest`; the file's bytes name the run's
folders), the effective sampler / steps / guidance / eta (the model's own, or the data's overrides),
the seed, the classes and their prompts, image size and channels. Only an identical request resumes (raising `num_per_class` adds the missing indices of the same set);
anything else is refused before a file is touched, and so is a non-empty folder without the
record (a user's images, or a set of an older synthmed). Without it a rerun with other settings
mixed DDIM-2 and DDIM-5 images in one set, and a user's `benign/000000.png` was replaced.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RECORD_NAME = "synthetic_set.json"
FORMAT = 2  # 1: `checkpoint_sha256` was the checkpoint file's sha256; 2: its weights' (weights_digest)
GROWABLE = ("num_per_class",)  # may grow on a rerun: the new indices extend the same set
NOT_COMPARED = ("format", "checkpoint")  # the checkpoint's path may move; its weights' sha256 is compared


class SyntheticSetConflict(ValueError):
    """`output_dir` holds something other than this exact synthetic set; the message says what and how to proceed."""


def _listing(folder: Path, limit: int = 5) -> str:
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    more = f", ... ({len(names)} files)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    diffs = []
    for key in sorted(set(old) | set(new)):
        if key in NOT_COMPARED or old.get(key) == new.get(key):
            continue
        if key in GROWABLE and isinstance(old.get(key), int) and isinstance(new.get(key), int) and new[key] > old[key]:
            continue
        diffs.append(f"{key}: {old.get(key)!r} in the folder, {new.get(key)!r} now")
    return diffs


def check_or_write_record(output_dir: Path, record: dict[str, Any], write: bool = True) -> str:
    """Refuse (`SyntheticSetConflict`) unless `output_dir` is empty, absent, or holds this same set.

    Returns "new" or "resume". With `write` (rank zero) the record is written (atomically) for a
    new set and updated when `num_per_class` grew.
    """
    record = json.loads(json.dumps({"format": FORMAT, **record}, default=str))  # compare as it is stored
    path = output_dir / RECORD_NAME
    option = "data.init_args.output_dir"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SyntheticSetConflict(f"{path} cannot be read ({exc}); nothing was changed. Give a new "
                                       f"{option}, or delete {output_dir} to generate it again") from exc
        diffs = _differences(old, record)
        if diffs and old.get("format", 1) < 2 and any(d.startswith("checkpoint_sha256:") for d in diffs):
            diffs.append("(this set was written by an older synthmed, whose checkpoint_sha256 hashed the "
                         "checkpoint file; it now hashes the weights, so the same generator reads as another)")
        if diffs:
            raise SyntheticSetConflict(
                f"{option}={output_dir} holds a synthetic set generated with other settings "
                f"({'; '.join(diffs)}; see {path}); adding images to it would mix two sets, so nothing was "
                f"changed. Give a new {option} to keep both, or delete {output_dir} to replace it")
        if write and record.get("num_per_class") != old.get("num_per_class"):
            _write(path, {**old, "num_per_class": record.get("num_per_class")})
        return "resume"
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        what = _listing(output_dir) if output_dir.is_dir() else "a file"
        raise SyntheticSetConflict(
            f"{option}={output_dir} is not empty ({what}) and has no {RECORD_NAME}, so it was not written by "
            f"synthmed predict with these settings; nothing was changed. Give an empty or new {option} "
            "(or move its files away)")
    if write:
        output_dir.mkdir(parents=True, exist_ok=True)
        _write(path, record)
    return "new"


def _write(path: Path, record: dict[str, Any]) -> None:
    # no leading dot and no ".tmp" in the name: GenerationDataModule.pending() removes such leftovers
    tmp = path.with_name(f"{path.name}.partial-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
