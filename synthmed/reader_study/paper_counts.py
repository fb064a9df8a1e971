"""Per-specialist counts a paper reports, to print beside a synthetic-only study's counts.

Built in: ``seed001``, Ali, *Stain the Phony Brains* (../shared/seeds/001_*.txt), Results:

    "Specialist A determined that 14 images were genuine out of the 40 images we showed the
    specialists, whereas 4 MRI and 17 CT images were false. Two MRI images were rated as
    unclear by Specialist A. Specialist B, the second specialist, recognized ten MRI images
    and two CT scans as authentic(real), whereas all other images were deemed to be phony
    (fraudulent). Consensus among specialists: Out of the twenty CT scans, only three were
    identified as authentic by both specialists. In a similar vein, both specialists
    certified five MRI images as authentic."

Only what the text states is a number here; every other cell is ``None`` ("not stated").
The text is inconsistent, and the table keeps it so rather than choosing:

* A: 14 real + 4 + 17 phony + 2 unclear = 37, not 40 (3 images unaccounted for), and the 14
  real are not split by modality.
* B: "all other images were deemed to be phony": with 20 CT and 20 MRI ("Out of the twenty CT
  scans"; 40 in all) that is 10 MRI and 18 CT phony, 0 unclear: derived, marked as such.
* Consensus: 3 CT called real by both, yet B called only 2 CT real.

A user's own table can be given as YAML or JSON in the same shape as ``SEED001``
(``specialists`` -> name -> ``counts`` -> modality or ``all`` -> real / phony / unclear).
"""

from __future__ import annotations

import json
from pathlib import Path

ANSWERS = ("real", "phony", "unclear")

SEED001 = {
    "source": "seed 001 (Ali, Stain the Phony Brains), Results and Fig. 5",
    "images_shown": {"all": 40, "ct": 20, "mri": 20},
    "specialists": {
        "A": {
            "background": "specialist; one of the two 'was already familiar with generative "
                          "models and artificial intelligence' (the paper does not say which)",
            "counts": {
                "all": {"real": 14, "phony": 21, "unclear": 2},
                "mri": {"real": None, "phony": 4, "unclear": 2},
                "ct": {"real": None, "phony": 17, "unclear": None},
            },
            "derived": ["all phony = 4 MRI + 17 CT; all unclear = the 2 MRI (no CT answer "
                        "is stated as unclear)"],
            "quotes": ["Specialist A determined that 14 images were genuine out of the 40 "
                       "images we showed the specialists, whereas 4 MRI and 17 CT images were "
                       "false.", "Two MRI images were rated as unclear by Specialist A."],
        },
        "B": {
            "background": "specialist (see A: one of the two knew generative models)",
            "counts": {
                "all": {"real": 12, "phony": 28, "unclear": 0},
                "mri": {"real": 10, "phony": 10, "unclear": 0},
                "ct": {"real": 2, "phony": 18, "unclear": 0},
            },
            "derived": ["phony and unclear: from 'all other images were deemed to be phony' "
                        "with 20 MRI + 20 CT shown"],
            "quotes": ["Specialist B, the second specialist, recognized ten MRI images and two "
                       "CT scans as authentic(real), whereas all other images were deemed to "
                       "be phony (fraudulent)."],
        },
    },
    "consensus_real": {"ct": 3, "mri": 5},
    "inconsistencies": [
        "A's counts sum to 37 (14 real + 4 MRI + 17 CT phony + 2 MRI unclear), not the 40 "
        "images shown; the 14 real are not split by modality.",
        "Both specialists called 3 CT images real, but B called only 2 CT images real.",
    ],
}

BUILT_IN = {"seed001": SEED001}


def load_paper_counts(spec: str) -> dict:
    """``seed001`` (built in) or a path to a YAML / JSON file of the same shape."""
    if spec in BUILT_IN:
        return BUILT_IN[spec]
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"--paper {spec!r}: give a built-in table ({', '.join(BUILT_IN)}) or "
                         "a YAML / JSON file")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        table = json.loads(text)
    else:
        import yaml

        table = yaml.safe_load(text)
    if not isinstance(table, dict) or not isinstance(table.get("specialists"), dict):
        raise ValueError(f"--paper {spec}: needs a mapping with 'specialists' -> name -> "
                         "'counts' -> modality -> real / phony / unclear")
    for name, entry in table["specialists"].items():
        for modality, counts in (entry or {}).get("counts", {}).items():
            unknown = set(counts) - set(ANSWERS)
            if unknown:
                raise ValueError(f"--paper {spec}: specialist {name}, {modality}: unknown "
                                 f"answers {sorted(unknown)} (use {', '.join(ANSWERS)})")
    return table
