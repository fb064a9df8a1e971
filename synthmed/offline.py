"""Environment defaults that stop libraries from phoning home (see ../shared/ENVIRONMENT.md).

Nothing in synthmed downloads weights or data at run time. A user who wants hub access sets the
variables to 0 explicitly; `setdefault` never overrides what the user chose.
"""

import os

OFFLINE_DEFAULTS = {
    "NO_ALBUMENTATIONS_UPDATE": "1",   # albumentations version check on import
    "HF_HUB_OFFLINE": "1",             # huggingface_hub / transformers / diffusers: no retries
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


def configure_offline() -> None:
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
