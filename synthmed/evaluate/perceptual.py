"""LPIPS and CLIP score (torchmetrics), computed only from local weights; otherwise "not computed".

Nothing here downloads. LPIPS needs the torchvision backbone weights file (`--lpips-weights`,
e.g. `alexnet-owt-7be5be79.pth`); its linear calibration layers ship inside torchmetrics. CLIP
score needs a local transformers CLIP folder (`--clip-model DIR`: config, weights, tokenizer and
image-processor files). When an input is missing the result is
a `results.not_computed` result with the reason, never a number.
"""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from pathlib import Path

import torch

LPIPS_BACKBONES = {"alex": ("alexnet", "AlexNet_Weights"), "vgg": ("vgg16", "VGG16_Weights"),
                   "squeeze": ("squeezenet1_1", "SqueezeNet1_1_Weights")}
CAPTION_COLUMNS = ("caption", "text_caption", "prompt")


class PerceptualError(ValueError):
    """A given LPIPS/CLIP weights path is unusable; the message names the option."""


@contextlib.contextmanager
def _hub_dir_with(file: Path, expected_name: str):
    """A temporary torch.hub dir whose checkpoints/ holds `file` under the name torchvision looks for."""
    previous = getattr(torch.hub, "_hub_dir", None)
    with tempfile.TemporaryDirectory(prefix="synthmed-hub-") as tmp:
        (Path(tmp) / "checkpoints").mkdir()
        os.symlink(file.resolve(), Path(tmp) / "checkpoints" / expected_name)
        torch.hub.set_dir(tmp)
        try:
            yield
        finally:
            torch.hub._hub_dir = previous  # restore exactly (None = back to $TORCH_HOME)


def build_lpips(weights: str | None, net: str = "alex"):
    """torchmetrics LPIPS (per-pair values) whose backbone comes from the local file `weights`."""
    import torchvision
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    if net not in LPIPS_BACKBONES:
        raise PerceptualError(f"--lpips-net {net!r} must be one of {sorted(LPIPS_BACKBONES)}")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise PerceptualError(f"--lpips-weights {weights}: no such file; pass the torchvision {net} backbone "
                              "weights file, or leave the option out (LPIPS is then reported as not computed)")
    arch, enum_name = LPIPS_BACKBONES[net]
    expected = os.path.basename(getattr(torchvision.models, enum_name).DEFAULT.url)
    try:
        with _hub_dir_with(path, expected):
            metric = LearnedPerceptualImagePatchSimilarity(net_type=net, reduction="none", normalize=True)
    except Exception as exc:  # noqa: BLE001 - wrong file / wrong architecture
        raise PerceptualError(f"--lpips-weights {weights} could not be loaded as torchvision {arch} weights for "
                              f"LPIPS net {net!r} ({type(exc).__name__}: {exc}); pass {expected} or set "
                              "--lpips-net to the file's architecture") from exc
    return metric.eval()


def _rgb(x: torch.Tensor) -> torch.Tensor:
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


@torch.inference_mode()
def lpips_pairs(metric, fake: torch.Tensor, real: torch.Tensor, real_index: torch.Tensor,
                batch_size: int = 32) -> torch.Tensor:
    """LPIPS of each pair fake[i] vs real[real_index[i]] (float images in [0, 1])."""
    scores = []
    for start in range(0, fake.shape[0], batch_size):
        f = _rgb(fake[start:start + batch_size].float())
        r = _rgb(real[real_index[start:start + batch_size]].float())
        scores.append(metric(f, r).reshape(-1))
        metric.reset()
    return torch.cat(scores).double()


class _ClipFeatureTensors(torch.nn.Module):
    """CLIPModel whose get_*_features return tensors.

    transformers >= 5 returns a BaseModelOutputWithPooling (projected embeddings in
    `pooler_output`), which torchmetrics 1.9's CLIPScore cannot normalise; this adapter restores
    the tensor return value and leaves the model itself untouched.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.config = model.config

    @staticmethod
    def _tensor(out):
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def get_image_features(self, *args, **kwargs) -> torch.Tensor:
        return self._tensor(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs) -> torch.Tensor:
        return self._tensor(self.model.get_text_features(*args, **kwargs))


def build_clip_score(model_dir: str):
    """torchmetrics CLIPScore over a local transformers CLIP folder (refuses the offline 2-token stub)."""
    from torchmetrics.multimodal.clip_score import CLIPScore
    from transformers import CLIPModel, CLIPProcessor

    path = Path(model_dir).expanduser()
    if not path.is_dir():
        raise PerceptualError(f"--clip-model {model_dir}: no such folder; pass a local CLIP folder (config.json, "
                              "weights, tokenizer and preprocessor files), or leave it out")
    try:
        model = CLIPModel.from_pretrained(str(path), local_files_only=True).eval()
        processor = CLIPProcessor.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # noqa: BLE001
        raise PerceptualError(f"--clip-model {model_dir} is not a complete local CLIP folder "
                              f"({type(exc).__name__}: {exc})") from exc
    vocab = getattr(processor.tokenizer, "vocab_size", 0)
    if vocab <= 2:
        raise PerceptualError(f"--clip-model {model_dir}: its tokenizer has vocab_size={vocab} (the stub transformers "
                              "returns offline); the folder needs real tokenizer files (vocab.json, merges.txt)")
    return CLIPScore(model_name_or_path=lambda: (_ClipFeatureTensors(model), processor))


def read_captions(fake_root: Path) -> dict[str, str]:
    """file path (relative to the fake folder) -> caption, from `<fake>/metadata.csv` if it has a caption column."""
    table = fake_root / "metadata.csv"
    if not table.is_file():
        return {}
    with open(table, newline="") as handle:
        reader = csv.DictReader(handle)
        column = next((c for c in CAPTION_COLUMNS if c in (reader.fieldnames or [])), None)
        if column is None or "file_name" not in (reader.fieldnames or []):
            return {}
        return {row["file_name"]: row[column] for row in reader if row.get(column)}


def prompts_for(paths: list[str], labels: list[int], class_names: list[str], root: Path,
                template: str) -> tuple[list[str] | None, str]:
    """One prompt per fake image (metadata.csv captions first, else `template` with {class}); why if impossible."""
    captions = read_captions(root)
    prompts = []
    for path, label in zip(paths, labels):
        key = Path(path).relative_to(root).as_posix()
        if key in captions:
            prompts.append(captions[key])
        elif "{class}" in template:
            if label < 0:
                return None, (f"{key} has no caption in metadata.csv and the fake folder has no class sub-folders "
                              "to fill --clip-prompt's {class}")
            prompts.append(template.replace("{class}", class_names[label].replace("_", " ")))
        else:
            prompts.append(template)
    source = "metadata.csv captions" if captions else f"--clip-prompt {template!r}"
    return prompts, source


@torch.inference_mode()
def clip_scores(metric, images: torch.Tensor, prompts: list[str], batch_size: int = 32) -> torch.Tensor:
    """Per-image CLIP score (100 x cosine) of uint8 images with their prompts, by torchmetrics' CLIPScore
    update function; `CLIPScore.compute` is max(mean of these, 0)."""
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update

    scores = []
    for start in range(0, images.shape[0], batch_size):
        batch = _rgb(images[start:start + batch_size])
        score, _ = _clip_score_update(list(batch), prompts[start:start + batch_size], metric.model, metric.processor)
        scores.append(score.detach().double().reshape(-1))
    return torch.cat(scores)
