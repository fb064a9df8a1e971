"""`MetricResult`: one number of `synthmed evaluate`, with everything needed to read it.

Modelled on torchmetrics' `higher_is_better` class attribute (torchmetrics/image/fid.py): the
direction travels with the number instead of living in prose. A result names its metric, the
feature space or definition it was computed in, the class it is restricted to (None = pooled),
the sample sizes, a seeded bootstrap 95 % interval, and whether the number is reliable (and why
not). `evaluation.json` holds a list of these (`to_json`); `read_results` is the ONE reader, and
`synthmed.evaluate.report.results_table` the one Markdown renderer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 2


@dataclass(frozen=True)
class MetricResult:
    """One metric value.

    Attributes:
        name: the metric (`fid`, `kid`, `precision`, `ssim`, `near_copy_fraction`, `data_copying_z`, ...).
        space: feature space (the extractor's name, e.g. `classifier:resnet18@1a2b3c4d`) or the
            definition (`nearest_real`, `random_pairs`, `pixel-highpass`); "" when neither applies.
        value: the number; None when it could not be computed.
        n_real: real images it was computed from (held-out reals for the copy audit).
        n_fake: fake images it was computed from.
        higher_is_better: True / False as torchmetrics' class attribute; None when neither holds
            (e.g. the data-copying z-statistic, best near 0).
        interval: seeded bootstrap 95 % percentile interval (low, high), or None.
        reliable: False when the number must not be read as a measurement (then `reason` says why;
            the renderer prints the reason instead of the value).
        reason: why the value is missing or unreliable.
        class_name: the class the metric is restricted to; None for the pooled value.
        definition: one line saying what the number is.
        extra: further facts the number depends on (e.g. KID subsets, the copy threshold).
    """

    name: str
    space: str
    value: float | None
    n_real: int | None = None
    n_fake: int | None = None
    higher_is_better: bool | None = None
    interval: tuple[float, float] | None = None
    reliable: bool = True
    reason: str | None = None
    class_name: str | None = None
    definition: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """`name [space]` (and `· class`), for tables; never parsed back."""
        text = f"{self.name} [{self.space}]" if self.space else self.name
        return f"{text} · {self.class_name}" if self.class_name else text

    @property
    def computed(self) -> bool:
        return self.value is not None

    def to_json(self) -> dict:
        out = asdict(self)
        out["interval"] = list(self.interval) if self.interval is not None else None
        return out


def not_computed(name: str, space: str, reason: str, **kwargs: Any) -> MetricResult:
    """A result without a value: `reason` says what is missing ("not computed: ...")."""
    text = reason if reason.startswith("not computed") else f"not computed: {reason}"
    return MetricResult(name=name, space=space, value=None, reliable=False, reason=text, **kwargs)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):  # strict JSON writes non-finite floats as strings
        return {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}[value]
    return float(value)


def from_json(item: dict) -> MetricResult:
    interval = item.get("interval")
    return MetricResult(
        name=item["name"], space=item.get("space", ""), value=_number(item.get("value")),
        n_real=item.get("n_real"), n_fake=item.get("n_fake"), higher_is_better=item.get("higher_is_better"),
        interval=(_number(interval[0]), _number(interval[1])) if interval else None,
        reliable=bool(item.get("reliable", True)), reason=item.get("reason"), class_name=item.get("class_name"),
        definition=item.get("definition", ""), extra=dict(item.get("extra") or {}))


# Direction of the schema-1 metric names (records written before typed results existed).
_LEGACY_HIGHER = {"fid": False, "kid_mean": False, "kid_std": None, "precision": True, "recall": True,
                  "density": True, "coverage": True, "ssim": True, "ms_ssim": True, "psnr": True, "lpips": False,
                  "clip_score": True, "near_copy_fraction": False}


def _legacy(record: dict) -> list[MetricResult]:
    """Schema 1 (`{"fid[classifier:...]": 12.3, ...}`): the only place a metric key is split."""
    n_real = (record.get("inputs") or {}).get("real", {}).get("n_images")
    n_fake = (record.get("inputs") or {}).get("fake", {}).get("n_images")
    out = []
    for key, value in (record.get("metrics") or {}).items():
        name, _, space = key.partition("[")
        space = space.rstrip("]")
        common = {"n_real": n_real, "n_fake": n_fake, "higher_is_better": _LEGACY_HIGHER.get(name),
                  "definition": "schema-1 record (before typed results): no interval"}
        if isinstance(value, dict) and value.get("computed") is False:
            out.append(not_computed(name, space, value.get("reason", "not computed"), **common))
        else:
            out.append(MetricResult(name=name, space=space, value=_number(value), **common))
    return out


def read_results(record: dict) -> list[MetricResult]:
    """The metrics of an evaluation record (a parsed evaluation.json), of any schema version."""
    metrics = record.get("metrics")
    if isinstance(metrics, dict):
        return _legacy(record)
    return [from_json(item) for item in metrics or []]


def find(results: list[MetricResult], name: str, space: str | None = None,
         class_name: str | None = None) -> MetricResult | None:
    """The result with this name (and space, when given) for `class_name` (None = pooled)."""
    for result in results:
        if result.name == name and result.class_name == class_name and (space is None or result.space == space):
            return result
    return None
