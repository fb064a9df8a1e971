"""Albumentations pipelines declared in YAML.

    train_transforms:
      - {name: HorizontalFlip, p: 0.5}
      - {name: Affine, rotate: [-10, 10], scale: [0.9, 1.1], p: 0.5}
      - {name: RandomBrightnessContrast, p: 0.3}

Each entry names an `albumentations` transform and its keyword arguments. Masks, when present,
follow the geometric transforms.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # it phones home on import otherwise

import albumentations as A  # noqa: E402


def build_augmentation(spec: list[dict[str, Any]], seed: int | None = None) -> A.Compose:
    """The albumentations pipeline of `spec`; `seed` fixes its own random sequence (None: OS entropy)."""
    transforms = []
    for i, entry in enumerate(spec):
        if not isinstance(entry, dict) or "name" not in entry:
            raise ValueError(f"data.train_transforms[{i}] must be a mapping with a 'name' key, got {entry!r}")
        kwargs = {k: v for k, v in entry.items() if k != "name"}
        cls = getattr(A, entry["name"], None)
        if cls is None:
            raise ValueError(f"data.train_transforms[{i}]: albumentations has no transform {entry['name']!r}")
        try:
            transforms.append(cls(**kwargs))
        except TypeError as exc:
            raise ValueError(f"data.train_transforms[{i}] ({entry['name']}): {exc}") from exc
    return A.Compose(transforms, seed=seed)
