"""Edge refinement: a segmenter's P x P (or pixel) probabilities brought to the image's size and snapped to its
edges (``--refine``). ``REFINERS`` is the one registry of the methods: each names its help, the guide a worker
takes from the image and sends along, and the refinement itself; ``--refine``'s choices and help, ``segment``'s
workers and the trainer's threshold calibration all read it, so a method is one entry (a missing part is a
``TypeError`` at import). ``segment`` writes masks through it; ``train-segmenter`` calibrates its thresholds on
masks made the same way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
# When GrabCut keeps less than this share of what the model found (P >= 0.5), it cuts again with the model's
# foreground as sure foreground. Held-out-object photos, data seed 1, one trained model: mean IoU 0.798 -> 0.804
# beside distractors (16 of 450 images cut again), 0.894 -> 0.895 without; 0.3-0.85 all within 0.001 of 0.5.
GRABCUT_KEEPS = 0.5


def upsample_probabilities(probs: np.ndarray, height: int, width: int) -> np.ndarray:
    """P x P patch probabilities -> H x W, bilinear between patch centres (smooth, no blocks)."""
    return np.clip(cv2.resize(probs.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR), 0, 1)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float, subsample: int = 1) -> np.ndarray:
    """He et al.'s guided filter with a grayscale guide: edges of ``guide`` carried into ``src``.

    With ``subsample`` s > 1 it is the *fast* guided filter (He & Sun 2015): the linear
    coefficients are computed on an s-times smaller image and upsampled, then applied to
    the full-resolution guide, so edges stay sharp at a fraction of the cost.
    """
    g_full = cv2.cvtColor(guide, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0 if guide.ndim == 3 else guide.astype(np.float32)
    h, w = g_full.shape
    g, s, r = g_full, src.astype(np.float32), radius
    if subsample > 1:
        small = (max(1, round(w / subsample)), max(1, round(h / subsample)))
        g = cv2.resize(g_full, small, interpolation=cv2.INTER_AREA)
        s = cv2.resize(s, small, interpolation=cv2.INTER_AREA)
        r = max(1, round(radius / subsample))
    ksize = (2 * r + 1, 2 * r + 1)

    def box(a: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(a, -1, ksize, borderType=cv2.BORDER_REFLECT)

    mean_g, mean_s = box(g), box(s)
    cov = box(g * s) - mean_g * mean_s
    var = box(g * g) - mean_g * mean_g
    a = cov / (var + eps)
    b = mean_s - a * mean_g
    mean_a, mean_b = box(a), box(b)
    if subsample > 1:
        mean_a = cv2.resize(mean_a, (w, h), interpolation=cv2.INTER_LINEAR)
        mean_b = cv2.resize(mean_b, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(mean_a * g_full + mean_b, 0, 1)


def _guided(guide: np.ndarray, soft: np.ndarray, cell: float) -> np.ndarray:
    """``--refine guided``: the guided filter at about a patch's radius, on the luma guide."""
    radius = max(2, int(round(cell)))
    return guided_filter(guide, soft, radius=radius, eps=1e-3, subsample=max(1, radius // 8))


def _grabcut_refined(image: np.ndarray, soft: np.ndarray, cell: float) -> np.ndarray:
    """``--refine grabcut``: GrabCut seeded by the model's sure and unsure bands, a soft edge kept."""
    trimap = np.full(soft.shape, cv2.GC_PR_BGD, np.uint8)
    trimap[soft >= 0.5] = cv2.GC_PR_FGD
    trimap[soft >= 0.9] = cv2.GC_FGD
    trimap[soft <= 0.05] = cv2.GC_BGD
    if not (trimap == cv2.GC_FGD).any() and not (trimap == cv2.GC_PR_FGD).any():
        return soft
    if not ((trimap == cv2.GC_BGD) | (trimap == cv2.GC_PR_BGD)).any():
        return soft
    found = soft >= 0.5
    hard = _grabcut(image, trimap.copy())
    if hard.sum() < GRABCUT_KEEPS * found.sum():
        # GrabCut's colour models took an object the model found, unsure (P 0.5-0.9, so nothing was sure), for
        # background: cut again with the model's foreground, pulled in by a quarter patch, as sure foreground.
        reach = 2 * max(1, round(cell / 4)) + 1
        core = cv2.erode(found.astype(np.uint8), np.ones((reach, reach), np.uint8)).astype(bool)
        if core.any():
            trimap[core] = cv2.GC_FGD
            hard = _grabcut(image, trimap)
    # Keep a soft edge: blend the hard cut with the model where GrabCut was unsure.
    return np.clip(cv2.GaussianBlur(hard, (0, 0), 1.0), 0, 1)


@dataclass(frozen=True)
class Refiner:
    """One ``--refine`` method: its help, the guide a worker takes from the RGB image (None: none needed), and the
    refinement of a full-size soft mask with that guide (``cell``: the patch size in pixels)."""

    help: str
    guide: Callable[[np.ndarray], np.ndarray | None]
    refine: Callable[[np.ndarray | None, np.ndarray, float], np.ndarray]


REFINERS: dict[str, Refiner] = {
    "none": Refiner("the plain upsampling", lambda image: None, lambda guide, soft, cell: soft),
    "guided": Refiner("a guided filter, fast; blurs a pixel model's outline", lambda image: cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), _guided),
    "grabcut": Refiner("the default: seeded by the model's sure and unsure bands; sharpest, ~60-100 ms of CPU per 384-px image",
                       lambda image: image, _grabcut_refined),
}
REFINE_METHODS = tuple(REFINERS)


def refiner(method: str) -> Refiner:
    """The registry entry of ``method``; an unknown name is a ``ValueError`` naming the known ones."""
    if method not in REFINERS:
        raise ValueError(f"--refine must be one of {', '.join(REFINE_METHODS)}; got {method!r}")
    return REFINERS[method]


def refine_guide(image: np.ndarray, method: str) -> np.ndarray | None:
    """What ``refine_mask`` needs of the RGB image for ``method`` (a worker sends it along; None: nothing)."""
    return refiner(method).guide(image)


def refine_mask(guide: np.ndarray | None, soft: np.ndarray, method: str, cell: float) -> np.ndarray:
    """Snap a soft mask's edges to the image: ``guide`` is ``refine_guide``'s, ``cell`` the patch size in pixels."""
    return refiner(method).refine(guide, soft, cell)


def _grabcut(image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
    """The hard foreground (float32 0/1) GrabCut cuts from an RGB image and a trimap (modified in place)."""
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    # GrabCut seeds its colour models with k-means on OpenCV's per-thread RNG: without a fixed seed a mask
    # would depend on how many images this worker refined before it (so on --batch-size, --shard, workers).
    cv2.setRNGSeed(0)
    cv2.grabCut(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), trimap, None, bgd, fgd, 3, cv2.GC_INIT_WITH_MASK)
    return np.isin(trimap, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.float32)


def refined_mask(image: np.ndarray, probs: np.ndarray, method: str, grid: int) -> np.ndarray:
    """An RGB image's full-size soft mask from the model's probabilities (P x P patches, or pixels at the model's
    input size), refined with ``method``; ``grid`` (P) sets the refinement's reach."""
    h, w = image.shape[:2]
    soft = upsample_probabilities(probs, h, w)
    return refine_mask(refine_guide(image, method), soft, method, cell=max(h, w) / grid)
