"""Classical, offline inpainters: OpenCV's Telea and Navier-Stokes, and ``pyramid`` (also the smooth base of the
default ``texture`` fill, in texture.py).

``pyramid`` fills a tight crop around the hole at reduced resolution
(at most 64 px a side, at most half resolution) and scales the fill back up; only
hole pixels are replaced. The fill is the average of two estimates from the known
pixels next to the hole: a push-pull pyramid (average the known pixels level by
level, then take the coarser estimate wherever a level knows too little), which
is right for noisy textures, and a small-radius Telea fill, which continues smooth
gradients. Their errors differ, so their average beats either. Chosen by
measurement (``benchmarks/inpaint.py``): on the sample data it is closer to the
true background than full-resolution Telea, and 3-7x faster, more so the larger
the hole. ``--texture`` additionally copies band-pass texture from the
best-matching offset of the known background (slower, opt-in).
"""

from __future__ import annotations

import cv2
import numpy as np

from .base import Inpainter, hole_box

_CROSS = np.array([[0, 0.25, 0], [0.25, 0, 0.25], [0, 0.25, 0]], np.float32)


def pyramid_fill(image: np.ndarray, hole: np.ndarray, relax_iters: int = 0, relax_levels: tuple[int, ...] = (1, 2)) -> np.ndarray:
    """Smooth fill of ``hole`` from the known pixels around it; returns float32 HxWx3 (hole values meaningful).

    Push: average known pixels down a pyramid, weighted by how much of each cell is known.
    Pull: from the coarsest level up, keep what a level knows and take the upsampled
    coarser estimate elsewhere; at ``relax_levels`` a few Jacobi steps of Laplace's
    equation let gradients continue smoothly across the hole. The finest level only
    upsamples, so the cost is a few passes over the crop.
    """
    known = (~hole).astype(np.float32)
    img = image if image.dtype == np.float32 else image.astype(np.float32)
    levels = [(img * known[..., None], known)]
    while min(levels[-1][1].shape) > 2 and levels[-1][1].min() < 0.999:
        wi, wk = levels[-1]
        levels.append((cv2.pyrDown(wi), cv2.pyrDown(wk)))
    if len(levels) == 1:
        return img
    wi, wk = levels[-1]
    total = float(wk.sum())
    if total <= 0:
        return np.zeros_like(img)
    est = wi / np.maximum(wk, 1e-6)[..., None]
    est[wk < 1e-6] = wi.reshape(-1, 3).sum(0) / total
    for depth in range(len(levels) - 2, 0, -1):
        wi, wk = levels[depth]
        est = cv2.pyrUp(est, dstsize=(wk.shape[1], wk.shape[0]))
        confidence = np.clip(wk, 0, 1)[..., None]
        observed = wi / np.maximum(wk, 1e-6)[..., None]
        est = confidence * observed + (1 - confidence) * est
        if depth in relax_levels and relax_iters:
            fixed = (wk > 0.999)[..., None]
            for _ in range(relax_iters):
                est = np.where(fixed, observed, cv2.filter2D(est, -1, _CROSS, borderType=cv2.BORDER_REPLICATE))
    return cv2.pyrUp(est, dstsize=(img.shape[1], img.shape[0]))


def ring_offsets(bh: float, bw: float, scales: tuple[float, ...] = (0.6, 1.0, 1.4)) -> np.ndarray:
    """Candidate copy offsets (dy, dx): 16 directions at each of ``scales`` times the hole's size."""
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    scales = np.asarray(scales)
    dy = np.rint(np.outer(scales, np.sin(angles)) * bh).astype(np.int64).ravel()
    dx = np.rint(np.outer(scales, np.cos(angles)) * bw).astype(np.int64).ravel()
    return np.stack([dy, dx], 1)


def _gather(known: np.ndarray, ys: np.ndarray, xs: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every offset and point: the shifted coordinates (clipped) and whether they land on known pixels."""
    h, w = known.shape
    sy, sx = ys[None, :] + offsets[:, :1], xs[None, :] + offsets[:, 1:]
    inside = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
    sy, sx = np.clip(sy, 0, h - 1), np.clip(sx, 0, w - 1)
    return sy, sx, inside & known[sy, sx]


def restore_texture(image: np.ndarray, hole: np.ndarray, smooth: np.ndarray, strength: float | None = None, ring: int = 6) -> np.ndarray:
    """Add band-pass detail copied from the best-predicting offset in the known background to ``smooth``.

    Candidate offsets are judged on a ring of known pixels around the hole: how well
    the detail there correlates with the detail at the same offset. The copy is
    weighted by that correlation (``strength=None``, the least-squares weight), so
    periodic texture (waves, stripes) is continued and unpredictable noise is not
    invented; a fixed ``strength`` overrides the weight.
    """
    f = cv2.blur(image, (3, 3)).astype(np.float32)  # drop pixel grain
    small = cv2.pyrDown(cv2.pyrDown(f))
    low = cv2.resize(small, (f.shape[1], f.shape[0]), interpolation=cv2.INTER_LINEAR)
    detail = f - low
    known = ~hole
    around = (cv2.dilate(hole.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * ring + 1,) * 2)) > 0) & known
    ys, xs = np.nonzero(hole)
    ry, rx = np.nonzero(around)
    if len(ry) < 16:
        return smooth
    offsets = ring_offsets(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
    # Judge offsets on at most ~1500 pixels of the ring and of the hole: the cost stays flat for big holes.
    step_r, step_h = max(1, len(ry) // 1500), max(1, len(ys) // 1500)
    _, _, hole_ok = _gather(known, ys[::step_h], xs[::step_h], offsets)
    qy, qx, ring_ok = _gather(known, ry[::step_r], rx[::step_r], offsets)
    usable = (hole_ok.mean(1) >= 0.9) & (ring_ok.mean(1) >= 0.5)
    if not usable.any():
        return smooth
    target = detail[ry[::step_r], rx[::step_r]][None]  # 1 x R x 3
    source = detail[qy, qx] * ring_ok[..., None]  # O x R x 3
    masked_target = target * ring_ok[..., None]
    num = (masked_target * source).sum((1, 2))
    den = np.sqrt((masked_target**2).sum((1, 2)) * (source**2).sum((1, 2))) + 1e-6
    corr = np.where(usable, num / den, -np.inf)
    best = int(np.argmax(corr))
    weight = max(0.0, float(corr[best])) if strength is None else strength
    if weight <= 0:
        return smooth
    sy, sx, ok = _gather(known, ys, xs, offsets[best : best + 1])
    out = smooth.copy()
    out[ys[ok[0]], xs[ok[0]]] += weight * detail[sy[0][ok[0]], sx[0][ok[0]]]
    return out


class PyramidInpainter(Inpainter):
    """Default: smooth fill of a tight crop around the hole at reduced resolution; optional texture.

    Only a thin ring of known pixels around the hole (``context`` x the hole's size,
    at least ``min_context`` px) informs the fill: a wider crop lets far-away pixels
    bias the estimate (measured in benchmarks/inpaint.py).
    """

    name = "pyramid"
    work_side = 64  # the fill is computed on at most this many pixels per side
    min_factor = 2  # and at no more than half resolution
    telea_weight = 0.5
    telea_radius = 1
    tight_context = 0.05
    min_context = 4
    texture_context = 1.5  # texture needs room to find a source offset

    def __init__(self, options):
        super().__init__(options)
        # texture needs a wider crop (room to find a source offset); the smooth fill stays on the tight box in it
        self.context = self.texture_context if options.texture != 0 else self.tight_context

    def fill(self, crop: np.ndarray, hole: np.ndarray) -> np.ndarray:
        y0, y1, x0, x1 = hole_box(hole, self.tight_context, self.min_context)
        est = crop.astype(np.float32)
        est[y0:y1, x0:x1] = self._smooth_fill(crop[y0:y1, x0:x1], hole[y0:y1, x0:x1])
        if self.options.texture != 0:
            weight = None if self.options.texture < 0 else self.options.texture
            est = restore_texture(crop, hole, est, weight)
        return np.clip(np.rint(est), 0, 255).astype(np.uint8)

    def _smooth_fill(self, crop: np.ndarray, crop_hole: np.ndarray) -> np.ndarray:
        """Average of a pyramid fill and a Telea fill, both at reduced resolution, scaled back up."""
        ch, cw = crop_hole.shape
        scale = min(1.0 / self.min_factor, self.work_side / max(ch, cw))
        size = (max(4, round(cw * scale)), max(4, round(ch * scale)))
        known = (~crop_hole).astype(np.float32)
        small_known = cv2.resize(known, size, interpolation=cv2.INTER_AREA)
        small = cv2.resize(crop.astype(np.float32) * known[..., None], size, interpolation=cv2.INTER_AREA)
        small = small / np.maximum(small_known, 1e-6)[..., None]
        small_hole = small_known < 0.999
        est = pyramid_fill(small, small_hole)
        if self.telea_weight > 0:
            telea = cv2.inpaint(np.clip(small, 0, 255).astype(np.uint8), small_hole.astype(np.uint8) * 255, self.telea_radius, cv2.INPAINT_TELEA)
            est = (1 - self.telea_weight) * est + self.telea_weight * telea
        return cv2.resize(est, (cw, ch), interpolation=cv2.INTER_LINEAR)

    def record(self) -> dict:
        return {"method": self.name, "texture": "auto" if self.options.texture < 0 else self.options.texture}


class OpenCVInpainter(Inpainter):
    """cv2.inpaint at full resolution: ``telea`` (Telea 2004) or ``ns`` (Navier-Stokes)."""

    flag = cv2.INPAINT_TELEA

    def fill(self, image: np.ndarray, hole: np.ndarray) -> np.ndarray:
        return cv2.inpaint(image, hole.astype(np.uint8) * 255, self.options.radius, self.flag)

    def record(self) -> dict:
        return {"method": self.name, "radius": self.options.radius}


class TeleaInpainter(OpenCVInpainter):
    name = "telea"
    flag = cv2.INPAINT_TELEA


class NavierStokesInpainter(OpenCVInpainter):
    name = "ns"
    flag = cv2.INPAINT_NS
