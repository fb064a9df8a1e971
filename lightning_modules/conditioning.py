"""What a denoiser is conditioned on, as small composable parts instead of a switch.

`build_conditioning("class+text", num_classes=3)` gives a `Conditioning` made of the parts
`ClassLabels` (an embedding of the label, plus a null class for classifier-free guidance) and
`Captions` (text-encoder hidden states for cross-attention, the empty caption as null). Each part
says which U-Net arguments it needs and which U-Net inputs a batch gives; `none` has no parts.
No Lightning here: the module hands in its text encoder and device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch

ConditioningName = Literal["none", "class", "text", "class+text"]
TextEncoder = Callable[[list[str]], torch.Tensor]


@dataclass(frozen=True)
class ClassLabels:
    """Class conditioning: label embedding with `num_classes` + 1 rows (the last is the null class)."""

    num_classes: int

    def denoiser_kwargs(self, text_dim: int | None) -> dict[str, int]:
        return {"num_class_embeds": self.num_classes + 1}

    def inputs(self, labels, captions, drop, encode_text, device) -> dict[str, torch.Tensor]:
        if labels is None:
            raise ValueError("class-conditional model: batches need `label`")
        labels = labels.to(device).long()
        null = (labels < 0) | (labels >= self.num_classes)  # -1 (unlabeled) draws unconditionally
        if drop is not None:
            null = null | drop.to(device)
        return {"class_labels": torch.where(null, torch.full_like(labels, self.num_classes), labels)}

    def null_inputs(self, n: int, encode_text, device) -> dict[str, torch.Tensor]:
        return {"class_labels": torch.full((n,), self.num_classes, device=device, dtype=torch.long)}


@dataclass(frozen=True)
class Captions:
    """Text conditioning: the text encoder's hidden states (cross-attention); "" is the null caption."""

    def denoiser_kwargs(self, text_dim: int | None) -> dict[str, int]:
        return {"cross_attention_dim": text_dim}

    def inputs(self, labels, captions, drop, encode_text, device) -> dict[str, torch.Tensor]:
        if captions is None:
            raise ValueError("text-conditional model: batches need `caption`")
        captions = ["" if drop is not None and bool(drop[i]) else c for i, c in enumerate(captions)]
        return {"encoder_hidden_states": encode_text(list(captions))}

    def null_inputs(self, n: int, encode_text, device) -> dict[str, torch.Tensor]:
        return {"encoder_hidden_states": encode_text([""] * n)}


@dataclass(frozen=True)
class Conditioning:
    """The parts a model is conditioned on; merges their U-Net arguments and inputs."""

    name: str
    parts: tuple = ()

    @property
    def uses_labels(self) -> bool:
        return any(isinstance(p, ClassLabels) for p in self.parts)

    @property
    def uses_text(self) -> bool:
        return any(isinstance(p, Captions) for p in self.parts)

    @property
    def guided(self) -> bool:
        """Classifier-free guidance applies (there is a condition to drop)."""
        return bool(self.parts)

    def denoiser_kwargs(self, text_dim: int | None = None) -> dict[str, int]:
        out: dict[str, int] = {}
        for part in self.parts:
            out.update(part.denoiser_kwargs(text_dim))
        return out

    def inputs(self, labels: torch.Tensor | None, captions: Sequence[str] | None, drop: torch.Tensor | None,
               encode_text: TextEncoder | None, device) -> dict[str, torch.Tensor]:
        """U-Net keyword inputs for a batch; `drop` marks rows that get the null condition (CFG training)."""
        out: dict[str, torch.Tensor] = {}
        for part in self.parts:
            out.update(part.inputs(labels, captions, drop, encode_text, device))
        return out

    def null_inputs(self, n: int, encode_text: TextEncoder | None, device) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for part in self.parts:
            out.update(part.null_inputs(n, encode_text, device))
        return out


def build_conditioning(name: str, num_classes: int = 0) -> Conditioning:
    """The `Conditioning` for `name` ("none", "class", "text" or "class+text")."""
    parts = {"none": (), "class": (ClassLabels(num_classes),), "text": (Captions(),),
             "class+text": (ClassLabels(num_classes), Captions())}
    if name not in parts:
        raise ValueError(f"model.conditioning={name!r}; use one of {sorted(parts)}")
    if name in ("class", "class+text") and num_classes < 1:
        raise ValueError(f"model.conditioning={name!r} needs num_classes >= 1 (linked from the data); "
                         "use conditioning: none for unlabeled data")
    return Conditioning(name, parts[name])
