"""Content hashes of decoded images, for the leakage audit (`datamodules.splits.audit_overlap`).

Two pictures are the same *content* when their decoded pixels are, whatever the file format
(PNG, BMP, a re-saved PNG with other compression or metadata): `pixel_sha256` hashes the uint8
pixels `read_image` returns, with their size. A grey picture stored as RGB (R = G = B) hashes as
the grey one. File-byte hashes (`datamodules.hashing.file_sha256`) miss all of these.

Near-duplicates (a re-encoded JPEG, a re-saved copy with slightly changed pixels) are found in
two steps (`near_pairs`): imagehash's 64-bit difference hash (dHash) within `CANDIDATE_BITS`
Hamming distance picks candidates, and the mean absolute difference of 32 x 32 grey thumbnails
confirms them (at most `NEAR_DUPLICATE_MAD` grey levels of 255). dHash alone cannot tell: on
brain_tumor_mri (128 px MRI) 10,202 test/train pairs are within 8 bits, most of them different
scans of similar anatomy (thumbnail difference 4-40 grey levels), while the same scan re-saved
as JPEG quality 70 moves up to 9 bits but only 0.6 grey levels. The pair search is written here
with numpy because imagehash compares one pair at a time, too slow for thousands x thousands.
"""

from __future__ import annotations

import hashlib

import imagehash
import numpy as np
from PIL import Image

CANDIDATE_BITS = 10  # of 64 (dHash): a JPEG q70 re-save of a brain_tumor_mri scan moved up to 9
NEAR_DUPLICATE_MAD = 2.0  # grey levels (0..255) between 32 x 32 thumbnails: the re-save above moved 0.6
THUMBNAIL = 32


def _canonical(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 3 and (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all():
        return arr[..., 0]
    return arr


def pixel_sha256(arr: np.ndarray) -> str:
    """SHA-256 of an image's decoded pixels, shape and dtype (a grey RGB image counts as grey)."""
    arr = np.ascontiguousarray(_canonical(np.asarray(arr)))
    digest = hashlib.sha256(repr((arr.shape, arr.dtype.str)).encode())
    digest.update(arr.tobytes())
    return digest.hexdigest()


def perceptual_hash(arr: np.ndarray) -> str:
    """imagehash's 64-bit difference hash (dHash) of a decoded image, as 16 hex digits."""
    return str(imagehash.dhash(Image.fromarray(_canonical(arr))))


def thumbnail(arr: np.ndarray) -> np.ndarray:
    """32 x 32 uint8 grey version of a decoded image (what near-duplicates are confirmed on)."""
    img = Image.fromarray(_canonical(arr))
    return np.asarray(img.convert("L").resize((THUMBNAIL, THUMBNAIL), Image.BILINEAR), dtype=np.uint8)


def _as_uint64(hashes) -> np.ndarray:
    return np.array([int(h, 16) for h in hashes], dtype=np.uint64)


def near_pairs(hashes_a, hashes_b, thumbs_a: np.ndarray, thumbs_b: np.ndarray, max_bits: int = CANDIDATE_BITS,
               max_mad: float = NEAR_DUPLICATE_MAD, chunk: int = 1024) -> list[tuple[int, int, int, float]]:
    """(i, j, hash distance, thumbnail difference) of every near-duplicate pair (a[i], b[j])."""
    a, b = _as_uint64(hashes_a), _as_uint64(hashes_b)
    ta, tb = np.asarray(thumbs_a, dtype=np.int16), np.asarray(thumbs_b, dtype=np.int16)
    found: list[tuple[int, int, int, float]] = []
    for start in range(0, len(a), chunk):
        dist = np.bitwise_count(a[start:start + chunk, None] ^ b[None, :])
        rows, cols = np.nonzero(dist <= max_bits)
        if not len(rows):
            continue
        mad = np.abs(ta[start + rows] - tb[cols]).mean(axis=(1, 2))
        for i, j, m in zip(rows[mad <= max_mad], cols[mad <= max_mad], mad[mad <= max_mad]):
            found.append((start + int(i), int(j), int(dist[i, j]), float(m)))
    return found
