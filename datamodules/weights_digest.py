"""Which generator made a synthetic set: a SHA-256 of its checkpoint's weights, not of the file's bytes.

A Lightning checkpoint holds more than weights: hyper-parameters with paths (the LDM's
`autoencoder_ckpt`), ModelCheckpoint's `dirpath` and `best_model_path`, loop state. The same
training run into two output folders therefore writes checkpoints whose bytes differ while their
weights are equal. Synthetic PNGs used to carry the file's sha256 in a text chunk, so the same
pixels became other PNG bytes in each folder, the file-hash split units (`datamodules.splits`)
other names, and TSTR other folds (measured on the quickstart smoke: TSTR train/loss 1.1416 vs
1.1056 for the same seed).

`checkpoint_weights_sha256` hashes only what `predict` samples with: the checkpoint's
`state_dict` (under EMA that is the averaged model, which Lightning writes there), each tensor by
name, dtype, shape and raw bytes, in name order. It is what `synthetic_set.json`, the PNGs'
`synthmed_checkpoint_sha256` and the set's table call `checkpoint_sha256`. Written by hand because
no library hashes a state_dict: safetensors' serialisation would do, but it refuses tensors that
share storage (tied weights) and copies the whole model into memory first.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping

import torch


def state_dict_sha256(state_dict: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the tensors of `state_dict` (name, dtype, shape, bytes; names sorted)."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name]
        if not isinstance(tensor, torch.Tensor):
            continue  # e.g. a `_extra_state` entry; not a weight
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}\0{str(tensor.dtype)}\0{tuple(tensor.shape)}\0".encode())
        digest.update(flat.view(torch.uint8).numpy())  # raw bytes, also for bfloat16 (numpy has none)
    return digest.hexdigest()


def checkpoint_weights_sha256(path: str | os.PathLike) -> str:
    """`state_dict_sha256` of a checkpoint file's `state_dict` (a plain weights file: of the file's dict).

    Loaded memory-mapped and with `weights_only` (no code from the file runs).
    """
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # a pre-1.6 pickle checkpoint cannot be memory-mapped
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path}: holds a {type(checkpoint).__name__}, not a checkpoint dict; cannot tell "
                         "which generator weights it carries")
    state_dict = checkpoint.get("state_dict", checkpoint)
    return state_dict_sha256(state_dict)
