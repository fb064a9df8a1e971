"""Lightning's console lines that do not apply to synthmed runs, filtered with the reason for each.

A 32-px quickstart printed 25 warning lines of 7 kinds and 9 logger adverts among its results
(issue 16). Each filter below names the message and why it does not apply; a warning that can
be fixed where it arises is fixed there instead (one model summary per cv, set in cv.py).
Filters match the message text only, so any other warning from the same place still shows.
"""

from __future__ import annotations

import logging
import warnings

# (message regex, why it does not apply to a synthmed run)
IGNORED_WARNINGS: tuple[tuple[str, str], ...] = (
    (r"Found \d+ module\(s\) in eval mode",
     "the latent diffusion module keeps its frozen autoencoder (and a frozen feature net) in eval mode on "
     "purpose; the trained networks are in train mode"),
    (r".*Please add the following callbacks: \['ResumeRandomState'\]",
     "ResumeRandomState restores the RNG to continue training; every `fit` gets it (SynthmedCLI), and "
     "validate/test/predict from a fit checkpoint need no training RNG"),
    (r"The dirpath has changed from",
     "predict/test reads a fit checkpoint from another run directory: its ModelCheckpoint state is not "
     "used there, only the weights"),
    (r"You're using the WeightAveraging callback, but loading a checkpoint outside the 'fit' stage",
     "the EMA callback copies its average into the weights before the checkpoint is saved "
     "(lightning_modules.callbacks.ema), so predict/test already read the averaged weights"),
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated",
     "Lightning 2.6's own pytree helper under a newer torch; nothing a user can change"),
    (r"The number of training batches \(\d+\) is smaller than the logging interval",
     "synthmed's modules log their training metrics per epoch as well, so short epochs lose no curve"),
    (r"The `srun` command is available on your system but is not used",
     "a run started outside a SLURM job on a machine that has SLURM; synthmed's cluster launcher "
     "starts its jobs with srun itself"),
)

# Lightning's rank_zero_info adverts for its hosted services (one per Trainer), not about the run.
ADVERT_PREFIX = "💡 Tip:"


class _DropAdverts(logging.Filter):
    """Drops Lightning's "💡 Tip: ..." advert lines (litlogger / litmodels)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(ADVERT_PREFIX)


_ADVERT_FILTER = _DropAdverts()


def quiet_lightning_output() -> None:
    """Install the filters above (idempotent; warnings filters last until the process ends)."""
    for pattern, _why in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _ADVERT_FILTER not in logger.filters:
            logger.addFilter(_ADVERT_FILTER)
