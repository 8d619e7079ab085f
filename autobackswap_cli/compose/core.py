"""The compose core: mask -> alpha -> placement -> blend, for one MASKS folder and one pool of backgrounds.

``compose``, ``BackSwapDataset`` and ``evaluate`` all cut out, place and paste through ``Compositor``, so a
composite is the same wherever it is made. The foreground's alpha is its *tight* mask (P(fg) >= ``tight``) with a
feathered edge; it stays where it was in its image unless a placement (scale, rotation, shift) moves it, and always
inside the frame. Backgrounds are scaled to cover the foreground image's size, keeping their aspect ratio, and
centre-cropped. Every random choice comes from a generator seeded by (seed, image key, composite index, epoch)
(``item_rng``), so results do not depend on workers, shards or order. Which backgrounds a foreground may take is one
of ``BG_RULES`` (``choose_background``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..engine import DatasetLayout, LowConfidence, NoForeground, StepError
from ..images import ImageError, ImageItem, bounding_box, mirror_path, path_key, read_image, read_mask
from ..formats.mask_quality import confidence_threshold, read_mask_quality
from ..formats.mask_thresholds import mask_threshold
from .pool import BG_RULES, BackgroundPool

if TYPE_CHECKING:
    from .options import ComposeOptions

DEFAULT_FEATHER = 2.0  # edge softness in pixels (Gaussian sigma = feather / 2)
# --place: where a foreground goes on its new background
PLACES = {
    "own": "where it was in its own image",
    "over-hole": "over the background's own object, covering the hole its fill left",
}

__all__ = ["BG_RULES", "DEFAULT_FEATHER", "PLACES", "Compositor", "Placement", "blend", "fit_background", "foreground_alpha", "item_rng", "key_digest",
           "place_foreground", "placement_matrix", "sample_placement"]


@dataclass(frozen=True)
class Placement:
    """How a foreground is moved: scaled and rotated about its centre, then shifted (pixels)."""

    scale: float = 1.0
    angle: float = 0.0
    shift_x: float = 0.0
    shift_y: float = 0.0


# --------------------------------------------------------------------------- choosing


def key_digest(key: str) -> int:
    """64 bits of the SHA-256 of an image key: the key's part of ``item_rng``'s seed."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()[:8], "little")


def item_rng(seed: int, key: str, index: int, epoch: int = 0, digest: int | None = None) -> np.random.Generator:
    """A generator that depends only on (seed, image key, composite index, epoch); ``digest`` is
    ``key_digest(key)`` when the caller has it already."""
    return np.random.default_rng([seed, key_digest(key) if digest is None else digest, index, epoch])


def sample_placement(rng: np.random.Generator, options: ComposeOptions) -> Placement:
    """A random placement within ``options``' scale range, rotation and shift (none: the identity)."""
    lo, hi = options.scale
    return Placement(
        scale=float(rng.uniform(lo, hi)) if hi > lo else float(lo),
        angle=float(rng.uniform(-options.rotate, options.rotate)) if options.rotate else 0.0,
        shift_x=float(rng.integers(-options.translate, options.translate + 1)) if options.translate else 0.0,
        shift_y=float(rng.integers(-options.translate, options.translate + 1)) if options.translate else 0.0,
    )


# --------------------------------------------------------------------------- pixels


def foreground_alpha(mask: np.ndarray, tight: float = 0.5, feather: float = DEFAULT_FEATHER) -> np.ndarray:
    """Tight binary mask (P(fg) >= tight) with a Gaussian-feathered edge, float32 in [0, 1].

    The soft edge lies inside the tight mask (eroded by ``feather`` px first), so the ring of the
    image's own background around the foreground is not carried into a composite. Only a box
    around the foreground is filtered: outside it alpha is 0 either way.
    """
    hard = mask >= tight - 1e-6
    if feather <= 0 or not hard.any():
        return hard.astype(np.float32)
    r = max(1, round(feather))
    pad = r + int(np.ceil(2 * feather)) + 2  # erosion radius + the blur's reach (OpenCV: 4 sigma, sigma = feather / 2)
    y0, y1, x0, x1 = bounding_box(hard, pad)
    crop = hard[y0:y1, x0:x1].astype(np.float32)
    inner = cv2.erode(crop, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    soft = cv2.GaussianBlur(inner if inner.any() else crop, (0, 0), feather / 2.0)
    soft[soft < 1e-3] = 0.0
    soft[soft > 1 - 1e-3] = 1.0
    alpha = np.zeros(mask.shape, np.float32)
    alpha[y0:y1, x0:x1] = soft
    return alpha


def fit_background(background: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale to cover height x width keeping the aspect ratio, then centre-crop."""
    bh, bw = background.shape[:2]
    if (bh, bw) == (height, width):
        return background
    scale = max(height / bh, width / bw)
    nh, nw = max(height, round(bh * scale)), max(width, round(bw * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(background, (nw, nh), interpolation=interp)
    y0, x0 = (nh - height) // 2, (nw - width) // 2
    return resized[y0 : y0 + height, x0 : x0 + width]


def _box_centre(mask: np.ndarray) -> tuple[float, float]:
    """(y, x) of the centre of a boolean mask's bounding box (what a placement moves and rotates about)."""
    y0, y1, x0, x1 = bounding_box(mask)
    return (y0 + y1 - 1) / 2.0, (x0 + x1 - 1) / 2.0


def placement_matrix(alpha: np.ndarray, placement: Placement) -> tuple[np.ndarray, Placement]:
    """Affine matrix scaling/rotating about the foreground's centre and shifting it, kept inside the frame.

    Returns the matrix and the placement actually used (the shift after clamping).
    """
    h, w = alpha.shape
    ys, xs = np.nonzero(alpha > 0)
    cy, cx = (ys.min() + ys.max()) / 2.0, (xs.min() + xs.max()) / 2.0
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), placement.angle, placement.scale)
    corners = np.array([[xs.min(), ys.min(), 1], [xs.max(), ys.min(), 1], [xs.min(), ys.max(), 1], [xs.max(), ys.max(), 1]], np.float64)
    moved = corners @ m.T
    x_lo, x_hi, y_lo, y_hi = moved[:, 0].min(), moved[:, 0].max(), moved[:, 1].min(), moved[:, 1].max()
    dx = float(np.clip(placement.shift_x, -x_lo, (w - 1) - x_hi)) if x_hi - x_lo <= w - 1 else (w - 1) / 2 - (x_lo + x_hi) / 2
    dy = float(np.clip(placement.shift_y, -y_lo, (h - 1) - y_hi)) if y_hi - y_lo <= h - 1 else (h - 1) / 2 - (y_lo + y_hi) / 2
    m[0, 2] += dx
    m[1, 2] += dy
    return m, Placement(placement.scale, placement.angle, round(dx, 2), round(dy, 2))


def place_foreground(image: np.ndarray, alpha: np.ndarray, placement: Placement) -> tuple[np.ndarray, np.ndarray, Placement]:
    """The foreground (image and alpha) moved by ``placement``, inside the frame; and the placement used."""
    if placement == Placement():
        return image, alpha, placement
    h, w = alpha.shape
    m, used = placement_matrix(alpha, placement)
    moved_image = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    moved_alpha = cv2.warpAffine(alpha, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return moved_image, moved_alpha, used


def blend(foreground: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    """alpha * foreground + (1 - alpha) * background, rounded to uint8 (exact where alpha is 0 or 1).

    Only the box where alpha > 0 is computed; the rest is the background.
    """
    out = background.copy()
    y0, y1, x0, x1 = bounding_box(alpha > 0)
    if y1 > y0 and x1 > x0:
        a = np.ascontiguousarray(alpha[y0:y1, x0:x1], dtype=np.float32)
        out[y0:y1, x0:x1] = cv2.blendLinear(np.ascontiguousarray(foreground[y0:y1, x0:x1]), np.ascontiguousarray(background[y0:y1, x0:x1]), a, 1.0 - a)
    return out


# --------------------------------------------------------------------------- the compose core


class Compositor:
    """THE compose core: mask -> alpha -> placement -> blend, for one MASKS folder and one pool of backgrounds.

    ``compose``, ``BackSwapDataset`` and ``evaluate`` all cut out and paste through it, so a composite is the same
    wherever it is made. ``tight`` None: what the masks' segmenter chose, else 0.5. ``min_confidence``: masks whose
    confidence (MASKS/mask_quality.csv) is below it are not trusted: their images are not cut out (``trust``) and
    their backgrounds (the object may still be in them) stay out of the pool; None: what ``segment`` recorded, else
    the default; 0 (evaluate's): every mask is used.
    """

    def __init__(self, masks_dir: Path, backgrounds_dir: Path, tight: float | None = None, feather: float = DEFAULT_FEATHER,
                 layout: DatasetLayout | None = None, min_confidence: float | None = 0.0, place: str = "own"):
        if place not in PLACES:
            raise StepError(f"--place must be one of {', '.join(PLACES)}; got {place!r}")
        self.place = place
        self.masks_dir = Path(masks_dir)
        if not self.masks_dir.is_dir():
            raise StepError(f"masks folder not found: {self.masks_dir}")
        self.tight, self.tight_source = mask_threshold(self.masks_dir, "tight", tight)
        self.feather = feather
        self.min_confidence, self.min_confidence_source = confidence_threshold(self.masks_dir, min_confidence)
        self.confidence = read_mask_quality(self.masks_dir) if self.min_confidence > 0 else None  # image -> confidence
        self.distrusted = {path_key(image) for image, c in (self.confidence or {}).items() if c < self.min_confidence}
        self.pool = BackgroundPool(backgrounds_dir, layout, leave_out=self.distrusted)

    def trust(self, item: ImageItem) -> None:
        """Raise ``LowConfidence`` (the image is left out, counted apart from failures) when the item's mask is
        below ``min_confidence``. An image the table does not list (a mask made before confidences) is trusted."""
        if item.key in self.distrusted:
            confidence = self.confidence.get(str(item.rel))
            said = f"{confidence:.2f}" if confidence is not None else "low"
            raise LowConfidence(f"mask confidence {said} < --min-confidence {self.min_confidence:g}: probably a wrong mask")

    def alpha(self, item: ImageItem, size_hw: tuple[int, int] | None, required: bool = True) -> np.ndarray:
        """The item's cut-out alpha (its mask must have ``size_hw`` when given); with ``required``, a missing mask
        is an ``ImageError`` naming the reason and an empty cut-out a ``NoForeground`` (the image is left out,
        counted apart from failures)."""
        mask_path = mirror_path(self.masks_dir, item.rel, ".png")
        if required and not mask_path.exists():
            raise ImageError(f"no mask for this image (expected {mask_path})")
        alpha = foreground_alpha(read_mask(mask_path, size_hw), self.tight, self.feather)
        if required and not alpha.any():
            raise NoForeground(f"no foreground in the mask at P(fg) >= {self.tight}: nothing to compose")
        return alpha

    def choose_background(self, item: ImageItem, rng: np.random.Generator, rule: str, exclude: set[str] = frozenset()) -> str:
        """A background (``rel`` in the pool) for ``item`` by ``rule`` (a ``BG_RULES`` name): class uniform, then
        image uniform, never the image's own, and none of ``exclude`` (earlier picks) while others remain."""
        return self.pool.choose(item, rng, rule, exclude)

    def background(self, rel: str, height: int, width: int) -> np.ndarray:
        """The background ``rel`` (relative to the pool) fitted to height x width."""
        return fit_background(read_image(self.pool.root / rel), height, width)

    def own_background(self, item: ImageItem) -> str:
        """The background made from this very image (``rel`` in the pool)."""
        own = self.pool.own(item.key)
        if own is None:
            raise ImageError(f"no background for this image in {self.pool.root}")
        return own

    def paste(self, image: np.ndarray, alpha: np.ndarray, background: np.ndarray, placement: Placement = Placement()) -> tuple[np.ndarray, Placement]:
        """The foreground of ``image`` moved by ``placement`` and blended onto ``background``; and the placement
        used (its shift kept inside the frame)."""
        fg, a, used = place_foreground(image, alpha, placement)
        return blend(fg, a, background), used

    def swap(self, image: np.ndarray, alpha: np.ndarray, background_rel: str, placement: Placement = Placement()) -> tuple[np.ndarray, Placement]:
        """The foreground on the background ``background_rel`` of the pool (``place`` "over-hole": moved over the
        background's own filled hole first, ``placed``)."""
        h, w = alpha.shape
        return self.paste(image, alpha, self.background(background_rel, h, w), self.placed(alpha, background_rel, placement))

    def placed(self, alpha: np.ndarray, background_rel: str, placement: Placement) -> Placement:
        """``placement`` as ``place`` asks: unchanged ("own": the foreground stays where it was in its image), or
        shifted so its centre lands on the centre of the background's own object, whose filled hole it then covers
        ("over-hole"; that image's mask fitted like the background; unchanged where there is none)."""
        if self.place == "own":
            return placement
        mask_path = self.masks_dir / f"{path_key(background_rel)}.png"
        fg = alpha > 0
        if not mask_path.exists() or not fg.any():
            return placement
        hole = fit_background(read_mask(mask_path), *alpha.shape) >= self.tight
        if not hole.any():
            return placement
        (hy, hx), (fy, fx) = _box_centre(hole), _box_centre(fg)
        return Placement(placement.scale, placement.angle, placement.shift_x + hx - fx, placement.shift_y + hy - fy)
