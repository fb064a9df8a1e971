"""Per-image test predictions of a classifier, gathered over DDP ranks and written as `test_predictions.csv`.

One row per test image: `index` (its row in the run's split_manifest.csv, where its path is), the true
`label`, the predicted label `pred` and one `prob_<class>` column per class (softmax). The paired
TSTR-vs-TRTR comparison of the pipeline report joins runs on these rows (synthmed/evaluate/paired.py).
"""

from __future__ import annotations

import csv
from typing import Sequence

import torch
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

PREDICTIONS_FILE = "test_predictions.csv"


class PerImagePredictions(Metric):
    """Collects (index, label, probabilities) per test batch; `compute()` gathers them from every rank.

    A torchmetrics Metric so that torchmetrics does the DDP gather (list states with `cat`, uneven
    sizes padded and trimmed by `gather_all_tensors`). DistributedSampler pads the last ranks with
    repeated images: rows are de-duplicated by `index` in `compute()`.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("index", default=[], dist_reduce_fx="cat")
        self.add_state("label", default=[], dist_reduce_fx="cat")
        self.add_state("probs", default=[], dist_reduce_fx="cat")

    def update(self, logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> None:
        self.index.append(index.detach().long())
        self.label.append(labels.detach().long())
        self.probs.append(torch.softmax(logits.detach().float(), dim=1))

    def compute(self) -> dict[str, torch.Tensor]:
        """{"index", "label", "pred", "probs"} on CPU, sorted by index, one row per distinct image."""
        if isinstance(self.index, list) and not self.index:  # after a DDP sync a list state may be one tensor
            return {"index": torch.zeros(0, dtype=torch.long), "label": torch.zeros(0, dtype=torch.long),
                    "pred": torch.zeros(0, dtype=torch.long), "probs": torch.zeros(0, 0)}
        index, label, probs = (dim_zero_cat(s).cpu() for s in (self.index, self.label, self.probs))
        order = torch.argsort(index, stable=True)
        index, label, probs = index[order], label[order], probs[order]
        first = torch.ones_like(index, dtype=torch.bool)
        first[1:] = index[1:] != index[:-1]
        index, label, probs = index[first], label[first], probs[first]
        return {"index": index, "label": label.long(), "pred": probs.argmax(dim=1), "probs": probs}


def write_predictions_csv(path: str, values: dict[str, torch.Tensor], class_names: Sequence[str]) -> None:
    """test_predictions.csv: index, label, pred, prob_<class> per class (6 decimals)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "label", "pred", *[f"prob_{name}" for name in class_names]])
        for i, label, pred, probs in zip(values["index"].tolist(), values["label"].tolist(), values["pred"].tolist(),
                                         values["probs"].tolist()):
            writer.writerow([int(i), int(label), int(pred), *[f"{p:.6f}" for p in probs]])
