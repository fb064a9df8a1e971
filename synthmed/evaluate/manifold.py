"""Precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem et al. 2020).

Hand-written with `torch.cdist`: none of the packages synthmed depends on (torchmetrics,
scikit-learn, torch-fidelity) implements these k-NN manifold metrics, and the reference
implementation (clovaai/generative-evaluation-prdc) is a small numpy script, not a maintained
dependency. The definitions follow that reference exactly, including strict `<` ball membership:

* radius of a sample = distance to its k-th nearest neighbour in its own set (itself excluded);
* precision = share of fake samples inside the union of real balls;
* recall    = share of real samples inside the union of fake balls;
* density   = (1 / kM) * sum over fakes of the number of real balls containing it;
* coverage  = share of real samples whose own ball contains at least one fake sample.

Distances are Euclidean, computed in float64 and in row chunks so memory stays O(chunk x N).
"""

from __future__ import annotations

import torch

DEFAULT_K = 5
CHUNK = 1024


def _as64(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(torch.float64).cpu()


def knn_radii(x: torch.Tensor, k: int = DEFAULT_K, chunk: int = CHUNK) -> torch.Tensor:
    """Distance of each row of x (N x D) to its k-th nearest other row."""
    x = _as64(x)
    if x.shape[0] <= k:
        raise ValueError(f"k={k} nearest neighbours need more than {k} samples per set, got {x.shape[0]}; "
                         "lower --k or give more images")
    radii = []
    for start in range(0, x.shape[0], chunk):
        d = torch.cdist(x[start:start + chunk], x)
        # the k+1 smallest include the sample itself (distance 0); index k is its k-th neighbour
        radii.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def _inside_counts(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor,
                   chunk: int = CHUNK) -> torch.Tensor:
    """For each point, how many balls B(centre_i, radius_i) contain it (strictly)."""
    counts = []
    for start in range(0, points.shape[0], chunk):
        d = torch.cdist(points[start:start + chunk], centres)
        counts.append((d < radii[None, :]).sum(dim=1))
    return torch.cat(counts)


def _nearest_distance(points: torch.Tensor, others: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    return torch.cat([torch.cdist(points[s:s + chunk], others).min(dim=1).values
                      for s in range(0, points.shape[0], chunk)])


def precision_recall_density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int = DEFAULT_K,
                                      chunk: int = CHUNK) -> dict[str, float]:
    """The four k-NN manifold metrics of `fake` (M x D) against `real` (N x D) features."""
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"features must be N x D with the same D; got {tuple(real.shape)} and {tuple(fake.shape)}")
    real, fake = _as64(real), _as64(fake)
    real_radii = knn_radii(real, k, chunk)
    fake_radii = knn_radii(fake, k, chunk)
    fake_in_real = _inside_counts(fake, real, real_radii, chunk)
    real_in_fake = _inside_counts(real, fake, fake_radii, chunk)
    nearest_fake = _nearest_distance(real, fake, chunk)
    return {
        "precision": float((fake_in_real > 0).double().mean()),
        "recall": float((real_in_fake > 0).double().mean()),
        "density": float(fake_in_real.double().sum() / (k * fake.shape[0])),
        "coverage": float((nearest_fake < real_radii).double().mean()),
    }


# ------------------------------------------------------------------ bootstrap intervals and typed results
DEFINITIONS = {
    "precision": "share of fakes inside the real k-NN manifold (fidelity; Kynkäänniemi et al. 2019)",
    "recall": "share of reals inside the fake k-NN manifold (diversity; Kynkäänniemi et al. 2019)",
    "density": "mean number of real k-NN balls holding a fake, / k (Naeem et al. 2020)",
    "coverage": "share of reals whose k-NN ball holds a fake (Naeem et al. 2020)",
}
# Which set a metric averages over: its interval resamples that set's images with the other set's
# k-NN manifold fixed. Resampling the manifold too is not done: a resample holds only ~63 % distinct
# images, which shrinks every union of balls, so precision / recall / coverage replicates fall
# below the estimate and the percentile interval can exclude it (seen: coverage 1 [0.90, 0.99]).
AVERAGED_OVER = {"precision": "fake", "recall": "real", "density": "fake", "coverage": "real"}


def per_image_indicators(real: torch.Tensor, fake: torch.Tensor, k: int = DEFAULT_K,
                         chunk: int = CHUNK) -> dict[str, torch.Tensor]:
    """Per-image terms whose means are the four metrics (precision, density: per fake; recall, coverage: per real)."""
    real, fake = _as64(real), _as64(fake)
    real_radii, fake_radii = knn_radii(real, k, chunk), knn_radii(fake, k, chunk)
    fake_in_real = _inside_counts(fake, real, real_radii, chunk)
    real_in_fake = _inside_counts(real, fake, fake_radii, chunk)
    return {"precision": (fake_in_real > 0).double(), "recall": (real_in_fake > 0).double(),
            "density": fake_in_real.double() / k,
            "coverage": (_nearest_distance(real, fake, chunk) < real_radii).double()}


def prdc_results(real: torch.Tensor, fake: torch.Tensor, space: str, k: int, rounds: int, seed: int,
                 class_name: str | None = None):
    """MetricResults of precision / recall / density / coverage with seeded bootstrap intervals."""
    from synthmed.evaluate import bootstrap
    from synthmed.evaluate.results import MetricResult, not_computed

    n, m = real.shape[0], fake.shape[0]
    if min(n, m) <= k:
        reason = f"k={k} nearest neighbours need more than {k} images per set (n_real {n}, n_fake {m})"
        return [not_computed(name, space, reason, n_real=n, n_fake=m, higher_is_better=True, class_name=class_name,
                             definition=text) for name, text in DEFINITIONS.items()]
    terms = per_image_indicators(real, fake, k)
    out = []
    for salt, (name, text) in enumerate(DEFINITIONS.items()):
        over = AVERAGED_OVER[name]
        other = "real" if over == "fake" else "fake"
        out.append(MetricResult(
            name=name, space=space, value=float(terms[name].mean()), n_real=n, n_fake=m, higher_is_better=True,
            interval=bootstrap.mean_interval(terms[name], rounds, seed, salt=3 + salt), class_name=class_name,
            definition=f"{text}; interval resamples the {over} images, the {other} manifold fixed",
            extra={"k": k, "bootstrap_rounds": rounds}))
    return out
