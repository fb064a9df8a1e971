"""Shared fixtures: offline environment, small image trees made on the fly, ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

for _key, _value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                     "NO_ALBUMENTATIONS_UPDATE": "1", "MPLBACKEND": "Agg"}.items():
    os.environ.setdefault(_key, _value)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_dataset(name: str) -> Path:
    """Path of a dataset in ../shared/data, or skip the test saying what is missing."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"needs ../shared/data/{name} (not present at {path})")
    return path


def write_image(path: Path, value: int, size: tuple[int, int] = (20, 16), mode: str = "L", seed: int = 0) -> Path:
    """A small image whose mean brightness is `value` (so classes are separable), with noise."""
    rng = np.random.default_rng(seed)
    arr = np.clip(value + rng.normal(0, 10, size[::-1]), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr)
    if mode == "RGB":
        img = img.convert("RGB")
    elif mode == "RGBA":
        img = img.convert("RGBA")
    elif mode == "I;16":
        img = Image.fromarray(arr.astype(np.uint16) * 256)
    img.save(path)
    return path


@pytest.fixture
def make_tree(tmp_path):
    """make_tree({"a": 6, "b": 6}, sub="Training") -> root with class folders of distinct images."""

    def _make(counts: dict[str, int], root: Path | None = None, sub: str | None = None,
              ext: str = ".png", seed: int = 0) -> Path:
        root = root or tmp_path / "tree"
        base = root / sub if sub else root
        for c, (cls, n) in enumerate(sorted(counts.items())):
            for i in range(n):
                write_image(base / cls / f"{cls}_{i:03d}{ext}", 60 + 120 * c, seed=seed * 10_000 + c * 1000 + i)
        return root

    return _make


def _untracked_and_ignored(repo: Path) -> set[str] | None:
    import subprocess

    try:
        out = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=repo, capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {line[3:] for line in out.splitlines() if line[:2] in ("??", "!!")}


@pytest.fixture(scope="session", autouse=True)
def repository_is_left_clean():
    """The suite writes only into tmp dirs: nothing new may appear in the repository tree.

    Some tests run from the repository root (the YAMLs name paths relative to it); a smoke run
    that wrote a 1.8 GB checkpoint into ./checkpoints went unnoticed until CI's disk filled.
    """
    repo = Path(__file__).resolve().parents[1]
    harmless = ("__pycache__", ".pytest_cache", ".egg-info")
    before = _untracked_and_ignored(repo)
    yield
    after = _untracked_and_ignored(repo)
    if before is not None and after is not None:
        new = sorted(p for p in after - before if not any(h in p for h in harmless))
        assert not new, f"the test suite wrote into the repository: {new}"
