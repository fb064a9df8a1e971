"""Reading checkpoint and weight files without running code from them.

Every place in `lightning_modules/` and `synthmed/export.py` that reads a file a user named
(`export --ckpt`, `model.init_args.autoencoder_ckpt`, `model.init_args.pretrained`, the latent
disk cache) goes through `load_checkpoint` or `load_weights`. They use `torch.load(...,
weights_only=True)` (tensors, containers and plain Python values only: a pickled object whose
`__reduce__` runs a command is refused, not run) or safetensors, and turn what goes wrong into a
`CheckpointError` that names the file, the option it came from, what the file looks like and what
was expected: a missing file, a text file, a truncated download, a file that holds Python objects.

Lightning's own checkpoints of our modules need no extra globals (measured by saving real
checkpoints of every module with EMA, StepCheckpoint and the LR scheduler: tests/
test_checkpoint_safety.py), so `SAFE_GLOBALS` is empty on purpose: add a class there only when a
real checkpoint of ours needs it, never to make a foreign file load.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

# Globals that torch's weights_only unpickler may build, beyond its own allow-list (see above).
SAFE_GLOBALS: list[Any] = []

_ZIP_MAGIC = b"PK\x03\x04"


class CheckpointError(ValueError):
    """A checkpoint/weights file that cannot be used: the message names the file, the option and the reason."""


def _describe(path: Path) -> str:
    """What the first bytes of `path` look like, for error messages."""
    head = path.read_bytes()[:64]
    if not head:
        return "an empty file"
    if head.startswith(_ZIP_MAGIC):
        return "a zip archive"
    if head[:1] == b"\x80":
        return "a pickle"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data that is neither a PyTorch zip archive nor a pickle"
    first = text.splitlines()[0] if text.strip() else ""
    return f"a text file (starts with {first[:40]!r})"


def _check_readable(path: Path, option: str, expected: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{option}={str(path)!r}: no such file (expected {expected})")
    kind = _describe(path)
    if kind == "a zip archive":
        if not zipfile.is_zipfile(path):
            raise CheckpointError(f"{option}={str(path)!r} is a truncated or damaged zip archive "
                                  f"({path.stat().st_size} bytes; its end is missing): not a complete {expected}. "
                                  "Was it still being written or copied? Use a complete copy")
        return
    if kind != "a pickle":  # torch.save has written zip archives since PyTorch 1.6; old files are pickles
        raise CheckpointError(f"{option}={str(path)!r} is {kind}, not {expected} (a file written by torch.save "
                              "or Lightning)")


def load_checkpoint(path: str | os.PathLike, option: str, expected: str = "a Lightning checkpoint") -> Any:
    """`torch.load(path, weights_only=True)` with errors that say what the file is and what was expected.

    `option` is how the user gave the file (e.g. "--ckpt", "model.init_args.autoencoder_ckpt").
    """
    path = Path(path).expanduser()
    _check_readable(path, option, expected)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        blocked = next((line.strip() for line in str(err).splitlines() if "GLOBAL" in line), str(err)[:200])
        raise CheckpointError(
            f"{option}={str(path)!r} holds Python objects that would run code when loaded ({blocked}); synthmed "
            f"loads {expected} only with torch.load(weights_only=True) and refused it. If you made this file "
            "yourself, save plain tensors instead: torch.save(model.state_dict(), path) or safetensors") from None
    except (RuntimeError, EOFError, KeyError, ValueError) as err:
        raise CheckpointError(f"{option}={str(path)!r} could not be read as {expected} ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200]}); is it complete and written by torch.save?") from None


def load_weights(path: str | os.PathLike, option: str) -> Any:
    """A `.safetensors` file as a name -> tensor dict, anything else through `load_checkpoint`."""
    path = Path(path).expanduser()
    if path.suffix != ".safetensors":
        return load_checkpoint(path, option, expected="a weights file (.pth/.pt/.ckpt/.safetensors)")
    if not path.is_file():
        raise FileNotFoundError(f"{option}={str(path)!r}: no such file (expected a .safetensors weights file)")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{option}={str(path)!r} is not a readable safetensors file ({err})") from None


def checkpoint_class_path(checkpoint: dict[str, Any]) -> str | None:
    """The LightningModule class a checkpoint was written by, when it says (LightningCLI saves `_class_path`)."""
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    value = hparams.get("_class_path") if isinstance(hparams, dict) else None
    return value if isinstance(value, str) else None


def _guess_writer(checkpoint: dict[str, Any]) -> str | None:
    """Which of our modules wrote a checkpoint made outside the CLI (no `_class_path`), from its contents."""
    hparams = checkpoint.get("hyper_parameters") or {}
    if "synthmed_diffusion" in checkpoint:
        return str(checkpoint["synthmed_diffusion"].get("module", "diffusion module"))
    if "arch" in hparams:
        return "ClassifierModule"
    if "latent_channels" in hparams and "block_out_channels" in hparams:
        return "AutoencoderModule"
    return None


def require_module_checkpoint(checkpoint: Any, path: str | os.PathLike, option: str, marker: str,
                              expected: str) -> dict[str, Any]:
    """`checkpoint` as a dict holding `marker`, or a CheckpointError saying what it holds instead."""
    if isinstance(checkpoint, dict) and marker in checkpoint:
        return checkpoint
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        found = f"a {type(checkpoint).__name__}" + (f" with keys {sorted(map(str, checkpoint))[:6]}"
                                                     if isinstance(checkpoint, dict) else "")
        raise CheckpointError(f"{option}={str(path)!r} is not a Lightning checkpoint (it holds {found}); "
                              f"expected {expected}")
    writer = checkpoint_class_path(checkpoint) or _guess_writer(checkpoint)
    what = f"a {writer.rsplit('.', 1)[-1]} checkpoint" if writer else "a Lightning checkpoint of another module"
    raise CheckpointError(f"{option}={str(path)!r} is {what}, not {expected}")


def check_checkpoint_for_model(path: str | os.PathLike, model_class: type | None,
                               option: str = "--ckpt_path") -> dict[str, Any] | None:
    """Refuse a `--ckpt_path` file that cannot be read safely or was written by another kind of module.

    Called by the CLI before Lightning reads the checkpoint's hyper-parameters: Lightning would
    otherwise swap the YAML's model for the checkpoint's class (a classifier checkpoint given to a
    generator YAML became a classifier run that failed far from the cause) or print a traceback
    for a truncated file. "last"/"best" and paths that do not exist are left to Lightning (None);
    otherwise returns the checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        return None
    expected = f"a checkpoint of a {model_class.__name__} run" if model_class is not None else "a Lightning checkpoint"
    checkpoint = load_checkpoint(path, option, expected=expected)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        require_module_checkpoint(checkpoint, path, option, marker="state_dict", expected=expected)
    writer = checkpoint_class_path(checkpoint) or _guess_writer(checkpoint)
    if model_class is None or writer is None:
        return checkpoint
    writer_name = writer.rsplit(".", 1)[-1]
    if writer_name not in {cls.__name__ for cls in model_class.__mro__}:
        raise CheckpointError(f"{option}={str(path)!r} is a {writer_name} checkpoint, but this config's model is "
                              f"{model_class.__name__}: give {expected} (its checkpoints/*.ckpt), or the config "
                              f"that trained this {writer_name}")
    return checkpoint
