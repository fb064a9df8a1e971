"""Procedural breast-ultrasound-like phantoms (numpy + scipy only: no torch, no Lightning).

A phantom is drawn in two steps:

1. `draw_scene(label, seed)` draws the *geometry* in normalised coordinates (x, depth y in
   [0, 1]): tissue-layer boundaries, Cooper's ligaments, coarse echo-texture grids and the lesion.
   It never sees the resolution, so one seed gives the same scene at 32, 64 or 128 px.
2. `rasterise(scene, size, seed)` turns it into an echogenicity map at `size` px, multiplies
   fully developed speckle (Rayleigh amplitude of smoothed complex Gaussian noise), applies depth
   attenuation and log compression (as a scanner displays B-mode), and returns uint8 image + mask.

Classes (sorted, like an ImageFolder tree of them): `benign` an oval, wider-than-tall,
hypoechoic, smooth-margined lesion with posterior acoustic enhancement; `malignant` an
irregular, spiculated, heterogeneous lesion with a taller-than-wide tendency and posterior
acoustic shadowing; `normal` no lesion (empty mask). The mask is the lesion incl. spicules.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from datamodules.mask_files import mask_tree

# the file that marks a mask tree as make-phantoms' own (so a leftover of a killed run may be replaced)
MASK_TREE_MARKER = ".synthmed-phantom-masks"

CLASS_NAMES = ("benign", "malignant", "normal")
BENIGN, MALIGNANT, NORMAL = 0, 1, 2
MIN_SIZE = 16
TEXTURE_GRID = 24  # coarse echo-texture grid (resolution independent; sampled by interpolation)


@dataclass(frozen=True)
class Lesion:
    """Lesion geometry in normalised coordinates plus its echo properties."""

    cx: float
    cy: float
    rx: float  # semi-axes before rotation
    ry: float
    angle: float  # radians
    harmonics: np.ndarray  # rows (k, amplitude, phase): boundary R(phi) = 1 + sum a cos(k phi + p)
    spicules: np.ndarray  # rows (phi, length / r_mean, width): radial tapered lines
    edge: float  # margin softness (normalised)
    echo: float  # interior echogenicity relative to surrounding tissue
    heterogeneity: np.ndarray  # TEXTURE_GRID^2 multiplicative field inside the lesion
    calcifications: np.ndarray  # rows (x, y) of bright echogenic foci
    rim: float  # echogenic rim (capsule for benign, halo for malignant), relative gain
    posterior: float  # > 0 enhancement, < 0 shadowing, relative gain of the column below
    posterior_decay: float  # depth (normalised) over which the posterior effect fades


@dataclass(frozen=True)
class Scene:
    """Everything about one phantom except its resolution and speckle realisation."""

    label: int
    skin: float  # depth of the skin line
    fat_bottom: np.ndarray  # boundary curve coefficients (base, amp, freq, phase, tilt)
    gland_bottom: np.ndarray
    fat_echo: float
    gland_echo: float
    muscle_echo: float
    ligaments: np.ndarray  # rows (x0, y0, curvature, slope, width, gain)
    texture: np.ndarray  # TEXTURE_GRID^2 coarse echo texture (fat lobules, gland heterogeneity)
    fibre_freq: float  # muscle striation frequency (cycles per unit depth)
    fibre_slope: float
    attenuation: float  # per unit depth (amplitude, natural log)
    dynamic_range_db: float
    gain_db: float
    lesion: Lesion | None


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in key]))


def _coarse_grid(rng: np.random.Generator, sigma: float | tuple[float, float]) -> np.ndarray:
    grid = ndimage.gaussian_filter(rng.standard_normal((TEXTURE_GRID, TEXTURE_GRID)), sigma, mode="wrap")
    return grid / (grid.std() + 1e-8)


def _boundary(rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    return np.array([rng.uniform(lo, hi), rng.uniform(0.01, 0.04), rng.uniform(0.5, 1.6),
                     rng.uniform(0, 2 * np.pi), rng.uniform(-0.06, 0.06)])


def _draw_lesion(rng: np.random.Generator, label: int, gland_top: float, gland_bottom: float) -> Lesion:
    if label == BENIGN:
        r_mean = rng.uniform(0.085, 0.17)
        aspect = rng.uniform(1.3, 2.0)  # width / height: wider than tall (parallel to the skin)
        angle = rng.normal(0.0, 0.12)
        ks = np.array([2, 3, 4])
        harmonics = np.stack([ks, rng.uniform(0.0, 0.05, 3), rng.uniform(0, 2 * np.pi, 3)], axis=1)
        spicules = np.zeros((0, 3))
        edge = rng.uniform(0.006, 0.012)
        echo = rng.uniform(0.08, 0.35)
        heterogeneity = _coarse_grid(rng, 2.0) * rng.uniform(0.0, 0.08)
        calcifications = np.zeros((0, 2))
        rim = rng.uniform(0.3, 0.9) if rng.random() < 0.5 else 0.0
        posterior = rng.uniform(0.9, 2.0)
    else:
        r_mean = rng.uniform(0.08, 0.15)
        aspect = rng.uniform(0.6, 1.15)  # taller than wide tendency (non-parallel orientation)
        angle = rng.normal(0.0, 0.35)
        ks = np.arange(3, 15)
        amps = rng.uniform(0.3, 1.0, ks.size) * 0.32 / np.sqrt(ks)  # angular, microlobulated margin
        harmonics = np.stack([ks, amps, rng.uniform(0, 2 * np.pi, ks.size)], axis=1)
        n_spicules = int(rng.integers(5, 12))
        phis = np.sort(rng.uniform(0, 2 * np.pi, n_spicules))
        spicules = np.stack([phis, rng.uniform(0.5, 1.2, n_spicules),
                             rng.uniform(0.008, 0.014, n_spicules)], axis=1)
        edge = rng.uniform(0.003, 0.006)
        echo = rng.uniform(0.1, 0.35)
        heterogeneity = _coarse_grid(rng, 1.0) * rng.uniform(0.35, 0.6)
        n_calc = int(rng.integers(0, 5))
        calcifications = rng.uniform(-0.6, 0.6, (n_calc, 2))  # in units of the semi-axes
        rim = rng.uniform(0.4, 1.0) if rng.random() < 0.5 else 0.0  # echogenic halo
        posterior = -rng.uniform(0.6, 0.9)
    rx = r_mean * np.sqrt(aspect)
    ry = r_mean / np.sqrt(aspect)
    cx = rng.uniform(0.28, 0.72)
    # centre in the glandular layer, the whole lesion below the skin and above the bottom tenth
    lo = max(gland_top + 0.5 * ry, 0.12 + ry)
    hi = min(gland_bottom, 0.78 - ry)
    cy = rng.uniform(lo, hi) if hi > lo else 0.5 * (lo + hi)
    return Lesion(cx=cx, cy=cy, rx=rx, ry=ry, angle=angle, harmonics=harmonics, spicules=spicules,
                  edge=edge, echo=echo, heterogeneity=heterogeneity, calcifications=calcifications,
                  rim=rim, posterior=posterior,
                  posterior_decay=rng.uniform(0.25, 0.6) if label == BENIGN else rng.uniform(0.6, 1.2))


def draw_scene(label: int, seed: int) -> Scene:
    """Resolution-free geometry of phantom (`label`, `seed`)."""
    if label not in (BENIGN, MALIGNANT, NORMAL):
        raise ValueError(f"label={label} must be 0..2 (one of {CLASS_NAMES})")
    rng = _rng(seed, label, 0x5CE4E)
    skin = rng.uniform(0.025, 0.05)
    fat_bottom = _boundary(rng, 0.16, 0.3)
    gland_bottom = _boundary(rng, 0.68, 0.84)
    n_lig = int(rng.integers(3, 8))
    ligaments = np.stack([rng.uniform(0, 1, n_lig), rng.uniform(skin + 0.03, 0.7, n_lig),
                          rng.uniform(-2.5, 2.5, n_lig), rng.uniform(-0.5, 0.5, n_lig),
                          rng.uniform(0.005, 0.01, n_lig), rng.uniform(0.3, 0.9, n_lig)], axis=1)
    scene = dict(
        label=label, skin=skin, fat_bottom=fat_bottom, gland_bottom=gland_bottom,
        fat_echo=rng.uniform(0.18, 0.3), gland_echo=rng.uniform(0.6, 0.9), muscle_echo=rng.uniform(0.25, 0.4),
        ligaments=ligaments, texture=_coarse_grid(rng, (0.7, 1.8)),  # streaky laterally
        fibre_freq=rng.uniform(14, 22), fibre_slope=rng.uniform(-0.15, 0.15),
        attenuation=rng.uniform(0.5, 1.3), dynamic_range_db=rng.uniform(30, 38), gain_db=rng.uniform(-9, -5),
    )
    lesion = None
    if label != NORMAL:
        gland_top = fat_bottom[0] + 0.02
        lesion = _draw_lesion(rng, label, gland_top, gland_bottom[0] - 0.05)
    return Scene(lesion=lesion, **scene)


# ---- rasterisation ----------------------------------------------------------------------------------
def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _curve(coef: np.ndarray, x: np.ndarray) -> np.ndarray:
    base, amp, freq, phase, tilt = coef
    return base + amp * np.sin(2 * np.pi * freq * x + phase) + tilt * (x - 0.5)


def _sample_grid(grid: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    coords = np.stack([yy * (grid.shape[0] - 1), xx * (grid.shape[1] - 1)])
    return ndimage.map_coordinates(grid, coords, order=1, mode="nearest")


def _lesion_fields(les: Lesion, yy: np.ndarray, xx: np.ndarray, px: float):
    """Soft core, soft core+spicules, and the echogenic rim band of a lesion at this grid."""
    dx, dy = xx - les.cx, yy - les.cy
    c, s = np.cos(les.angle), np.sin(les.angle)
    u, v = (c * dx + s * dy) / les.rx, (-s * dx + c * dy) / les.ry
    rho, phi = np.hypot(u, v), np.arctan2(v, u)
    k, a, p = les.harmonics[:, 0, None, None], les.harmonics[:, 1, None, None], les.harmonics[:, 2, None, None]
    radius = 1.0 + (a * np.cos(k * phi[None] + p)).sum(axis=0)
    r_mean = np.sqrt(les.rx * les.ry)
    inside = (radius - rho) * r_mean  # approx. signed distance to the margin, > 0 inside
    edge = max(les.edge, 0.6 * px)
    core = _sigmoid(inside / edge)
    rim = np.clip(_sigmoid((inside + 2.5 * edge + 1.5 * px) / edge) - core, 0.0, 1.0)
    whole = core
    if len(les.spicules):
        phis = les.spicules[:, 0]
        k_, a_, p_ = les.harmonics[:, 0, None], les.harmonics[:, 1, None], les.harmonics[:, 2, None]
        rad = 1.0 + (a_ * np.cos(k_ * phis + p_)).sum(axis=0)
        bu, bv = 0.8 * rad * np.cos(phis), 0.8 * rad * np.sin(phis)  # start just inside the margin
        bx = les.cx + c * bu * les.rx - s * bv * les.ry
        by = les.cy + s * bu * les.rx + c * bv * les.ry
        dirx, diry = bx - les.cx, by - les.cy
        norm = np.hypot(dirx, diry) + 1e-9
        dirx, diry = dirx / norm, diry / norm
        length = les.spicules[:, 1] * r_mean
        px_, py_ = xx[None] - bx[:, None, None], yy[None] - by[:, None, None]
        t = np.clip((px_ * dirx[:, None, None] + py_ * diry[:, None, None]) / length[:, None, None], 0.0, 1.0)
        dist = np.hypot(px_ - t * (length * dirx)[:, None, None], py_ - t * (length * diry)[:, None, None])
        width = np.maximum(les.spicules[:, 2, None, None] * (1.0 - 0.85 * t), 0.45 * px)
        spic = _sigmoid((width - dist) / (0.5 * px)).max(axis=0)
        whole = np.maximum(core, spic)
    return core, whole, rim


def _posterior_column(core: np.ndarray, les: Lesion, size: int) -> np.ndarray:
    """Column below the lesion (same x, deeper), fading with depth: where the beam passed it."""
    above = np.maximum.accumulate(core, axis=0)  # 1 where some lesion lies above in this column
    depth_below = np.cumsum(above > 0.5, axis=0) / size
    column = np.clip(above - core, 0.0, 1.0) * np.exp(-depth_below / les.posterior_decay)
    return ndimage.gaussian_filter1d(column, sigma=max(0.5, 0.012 * size), axis=1)


def _speckle(rng: np.random.Generator, size: int) -> np.ndarray:
    """Fully developed speckle: Rayleigh amplitude of correlated complex Gaussian noise, mean 1.

    The correlation cell is wider laterally than axially, as a linear probe's resolution cell;
    its pixel size grows with resolution so the grain looks alike at 32 and 128 px.
    """
    sig = (max(0.45, 0.006 * size), max(0.7, 0.014 * size))  # (axial, lateral) in pixels
    re = ndimage.gaussian_filter(rng.standard_normal((size, size)), sig, mode="wrap")
    im = ndimage.gaussian_filter(rng.standard_normal((size, size)), sig, mode="wrap")
    # detected intensity, smoothed like the scanner's post-detection filter / display downsampling:
    # keeps the grain but removes the deep log-domain holes that single-look speckle shows as black dots
    intensity = ndimage.gaussian_filter(re * re + im * im, (0.5 * sig[0], 0.8 * sig[1]), mode="wrap")
    amp = np.sqrt(intensity)
    return amp / amp.mean()


def rasterise(scene: Scene, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Render `scene` at `size` x `size`; `seed` only drives the speckle realisation."""
    px = 1.0 / size
    coords = (np.arange(size) + 0.5) * px
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    x = coords[None, :]
    soft = 0.6 * px + 0.004

    # tissue layers: skin line, subcutaneous fat, fibroglandular layer, pectoral muscle
    fat_b, gland_b = _curve(scene.fat_bottom, x), _curve(scene.gland_bottom, x)
    in_gland = _sigmoid((yy - fat_b) / soft) * _sigmoid((gland_b - yy) / soft)
    in_muscle = _sigmoid((yy - gland_b) / soft)
    in_fat = np.clip(1.0 - in_gland - in_muscle, 0.0, 1.0)
    texture = _sample_grid(scene.texture, yy, xx)
    fibres = 0.75 + 0.5 * np.sin(2 * np.pi * scene.fibre_freq * (yy + scene.fibre_slope * xx)) ** 8
    echo = (in_fat * scene.fat_echo * np.exp(0.45 * texture)
            + in_gland * scene.gland_echo * np.exp(0.3 * texture)
            + in_muscle * scene.muscle_echo * fibres)
    # bright specular interfaces: skin (a thick bright band), fascia lines, Cooper's ligaments
    line_w = max(0.006, 0.7 * px)
    echo = echo + 1.6 * _sigmoid((scene.skin - yy) / soft) * _sigmoid((yy - 0.006) / soft)
    for curve in (fat_b, gland_b):
        echo = echo + 0.7 * np.exp(-(((yy - curve) / line_w) ** 2))
    for x0, y0, curv, slope, width, gain in scene.ligaments:
        yl = y0 + slope * (xx - x0) + curv * (xx - x0) ** 2
        reach = np.exp(-(((xx - x0) / 0.15) ** 2))  # ligaments are short arcs
        echo = echo + gain * reach * np.exp(-(((yy - yl) / max(width, 0.6 * px)) ** 2)) * (yy > scene.skin)

    mask = np.zeros((size, size), dtype=np.uint8)
    les = scene.lesion
    if les is not None:
        core, whole, rim = _lesion_fields(les, yy, xx, px)
        inner = les.echo * np.exp(_sample_grid(les.heterogeneity, yy, xx))
        echo = echo * (1.0 - whole) + np.minimum(echo, 0.75) * inner * whole
        echo = echo * (1.0 + les.rim * rim * (1.0 - whole))
        if len(les.calcifications):
            for cu, cv in les.calcifications:
                cx = les.cx + cu * les.rx
                cy = les.cy + cv * les.ry
                dot = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (max(0.007, 0.6 * px) ** 2)))
                echo = echo + 1.2 * dot * core
        echo = echo * (1.0 + les.posterior * _posterior_column(core, les, size))
        mask = (whole > 0.5).astype(np.uint8)

    # acquisition: attenuation with depth, speckle, log compression to the display range
    echo = echo * np.exp(-scene.attenuation * yy)
    speckled = np.maximum(echo, 1e-4) * _speckle(_rng(seed, scene.label, size, 0x5BECC1E), size)
    db = 20.0 * np.log10(speckled) + scene.gain_db
    image = np.clip((db + scene.dynamic_range_db) / scene.dynamic_range_db, 0.0, 1.0)
    image[: max(1, int(round(0.006 * size)))] = 0.0  # coupling-gel gap above the skin
    return (image * 255.0 + 0.5).astype(np.uint8), mask


def render_phantom(label: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 `size` x `size` B-mode-like image and uint8 lesion mask in {0, 1} (empty if normal).

    Deterministic in (label, size, seed); the same (label, seed) is the same scene at any size.
    """
    if int(size) < MIN_SIZE:
        raise ValueError(f"size={size} must be >= {MIN_SIZE} px")
    return rasterise(draw_scene(int(label), int(seed)), int(size), int(seed))


def render_batch(labels: Sequence[int], size: int, seeds: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Stacked images (N x size x size uint8) and masks for parallel `labels` and `seeds`."""
    if len(labels) != len(seeds):
        raise ValueError(f"labels ({len(labels)}) and seeds ({len(seeds)}) must have the same length")
    pairs = [render_phantom(lab, size, sd) for lab, sd in zip(labels, seeds)]
    if not pairs:
        return np.zeros((0, size, size), np.uint8), np.zeros((0, size, size), np.uint8)
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def phantom_seed(seed: int, label: int, i: int) -> int:
    """Seed of image `i` of class `label` in a dataset drawn with `seed` (also used by the DataModule)."""
    return (seed * 1_000_003 + label * 100_003 + i) % (2**31 - 1)


def write_phantom_tree(out_dir: str | os.PathLike, per_class: int, size: int, seed: int = 0) -> Path:
    """Write `<out>/<class>/<class>_<i:05d>.png` and the masks `<out>_masks/<class>/<class>_<i:05d>_mask.png`.

    Masks (0/255) go to a sibling tree (datamodules.mask_files) so `<out>` holds only images:
    ImageFolder-style readers counted every mask as an image. Refuses an existing non-empty
    `out_dir` (never overwrites). Both trees are written into temporary sibling folders and renamed
    into place at the end, the masks first, so an interrupted run leaves no half-written tree under
    `out_dir` (a mask tree left without its images by a kill is replaced).
    """
    out = Path(out_dir).expanduser()
    masks_out = mask_tree(out)
    if per_class < 1:
        raise ValueError(f"per_class={per_class} must be >= 1")
    if int(size) < MIN_SIZE:
        raise ValueError(f"size={size} must be >= {MIN_SIZE} px")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not empty; choose a new output folder "
                              "(make-phantoms never overwrites)")
    if masks_out.exists() and not (masks_out / MASK_TREE_MARKER).is_file() and any(masks_out.iterdir()):
        raise FileExistsError(f"{masks_out} (where the masks of {out} go) already exists and was not written by "
                              "make-phantoms; choose another output folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp_masks = Path(tempfile.mkdtemp(prefix=f".{masks_out.name}.tmp-", dir=out.parent))
    try:
        (tmp_masks / MASK_TREE_MARKER).write_text(f"lesion masks of {out.name}/ (synthmed make-phantoms)\n")
        for label, cls in enumerate(CLASS_NAMES):
            (tmp / cls).mkdir()
            (tmp_masks / cls).mkdir()
            for i in range(per_class):
                image, mask = render_phantom(label, size, phantom_seed(seed, label, i))
                Image.fromarray(image).save(tmp / cls / f"{cls}_{i:05d}.png")
                Image.fromarray(mask * 255).save(tmp_masks / cls / f"{cls}_{i:05d}_mask.png")
        if masks_out.exists():
            shutil.rmtree(masks_out)  # a leftover of an interrupted make-phantoms (marker checked above)
        tmp_masks.rename(masks_out)
        if out.exists():
            out.rmdir()  # empty (checked above); rename needs the name free
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(tmp_masks, ignore_errors=True)
        raise
    return out
