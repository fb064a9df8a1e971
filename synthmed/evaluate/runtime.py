"""`single_thread`: run small statistics on one intra-op thread (context manager and decorator)."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def single_thread():
    """Set torch's intra-op threads to 1 inside the block, restoring the previous count afterwards.

    The statistics (FID's eigenvalues, KID's 100 subsets, k-NN distances, per-pair SSIM) are small
    matrix operations and Python loops where thread hand-off dominates; on a busy 2-core machine
    two OpenMP threads made them 20-70x slower than one (measured: KID on 390 x 512 features
    0.35 s with one thread vs 23 s with two). Feature extraction keeps all threads.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
