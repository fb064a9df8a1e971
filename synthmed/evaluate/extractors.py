"""Feature extractors for FID/KID, precision/recall, density/coverage and memorisation.

Each extractor is an `nn.Module` that maps a prepared batch to B x D features and carries a
`name` that goes into every metric key (`fid[<name>]`), so a number can never be read without
knowing which feature space produced it:

* `classifier:<ckpt>` -> `classifier:<arch>@<sha8>`: penultimate features of a synthmed
  ClassifierModule (`Backbone.features`), ideally one trained on the real data (the offline
  default; cf. MONAI's advice to use a domain network such as RadImageNet for medical images).
* `inception` -> `inception`: torchmetrics' FID Inception-v3 (2048-d pool features) built from a
  local weights file (torch-fidelity's `weights-inception-2015-12-05-6726825d.pth`); nothing is
  downloaded.
* `autoencoder:<ckpt>` -> `autoencoder:kl-f<factor>@<sha8>`: the posterior mean of a synthmed
  AutoencoderModule, flattened (average-pooled first when the latent has more than
  MAX_AUTOENCODER_FEATURES values).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from synthmed.progress import progress
from synthmed.runs import file_sha256

MAX_AUTOENCODER_FEATURES = 2048
INCEPTION_WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                         + INCEPTION_WEIGHTS_NAME)
EXTRACTOR_HELP = ("--extractor classifier:<ckpt> (a synthmed classifier checkpoint, ideally trained on the "
                  "real data), inception (with --inception-weights FILE) or autoencoder:<ckpt>")


class ExtractorError(ValueError):
    """A feature extractor cannot be built; the message names the option and what to pass."""


class FeatureExtractor(nn.Module):
    """Base: `prepare` turns uint8 B x C x S x S images into the network's input, `forward` gives B x D.

    Attributes: name (used in metric keys), channels (1 or 3: how the images are loaded),
    default_image_size (the size the network was trained at), info (what the report records).
    """

    name: str = "features"
    channels: int = 3
    default_image_size: int = 64

    def __init__(self) -> None:
        super().__init__()
        self.info: dict = {}

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [0, 255] -> float32 [-1, 1] (the batch contract)."""
        return images.float() / 127.5 - 1.0


class ClassifierExtractor(FeatureExtractor):
    """Penultimate features of a synthmed ClassifierModule checkpoint."""

    def __init__(self, ckpt: str | Path):
        super().__init__()
        from lightning_modules.classifier import ClassifierModule

        path = Path(ckpt).expanduser()
        if not path.is_file():
            raise ExtractorError(f"--extractor classifier:{ckpt}: no such checkpoint file; pass the .ckpt a "
                                 "`synthmed fit` classifier run wrote (logs/<experiment>/version_N/checkpoints/)")
        try:
            module = ClassifierModule.load_from_checkpoint(str(path), map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - any loading failure means "not a classifier checkpoint"
            raise ExtractorError(f"--extractor classifier:{ckpt} is not a loadable ClassifierModule checkpoint "
                                 f"({type(exc).__name__}: {exc})") from exc
        module.eval().requires_grad_(False)
        self.model = module
        hp = module.hparams
        sha = file_sha256(path)
        self.name = f"classifier:{hp.arch}@{sha[:8]}"
        self.channels = int(hp.in_channels)
        self.default_image_size = int(hp.image_size)
        self.info = {"kind": "classifier", "checkpoint": str(path), "sha256": sha, "arch": hp.arch,
                     "in_channels": self.channels, "trained_image_size": self.default_image_size,
                     "class_names": list(module.class_names), "features": "penultimate (pre-logits), "
                     f"{module.num_features}-d"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)


class AutoencoderExtractor(FeatureExtractor):
    """Posterior mean of a synthmed AutoencoderModule's encoder, flattened (pooled if large)."""

    def __init__(self, ckpt: str | Path):
        super().__init__()
        from lightning_modules.autoencoder import load_autoencoder

        path = Path(ckpt).expanduser()
        if not path.is_file():
            raise ExtractorError(f"--extractor autoencoder:{ckpt}: no such checkpoint file; pass the .ckpt of an "
                                 "AutoencoderModule run")
        try:
            vae, hp = load_autoencoder(str(path))
        except Exception as exc:  # noqa: BLE001
            raise ExtractorError(f"--extractor autoencoder:{ckpt} is not an AutoencoderModule checkpoint "
                                 f"({type(exc).__name__}: {exc})") from exc
        self.vae = vae.eval().requires_grad_(False)
        factor = 2 ** (len(hp["block_out_channels"]) - 1)
        sha = file_sha256(path)
        self.name = f"autoencoder:kl-f{factor}@{sha[:8]}"
        self.channels = int(hp["in_channels"])
        self.default_image_size = int(hp["image_size"])
        self.info = {"kind": "autoencoder", "checkpoint": str(path), "sha256": sha, "downsample_factor": factor,
                     "latent_channels": int(hp["latent_channels"]), "in_channels": self.channels,
                     "trained_image_size": self.default_image_size,
                     "features": f"posterior mean, flattened; average-pooled when > {MAX_AUTOENCODER_FEATURES} values"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        latent = self.vae.encode(x).latent_dist.mode()
        c, h, w = latent.shape[1:]
        if c * h * w > MAX_AUTOENCODER_FEATURES:
            side = max(1, int(math.sqrt(MAX_AUTOENCODER_FEATURES / c)))
            latent = F.adaptive_avg_pool2d(latent, (min(side, h), min(side, w)))
        return latent.flatten(1)


class InceptionExtractor(FeatureExtractor):
    """torchmetrics' FID Inception-v3 (2048-d pool3) from a local torch-fidelity weights file."""

    name = "inception"
    channels = 3
    default_image_size = 299

    def __init__(self, weights: str | Path | None):
        super().__init__()
        if not weights:
            raise ExtractorError(
                "--extractor inception needs the Inception-v3 FID weights as a local file (nothing is downloaded): "
                f"pass --inception-weights FILE, where FILE is torch-fidelity's {INCEPTION_WEIGHTS_NAME} "
                f"(fetch it on a machine with internet from {INCEPTION_WEIGHTS_URL}), or use "
                "--extractor classifier:<ckpt>")
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ExtractorError(f"--inception-weights {weights}: no such file; pass the path of "
                                 f"{INCEPTION_WEIGHTS_NAME}")
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3
            from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE
        except ImportError as exc:  # pragma: no cover - torchmetrics is a dependency
            raise ExtractorError(f"torchmetrics cannot build the FID Inception network: {exc}") from exc
        if not _TORCH_FIDELITY_AVAILABLE:
            raise ExtractorError("--extractor inception needs the package torch-fidelity (torchmetrics builds its "
                                 "Inception-v3 from it): pip install torch-fidelity")
        try:
            self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                          feature_extractor_weights_path=str(path))
        except Exception as exc:  # noqa: BLE001
            raise ExtractorError(f"--inception-weights {weights} could not be loaded into torchmetrics' FID "
                                 f"Inception-v3 ({type(exc).__name__}: {exc}); pass {INCEPTION_WEIGHTS_NAME}") from exc
        self.info = {"kind": "inception", "weights": str(path), "sha256": file_sha256(path),
                     "features": "Inception-v3 pool3, 2048-d (torchmetrics NoTrainInceptionV3, resizes to 299 px)"}

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 3 x S x S, as torchmetrics' Inception expects (gray is repeated to 3 channels)."""
        return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_extractor(spec: str | None, inception_weights: str | None = None) -> FeatureExtractor:
    """`classifier:<ckpt>`, `inception` or `autoencoder:<ckpt>` -> a FeatureExtractor in eval mode."""
    if not spec:
        raise ExtractorError("no feature extractor given (there is no default that downloads weights): pass "
                             + EXTRACTOR_HELP)
    kind, _, arg = spec.partition(":")
    if kind == "classifier" and arg:
        return ClassifierExtractor(arg).eval()
    if kind == "autoencoder" and arg:
        return AutoencoderExtractor(arg).eval()
    if kind == "inception" and not arg:
        return InceptionExtractor(inception_weights).eval()
    raise ExtractorError(f"--extractor {spec!r} is not understood; pass " + EXTRACTOR_HELP)


@torch.inference_mode()
def extract_features(extractor: FeatureExtractor, images: torch.Tensor, batch_size: int = 64,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """Features (float32 N x D, on the CPU) of uint8 images N x C x S x S."""
    extractor = extractor.to(device)
    chunks = []
    starts = range(0, images.shape[0], batch_size)
    for start in progress(starts, desc=f"features ({images.shape[0]} images)", unit="batch"):
        batch = extractor.prepare(images[start:start + batch_size].to(device))
        chunks.append(extractor(batch).float().flatten(1).cpu())
    return torch.cat(chunks)


class PrecomputedFeatures(nn.Module):
    """Identity "feature network" for torchmetrics' FID/KID when the features are already computed.

    torchmetrics accepts `feature=<nn.Module>`; giving it this module lets the features be
    extracted once and shared by FID, KID, the k-NN metrics and the memorisation audit.
    """

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features
