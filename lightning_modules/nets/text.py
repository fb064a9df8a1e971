"""Pluggable caption encoders for cross-attention conditioning (no Lightning, no downloads).

* `SmallTextEncoder` (default): a word-hashing tokenizer and a 2-layer transformer learned with
  the denoiser. No vocabulary file is needed: a word's id is a stable hash of the word, so the
  same caption always gives the same tokens on every machine.
* `FrozenCLIPTextEncoder`: a CLIP text model + tokenizer from a local diffusers/transformers
  folder, frozen. Fails loudly when the tokenizer is the 2-token stub that
  `CLIPTokenizer.from_pretrained(hub id)` silently returns offline.

Both map a list of captions to (B, L, D) hidden states; `output_dim` is D, the U-Net's
`cross_attention_dim`.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import torch
from torch import nn

_WORD = re.compile(r"[a-z0-9]+")


class HashTokenizer:
    """Lower-case words -> ids in [2, vocab_size) by CRC32; 0 = padding, 1 = start token."""

    def __init__(self, vocab_size: int = 4096, max_length: int = 32):
        if vocab_size < 16:
            raise ValueError(f"text encoder vocab_size={vocab_size} must be >= 16")
        self.vocab_size, self.max_length = vocab_size, max_length

    def word_id(self, word: str) -> int:
        return 2 + zlib.crc32(word.encode("utf-8")) % (self.vocab_size - 2)

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.zeros(len(captions), self.max_length, dtype=torch.long)
        for row, caption in enumerate(captions):
            tokens = [1] + [self.word_id(w) for w in _WORD.findall(str(caption).lower())]
            tokens = tokens[: self.max_length]
            ids[row, : len(tokens)] = torch.tensor(tokens)
        return ids, ids != 0


class SmallTextEncoder(nn.Module):
    """A small transformer over hashed words, trained together with the denoiser.

    Args:
        output_dim: hidden size D (= the U-Net's cross_attention_dim).
        num_layers / num_heads: transformer depth and heads.
        vocab_size / max_length: hashing tokenizer settings.
    """

    def __init__(self, output_dim: int = 64, num_layers: int = 2, num_heads: int = 4,
                 vocab_size: int = 4096, max_length: int = 32):
        super().__init__()
        self.tokenizer = HashTokenizer(vocab_size, max_length)
        self.output_dim = output_dim
        self.token_embedding = nn.Embedding(vocab_size, output_dim, padding_idx=0)
        self.position_embedding = nn.Parameter(torch.zeros(1, max_length, output_dim))
        nn.init.normal_(self.position_embedding, std=0.02)
        layer = nn.TransformerEncoderLayer(output_dim, num_heads, dim_feedforward=output_dim * 4,
                                           dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(output_dim)

    def forward(self, captions: list[str]) -> torch.Tensor:
        ids, keep = self.tokenizer(captions)
        device = self.token_embedding.weight.device
        ids, keep = ids.to(device), keep.to(device)
        h = self.token_embedding(ids) + self.position_embedding[:, : ids.shape[1]]
        h = self.encoder(h, src_key_padding_mask=~keep)
        return self.norm(h)


class FrozenCLIPTextEncoder(nn.Module):
    """A frozen CLIP text encoder and tokenizer read from a local folder.

    Args:
        path: a folder with `config.json` + weights and tokenizer files, or a Stable Diffusion
            folder with `text_encoder/` and `tokenizer/` subfolders.
    """

    def __init__(self, path: str):
        super().__init__()
        from transformers import CLIPTextModel, CLIPTokenizer

        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"text_encoder path {path!r} is not a folder; give a local CLIP text-encoder "
                                    "folder (nothing is downloaded)")
        model_dir = root / "text_encoder" if (root / "text_encoder").is_dir() else root
        tok_dir = root / "tokenizer" if (root / "tokenizer").is_dir() else root
        self.tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
        check_tokenizer(self.tokenizer, str(tok_dir))
        self.model = CLIPTextModel.from_pretrained(str(model_dir), local_files_only=True)
        self.model.requires_grad_(False).eval()
        self.output_dim = self.model.config.hidden_size
        # tokenizers saved without model_max_length report a huge sentinel value
        self.max_length = min(int(self.tokenizer.model_max_length), int(self.model.config.max_position_embeddings))

    def train(self, mode: bool = True) -> "FrozenCLIPTextEncoder":
        super().train(mode)
        self.model.eval()  # frozen: never dropout
        return self

    @torch.no_grad()
    def forward(self, captions: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(captions), padding="max_length", truncation=True,
                                max_length=self.max_length, return_tensors="pt")
        device = next(self.model.parameters()).device
        return self.model(tokens.input_ids.to(device))[0]


def check_tokenizer(tokenizer, where: str) -> None:
    """Raise when a tokenizer is the offline stub (vocab of 2) instead of a real vocabulary."""
    if getattr(tokenizer, "vocab_size", 0) <= 2:
        raise ValueError(f"the tokenizer at {where} has vocab_size={tokenizer.vocab_size}: its vocab.json/merges.txt "
                         "are missing or empty (offline, transformers silently returns such a stub); give a "
                         "folder with real tokenizer files")


def build_text_encoder(kind: str = "small", path: str | None = None, **kwargs) -> nn.Module:
    """`kind="small"` -> SmallTextEncoder(**kwargs); `kind="clip"` -> FrozenCLIPTextEncoder(path)."""
    if kind == "small":
        return SmallTextEncoder(**kwargs)
    if kind == "clip":
        if not path:
            raise ValueError("text_encoder kind='clip' needs `path:` to a local CLIP folder")
        return FrozenCLIPTextEncoder(path)
    raise ValueError(f"text_encoder kind={kind!r} is unknown; use 'small' or 'clip'")
