"""Physics-respecting augmentations for canonical-frame mammograms, recorded so every one can be replayed.

Inputs are float32 HxW images in the canonical frame (chest wall on the left, nipple to the right) on their
physical intensity scale, *before* normalisation, with air set to a constant background value. Geometry is
one affine (rotation, scale, translation, crop jitter, optional vertical flip) applied by a single
`cv2.warpAffine`; boxes and masks follow it and the matrix is returned so heatmaps map back. Intensity changes
(gamma, contrast, Poisson-Gaussian noise) stay inside the breast and keep the value range meaningful.

What is deliberately left out:
- Horizontal flip. In the canonical frame a left-right mirror puts the chest wall on the right; mirroring
  back to canonical is the identity on the pixels, so the only effect would be swapping the laterality code.
  That is an exam-level relabelling (swap the L and R view pairs and their breast labels together), which
  belongs in the exam dataset, not in a per-image transform.
- Vertical flip of MLO/ML views: the pectoral muscle is a triangle in the upper chest-wall corner and the
  inframammary fold sits at the bottom, so a flipped MLO is an image no scanner produces. A CC view is taken
  from above and is close to symmetric about the chest-wall-to-nipple axis (lateral vs medial side), so its
  vertical mirror is a plausible CC of a breast (the mirrored breast), only with lateral and medial swapped.

Each random transform draws from the `np.random.Generator` it is given, never from global state; use
`item_rng(seed, epoch, index)` to get one that depends only on the item, not on the worker.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import cv2
import numpy as np
import torch

__all__ = [
    "Augment",
    "AugmentConfig",
    "AugmentRecord",
    "TTATransform",
    "build_augment",
    "cutmix",
    "geometric_matrix",
    "item_rng",
    "map_heatmap_back",
    "mix_batch",
    "mix_targets",
    "mixup",
    "replay_mix",
    "tta_transforms",
    "worker_init_fn",
]

_RANGE_FIELDS = ("scale", "gamma", "contrast", "noise_gain", "noise_sigma")


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of every augmentation; a range (low, high) is sampled uniformly.

    Defaults stay within what detectors and positioning produce: rotation up to 10 degrees, scale 0.9-1.1,
    translation up to 4 % (horizontal only towards the chest wall, so the breast never detaches from it),
    crop jitter trimming up to 6 %, gamma 0.8-1.25, contrast 0.9-1.1 around the breast median, and noise whose
    variance is `gain * range * (x - background) + (sigma * range)**2`, range = max - background.
    MixUp/CutMix are batch-level and off by default (`mix="none"`), applied by `mix_batch`; `mammokit train` takes
    them from `data.mixup` / `data.cutmix` instead (`training.mixing`).
    """

    enabled: bool = True
    p_affine: float = 0.8
    rotation_deg: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.04
    p_crop: float = 0.5
    crop: float = 0.06
    p_vflip: float = 0.5
    vflip_views: tuple[str, ...] = ("CC",)
    p_gamma: float = 0.5
    gamma: tuple[float, float] = (0.8, 1.25)
    p_contrast: float = 0.5
    contrast: tuple[float, float] = (0.9, 1.1)
    p_noise: float = 0.3
    noise_gain: tuple[float, float] = (0.0, 1e-4)
    noise_sigma: tuple[float, float] = (0.0, 5e-3)
    background: float | None = None
    tissue_threshold: float = 0.01
    mix: Literal["none", "mixup", "cutmix"] = "none"
    mix_alpha: float = 0.4
    p_mix: float = 0.5

    def __post_init__(self) -> None:
        for name in ("p_affine", "p_crop", "p_vflip", "p_gamma", "p_contrast", "p_noise", "p_mix"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"AugmentConfig.{name}={value}: a probability must be in [0, 1]")
        for name in _RANGE_FIELDS:
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 2 or value[0] > value[1] or value[0] < 0:
                raise ValueError(f"AugmentConfig.{name}={value}: expected (low, high) with 0 <= low <= high")
            object.__setattr__(self, name, value)
        for name in ("scale", "gamma", "contrast"):
            if getattr(self, name)[0] <= 0:
                raise ValueError(f"AugmentConfig.{name}={getattr(self, name)}: must be positive")
        if not 0.0 <= self.rotation_deg <= 45.0:
            raise ValueError(f"AugmentConfig.rotation_deg={self.rotation_deg}: must be in [0, 45]")
        for name in ("translate", "crop"):
            if not 0.0 <= getattr(self, name) < 0.5:
                raise ValueError(f"AugmentConfig.{name}={getattr(self, name)}: must be in [0, 0.5)")
        if not 0.0 <= self.tissue_threshold < 1.0:
            raise ValueError(f"AugmentConfig.tissue_threshold={self.tissue_threshold}: must be in [0, 1)")
        if self.mix not in ("none", "mixup", "cutmix"):
            raise ValueError(f"AugmentConfig.mix={self.mix!r}: expected 'none', 'mixup' or 'cutmix'")
        if self.mix_alpha <= 0:
            raise ValueError(f"AugmentConfig.mix_alpha={self.mix_alpha}: must be positive")
        object.__setattr__(self, "vflip_views", tuple(v.upper() for v in self.vflip_views))


@dataclass
class AugmentRecord:
    """What one augmentation call did, enough to replay it exactly with `Augment.apply`.

    `matrix` is the 2x3 affine from original to augmented pixel-centre coordinates (OpenCV convention);
    intensity entries are None when that transform was not applied. `seed` holds the entropy and spawn key
    of the generator's SeedSequence when it had one (as `item_rng` makes).
    """

    shape: tuple[int, int]
    view: str
    background: float
    matrix: list[list[float]]
    angle_deg: float = 0.0
    scale: float = 1.0
    translate: tuple[float, float] = (0.0, 0.0)
    crop: tuple[float, float] = (0.0, 0.0)
    vflip: bool = False
    gamma: float | None = None
    contrast: float | None = None
    noise_gain: float | None = None
    noise_sigma: float | None = None
    noise_seed: int | None = None
    seed: dict[str, Any] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists, floats, ints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AugmentRecord:
        """Inverse of `to_dict`."""
        data = dict(data)
        for key in ("shape", "translate", "crop"):
            data[key] = tuple(data[key])
        return cls(**data)


def _translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def _edge_to_centre(m_edge: np.ndarray) -> np.ndarray:
    """Convert a 3x3 affine on continuous edge coordinates (pixel i spans [i, i+1)) to pixel-centre ones."""
    return _translation(-0.5, -0.5) @ m_edge @ _translation(0.5, 0.5)


def geometric_matrix(
    shape: tuple[int, int],
    *,
    angle_deg: float = 0.0,
    scale: float = 1.0,
    translate: tuple[float, float] = (0.0, 0.0),
    crop: tuple[float, float] = (0.0, 0.0),
    vflip: bool = False,
    chest_wall: tuple[float, float] | None = None,
) -> np.ndarray:
    """Build the 2x3 pixel-centre affine of one augmentation that keeps the chest wall on the left edge.

    Order: vertical flip, then rotation and scale about the middle of the chest-wall segment, translation
    (ty, tx) in pixels, crop jitter (fraction `crop[0]` trimmed from bottom/top and right, top offset
    `crop[1]` of the trim, zoomed back to the full size), and finally a shift to the left just large enough
    that the rotated chest-wall segment `chest_wall = (row_start, row_end)` stays at or beyond the left edge
    (as the detector edge cuts a rotated breast in a real exposure). With `chest_wall=None` the pivot is the
    left-edge midpoint and no shift is applied (breast not touching the left edge).
    """
    height = shape[0]
    flip = np.array([[1.0, 0, 0], [0, -1.0, height], [0, 0, 1.0]]) if vflip else np.eye(3)
    y0, y1 = chest_wall if chest_wall is not None else (0.0, float(height))
    if vflip:
        y0, y1 = height - y1, height - y0
    pivot = 0.5 * (y0 + y1)
    cos, sin = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    rot = np.array([[scale * cos, scale * sin, 0.0], [-scale * sin, scale * cos, 0.0], [0.0, 0.0, 1.0]])
    ty, tx = translate
    rst = _translation(tx, pivot + ty) @ rot @ _translation(0.0, -pivot)
    keep, top = 1.0 - crop[0], crop[0] * crop[1] * height
    zoom = np.array([[1.0 / keep, 0, 0], [0, 1.0 / keep, -top / keep], [0, 0, 1.0]])
    m_edge = zoom @ rst @ flip
    if chest_wall is not None:
        ends = m_edge @ np.array([[0.0, 0.0], [chest_wall[0], chest_wall[1]], [1.0, 1.0]])
        m_edge = _translation(-max(0.0, float(ends[0].max())), 0.0) @ m_edge
    return _edge_to_centre(m_edge)[:2]


def _as_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"{name}: expected a non-empty HxW array, got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.number):
        raise ValueError(f"{name}: expected a numeric array, got dtype {image.dtype}")
    image = image.astype(np.float32, copy=False)
    if not np.isfinite(image).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return image


def _tissue(image: np.ndarray, background: float, threshold: float) -> np.ndarray:
    """Boolean breast mask: pixels above background by more than `threshold` of the dynamic range."""
    span = float(image.max()) - background
    return image > background + threshold * span if span > 0 else np.zeros(image.shape, bool)


def _warp(array: np.ndarray, matrix: np.ndarray, fill: float, nearest: bool = False, inverse: bool = False):
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    if inverse:
        flags |= cv2.WARP_INVERSE_MAP
    height, width = array.shape
    return cv2.warpAffine(
        array,
        matrix.astype(np.float64),
        (width, height),
        flags=flags,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=float(fill),
    )


def _transform_boxes(boxes: np.ndarray, matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Axis-aligned hull of each transformed (y0, x0, y1, x1) box (edge coordinates), clipped to the image."""
    if len(boxes) == 0:
        return boxes.astype(np.float32)
    corners_y = boxes[:, [0, 0, 2, 2]] - 0.5
    corners_x = boxes[:, [1, 3, 1, 3]] - 0.5
    new_x = matrix[0, 0] * corners_x + matrix[0, 1] * corners_y + matrix[0, 2] + 0.5
    new_y = matrix[1, 0] * corners_x + matrix[1, 1] * corners_y + matrix[1, 2] + 0.5
    out = np.stack([new_y.min(1), new_x.min(1), new_y.max(1), new_x.max(1)], axis=1)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, shape[0])
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, shape[1])
    return out.astype(np.float32)


def apply_gamma(image: np.ndarray, gamma: float, background: float) -> np.ndarray:
    """Gamma on the [0, 1]-rescaled breast values (background -> 0, max -> 1); order and range are kept."""
    top = float(image.max())
    if top <= background:
        return image.copy()
    unit = image - np.float32(background)
    unit *= np.float32(1.0 / (top - background))
    np.clip(unit, 0.0, 1.0, out=unit)
    out = cv2.pow(unit, float(gamma))
    out *= np.float32(top - background)
    out += np.float32(background)
    return out


_MEDIAN_SAMPLE = 1_000_000


def apply_contrast(image: np.ndarray, factor: float, tissue: np.ndarray, background: float) -> np.ndarray:
    """Scale breast values about their median, clipped to [background, original max]; air is untouched.

    The median is taken over at most ~1M evenly strided breast pixels (exact for smaller images; the
    difference is negligible for a mild contrast change and keeps full-field images fast).
    """
    out = image.copy()
    values = image[tissue]
    if values.size:
        median = float(np.median(values[:: max(1, values.size // _MEDIAN_SAMPLE)]))
        values -= np.float32(median)
        values *= np.float32(factor)
        values += np.float32(median)
        out[tissue] = np.clip(values, background, float(image.max()))
    return out


def apply_noise(
    image: np.ndarray, gain: float, sigma: float, seed: int, tissue: np.ndarray, background: float
) -> np.ndarray:
    """Add Poisson-Gaussian noise inside the breast: variance gain*R*(x-bg) + (sigma*R)^2, R = max - bg.

    Quantum (Poisson) noise grows linearly with signal and electronic noise is constant; the Gaussian
    approximation of the Poisson part is exact enough at mammographic exposures. Values stay >= background.
    The normal draws come from a torch CPU generator seeded with `seed` (about 3x faster than NumPy's).
    """
    span = float(image.max()) - background
    out = image.copy()
    values = image[tissue]
    if span <= 0 or not values.size:
        return out
    generator = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(values.size, generator=generator, dtype=torch.float32).numpy()
    std = np.maximum(values - np.float32(background), np.float32(0.0))
    std *= np.float32(gain * span)
    std += np.float32((sigma * span) ** 2)
    np.sqrt(std, out=std)
    noise *= std
    noise += values
    out[tissue] = np.maximum(noise, np.float32(background))
    return out


class Augment:
    """The augmentation pipeline: `augment(image, boxes=, mask=, view=, rng=) -> (image, boxes, mask, record)`."""

    def __init__(self, config: AugmentConfig | None = None) -> None:
        self.config = config or AugmentConfig()

    def background(self, image: np.ndarray) -> float:
        """The air value: the configured one, else the image minimum."""
        return float(self.config.background) if self.config.background is not None else float(image.min())

    def sample(self, image: np.ndarray, *, view: str = "CC", rng: np.random.Generator) -> AugmentRecord:
        """Draw the parameters of one augmentation for `image` (always the same number of draws per call)."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng: expected numpy.random.Generator, got {type(rng).__name__}")
        cfg, image = self.config, _as_image(image)
        background = self.background(image)
        u = rng.random(16)
        noise_seed = int(rng.integers(0, 2**63 - 1))
        rec = AugmentRecord(shape=image.shape, view=str(view), background=background, matrix=[])
        seq = getattr(rng.bit_generator, "seed_seq", None)
        if isinstance(seq, np.random.SeedSequence):
            rec.seed = {"entropy": seq.entropy, "spawn_key": list(seq.spawn_key)}
        height, width = image.shape

        def lerp(low: float, high: float, t: float) -> float:
            return float(low + (high - low) * t)

        if cfg.enabled:
            rec.vflip = bool(str(view).upper() in cfg.vflip_views and u[0] < cfg.p_vflip)
            if u[1] < cfg.p_affine:
                rec.angle_deg = lerp(-cfg.rotation_deg, cfg.rotation_deg, u[2])
                rec.scale = lerp(*cfg.scale, u[3])
                shift_x = float(-cfg.translate * u[5] * width)  # towards the chest wall only
                rec.translate = (lerp(-cfg.translate, cfg.translate, u[4]) * height, shift_x)
            if u[6] < cfg.p_crop:
                rec.crop = (cfg.crop * float(u[7]), float(u[8]))
            rec.gamma = lerp(*cfg.gamma, u[10]) if u[9] < cfg.p_gamma else None
            rec.contrast = lerp(*cfg.contrast, u[12]) if u[11] < cfg.p_contrast else None
            if u[13] < cfg.p_noise:
                rec.noise_gain, rec.noise_sigma = lerp(*cfg.noise_gain, u[14]), lerp(*cfg.noise_sigma, u[15])
                rec.noise_seed = noise_seed
        span = float(image.max()) - background
        rows = np.flatnonzero(image[:, 0] > background + cfg.tissue_threshold * span) if span > 0 else []
        chest_wall = (float(rows[0]), float(rows[-1] + 1)) if len(rows) else None
        matrix = geometric_matrix(
            image.shape,
            angle_deg=rec.angle_deg,
            scale=rec.scale,
            translate=rec.translate,
            crop=rec.crop,
            vflip=rec.vflip,
            chest_wall=chest_wall,
        )
        rec.matrix = matrix.tolist()
        return rec

    def apply(
        self,
        image: np.ndarray,
        record: AugmentRecord,
        *,
        boxes: np.ndarray | None = None,
        mask: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Apply a sampled (or stored) record deterministically: geometry, gamma, contrast, then noise."""
        image = _as_image(image)
        if tuple(image.shape) != tuple(record.shape):
            raise ValueError(f"image: shape {image.shape} differs from the record's {tuple(record.shape)}")
        if boxes is not None:
            boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if np.size(boxes) else np.zeros((0, 4))
            if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
                raise ValueError("boxes: expected rows (y0, x0, y1, x1) with y1 >= y0 and x1 >= x0")
        if mask is not None and np.shape(mask) != image.shape:
            raise ValueError(f"mask: shape {np.shape(mask)} differs from image shape {image.shape}")
        matrix = np.asarray(record.matrix, dtype=np.float64)
        background = record.background
        identity = np.allclose(matrix, [[1, 0, 0], [0, 1, 0]])
        out = image.copy() if identity else _warp(image, matrix, background)
        if boxes is not None:
            boxes = _transform_boxes(boxes, matrix, image.shape)
        if mask is not None and not identity:
            mask = np.asarray(mask)
            warped = _warp(mask.astype(np.uint8) if mask.dtype == bool else mask, matrix, 0, nearest=True)
            mask = warped.astype(mask.dtype)
        if record.gamma is not None:
            out = apply_gamma(out, record.gamma, background)
        if record.contrast is not None or record.noise_seed is not None:
            tissue = _tissue(out, background, self.config.tissue_threshold)
            if record.contrast is not None:
                out = apply_contrast(out, record.contrast, tissue, background)
            if record.noise_seed is not None:
                out = apply_noise(
                    out, record.noise_gain or 0.0, record.noise_sigma or 0.0, record.noise_seed, tissue, background
                )
        return out.astype(np.float32, copy=False), boxes, mask

    def __call__(
        self,
        image: np.ndarray,
        *,
        boxes: np.ndarray | None = None,
        mask: np.ndarray | None = None,
        view: str = "CC",
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, AugmentRecord]:
        """Sample and apply one augmentation; boxes (N, 4) are (y0, x0, y1, x1) pixel edges, y1/x1 exclusive."""
        record = self.sample(image, view=view, rng=rng)
        out, boxes, mask = self.apply(image, record, boxes=boxes, mask=mask)
        return out, boxes, mask, record


def build_augment(config: AugmentConfig | Mapping[str, Any] | Any | None = None) -> Augment:
    """Build the pipeline from an `AugmentConfig`, a mapping, or a pydantic model with the same field names."""
    if config is None or isinstance(config, AugmentConfig):
        return Augment(config)
    if hasattr(config, "model_dump"):
        config = config.model_dump()
    if not isinstance(config, Mapping):
        raise TypeError(f"config: expected AugmentConfig, mapping or pydantic model, got {type(config).__name__}")
    known = {f.name for f in fields(AugmentConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"augment config: unknown key(s) {unknown}; known: {sorted(known)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    return Augment(AugmentConfig(**values))


def _heatmap_matrix(matrix: np.ndarray, image_shape: tuple[int, int], map_shape: tuple[int, int]) -> np.ndarray:
    """Re-express an image-grid pixel-centre affine on a heatmap grid covering the same field of view."""
    fy, fx = map_shape[0] / image_shape[0], map_shape[1] / image_shape[1]
    to_map = _edge_to_centre(np.diag([fx, fy, 1.0]))
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return (to_map @ full @ np.linalg.inv(to_map))[:2]


def map_heatmap_back(heatmap: np.ndarray, record: AugmentRecord, *, fill: float = 0.0) -> np.ndarray:
    """Map a heatmap computed on the augmented image back to the original frame (any resolution, same aspect)."""
    heatmap = _as_image(heatmap, "heatmap")
    matrix = _heatmap_matrix(np.asarray(record.matrix), tuple(record.shape), heatmap.shape)
    return _warp(heatmap, matrix, fill, inverse=True)


@dataclass(frozen=True)
class TTATransform:
    """A deterministic, invertible test-time transform; geometry is defined relative to the image size.

    `forward` transforms an image (rotation/scale pivot at the chest-wall midpoint, shifted to keep the chest
    wall on the left edge); `inverse_heatmap` maps a heatmap of the transformed image back to the original
    frame, at whatever resolution it has, provided its aspect ratio matches the image's.
    """

    name: str
    angle_deg: float = 0.0
    scale: float = 1.0
    vflip: bool = False
    gamma: float | None = None

    def matrix(self, shape: tuple[int, int]) -> np.ndarray:
        """2x3 pixel-centre affine of this transform on a grid of `shape`."""
        return geometric_matrix(
            shape, angle_deg=self.angle_deg, scale=self.scale, vflip=self.vflip, chest_wall=(0.0, float(shape[0]))
        )

    def forward(self, image: np.ndarray, *, background: float | None = None) -> np.ndarray:
        """Transform an image; `background` defaults to its minimum."""
        image = _as_image(image)
        bg = float(image.min()) if background is None else float(background)
        matrix = self.matrix(image.shape)
        out = image.copy() if np.allclose(matrix, [[1, 0, 0], [0, 1, 0]]) else _warp(image, matrix, bg)
        return apply_gamma(out, self.gamma, bg) if self.gamma is not None else out

    def inverse_heatmap(self, heatmap: np.ndarray, *, fill: float = 0.0) -> np.ndarray:
        """Map a heatmap of the transformed image back to the original frame; uncovered pixels get `fill`."""
        heatmap = _as_image(heatmap, "heatmap")
        matrix = self.matrix(heatmap.shape)
        if np.allclose(matrix, [[1, 0, 0], [0, 1, 0]]):
            return heatmap.copy()
        return _warp(heatmap, matrix, fill, inverse=True)


def tta_transforms(n: int, *, view: str = "CC") -> list[TTATransform]:
    """The first `n` test-time transforms, identity first; vertical flip only for CC views (see module doc)."""
    candidates = [TTATransform("identity")]
    if view.upper() in AugmentConfig().vflip_views:
        candidates.append(TTATransform("vflip", vflip=True))
    candidates += [
        TTATransform("scale1.05", scale=1.05),
        TTATransform("rot+5", angle_deg=5.0),
        TTATransform("rot-5", angle_deg=-5.0),
        TTATransform("gamma0.9", gamma=0.9),
        TTATransform("gamma1.1", gamma=1.1),
        TTATransform("scale0.95", scale=0.95),
    ]
    if not 1 <= n <= len(candidates):
        raise ValueError(f"n={n}: view {view!r} has 1..{len(candidates)} test-time transforms")
    return candidates[:n]


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """A generator that depends only on (seed, epoch, item index): reproducible for any worker count,
    distinct across items and epochs (independent SeedSequence streams)."""
    for name, value in (("seed", seed), ("epoch", epoch), ("index", index)):
        if int(value) != value or value < 0:
            raise ValueError(f"{name}={value}: must be a non-negative integer")
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(epoch), int(index))))


def worker_init_fn(worker_id: int) -> None:
    """DataLoader hook: reseed NumPy's global, Python's and OpenCV's RNGs from the worker's torch seed.

    Torch gives every worker of every epoch its own seed; this spreads it to the global RNGs that
    third-party code may use, so no two workers repeat a random stream. mammokit's own transforms take
    explicit generators (`item_rng`) and do not depend on this.
    """
    info = torch.utils.data.get_worker_info()
    base = info.seed if info is not None else torch.initial_seed()
    seq = np.random.SeedSequence(int(base) % 2**64, spawn_key=(int(worker_id),))
    np.random.seed(seq.generate_state(4))
    random.seed(int(seq.generate_state(2, np.uint64)[1]))
    cv2.setRNGSeed(int(seq.generate_state(1)[0] & 0x7FFFFFFF))


def spawned_worker_init(worker_id: int) -> None:
    """`worker_init_fn` plus one OpenCV thread per worker (torch already uses one): workers must not crowd the model.

    Only for spawned workers: in a forked child, `cv2.setNumThreads` waits for the parent's pool threads, which do
    not exist there, and never returns.
    """
    worker_init_fn(worker_id)
    cv2.setNumThreads(1)


def loader_worker_kwargs(num_workers: int, *, persistent: bool = False) -> dict[str, Any]:
    """DataLoader keyword arguments for `num_workers` mammokit workers (none for 0).

    Workers are spawned, not forked: a forked child inherits the parent's OpenCV thread pool half-alive (once the
    parent has used OpenCV, e.g. in `show` or preprocessing) and `cv2.setNumThreads` there never returns. Spawned
    workers start clean, at a few seconds of start-up each; `persistent` keeps them for every epoch of the loader.
    """
    if num_workers <= 0:
        return {"num_workers": 0}
    return {"num_workers": num_workers, "worker_init_fn": spawned_worker_init, "multiprocessing_context": "spawn",
            "persistent_workers": persistent}


def _check_batch(images: torch.Tensor, targets: torch.Tensor) -> None:
    if images.ndim < 3 or targets.ndim < 1 or images.shape[0] != targets.shape[0]:
        raise ValueError(
            f"images {tuple(images.shape)} and targets {tuple(targets.shape)}: expected "
            "(N, ..., H, W) and (N, ...) with the same N"
        )


def _partners(perm: torch.Tensor | None, n: int, rng: np.random.Generator, device: torch.device) -> torch.Tensor:
    """The given permutation of the batch, or a random one."""
    if perm is None:
        return torch.as_tensor(rng.permutation(n), device=device)
    perm = torch.as_tensor(perm, device=device)
    if sorted(perm.tolist()) != list(range(n)):
        raise ValueError(f"perm {perm.tolist()} is not a permutation of the batch's {n} items")
    return perm


def mixup(
    images: torch.Tensor, targets: torch.Tensor, *, alpha: float, rng: np.random.Generator,
    perm: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """MixUp along the batch: x = lam*x + (1-lam)*x[perm], same for targets; lam ~ Beta(alpha, alpha).

    Works on whole images (N, C, H, W) or flattened patches; the record holds lam and the permutation (drawn
    unless `perm` is given, e.g. to pair only items of the same view layout).
    """
    _check_batch(images, targets)
    lam = float(rng.beta(alpha, alpha))
    perm = _partners(perm, images.shape[0], rng, images.device)
    mixed = lam * images + (1.0 - lam) * images[perm]
    soft = targets.float()
    return mixed, lam * soft + (1.0 - lam) * soft[perm], {"mode": "mixup", "lam": lam, "perm": perm.tolist()}


def cutmix(
    images: torch.Tensor, targets: torch.Tensor, *, alpha: float, rng: np.random.Generator,
    perm: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """CutMix: paste a box from x[perm] and mix targets by the pasted area fraction (the actual, clipped box).

    The record's box is (y0, x0, y1, x1) in pixels of `images`; `perm` as in `mixup`.
    """
    _check_batch(images, targets)
    height, width = images.shape[-2:]
    lam = float(rng.beta(alpha, alpha))
    perm = _partners(perm, images.shape[0], rng, images.device)
    cut_h, cut_w = round(height * math.sqrt(1.0 - lam)), round(width * math.sqrt(1.0 - lam))
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy - cut_h // 2 + cut_h, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx - cut_w // 2 + cut_w, width)
    mixed = images.clone()
    mixed[..., y0:y1, x0:x1] = images[perm][..., y0:y1, x0:x1]
    lam_eff = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
    soft = targets.float()
    record = {"mode": "cutmix", "lam": lam_eff, "perm": perm.tolist(), "box": [y0, x0, y1, x1],
              "shape": [height, width]}
    return mixed, lam_eff * soft + (1.0 - lam_eff) * soft[perm], record


def replay_mix(images: torch.Tensor, record: dict[str, Any]) -> torch.Tensor:
    """Apply a `mixup` / `cutmix` record to other images of the same batch, e.g. a larger rendering of them (the
    CutMix box scales to their (H, W))."""
    if record["mode"] == "none":
        return images
    perm = torch.as_tensor(record["perm"], device=images.device)
    if record["mode"] == "mixup":
        return record["lam"] * images + (1.0 - record["lam"]) * images[perm]
    fy, fx = images.shape[-2] / record["shape"][0], images.shape[-1] / record["shape"][1]
    y0, x0, y1, x1 = record["box"]
    rows, cols = slice(round(y0 * fy), round(y1 * fy)), slice(round(x0 * fx), round(x1 * fx))
    mixed = images.clone()
    mixed[..., rows, cols] = images[perm][..., rows, cols]
    return mixed


def mix_targets(targets: torch.Tensor, record: dict[str, Any]) -> torch.Tensor:
    """Other targets (N, ...) of a mixed batch, mixed with the record's weight (NaN, unknown, stays unknown)."""
    soft = targets.float()
    if record["mode"] == "none":
        return soft
    perm = torch.as_tensor(record["perm"], device=targets.device)
    return record["lam"] * soft + (1.0 - record["lam"]) * soft[perm]


def mix_batch(
    images: torch.Tensor, targets: torch.Tensor, config: AugmentConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Apply the configured batch mix with probability `p_mix`; `mix="none"` (default) returns the batch as is."""
    if config.mix == "none" or rng.random() >= config.p_mix:
        return images, targets.float(), {"mode": "none"}
    fn = mixup if config.mix == "mixup" else cutmix
    return fn(images, targets, alpha=config.mix_alpha, rng=rng)
