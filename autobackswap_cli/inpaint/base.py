"""The inpainter interface and the helpers every backend shares (crop around the hole, paste back)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..images import bounding_box


@dataclass
class InpaintOptions:
    """Options shared by the CLI and the library; each backend reads the ones it needs."""

    method: str = "texture"
    model: str | None = None  # diffusers: hub id or local folder; torchscript: a .pt file
    prompt: str = "empty background, natural scenery, nothing in the foreground, high quality photo"
    negative_prompt: str = "object, animal, person, text, watermark, blurry, artifacts"
    steps: int = 25
    guidance: float = 7.5
    resolution: int = 512  # diffusers: side of the square crop the model sees
    margin: float = 0.5  # crop margin around the hole, as a share of the hole's larger side
    radius: int = 3  # telea / ns: neighbourhood radius in pixels
    texture: float = 0.0  # pyramid: texture restored from the known background: 0 off, -1 auto, else a strength
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    extra: dict = field(default_factory=dict)


class Inpainter:
    """One backend. ``fill`` gets an RGB uint8 image and a boolean hole; only hole pixels of its result are used.

    Backends with ``uses_model = True`` run batched in the main process (``fill_batch``);
    the others run in worker processes, one image at a time.
    """

    name = "base"
    uses_model = False

    def __init__(self, options: InpaintOptions):
        self.options = options

    def setup(self) -> None:
        """Load models (main process, once)."""

    def fill(self, image: np.ndarray, hole: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fill_batch(self, images: Sequence[np.ndarray], holes: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [self.fill(i, h) for i, h in zip(images, holes)]

    def record(self) -> dict:
        return {"method": self.name}


def hole_box(hole: np.ndarray, margin: float, min_margin: int = 8) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the hole's bounding box grown by ``margin`` x its larger side (at least
    ``min_margin`` px), inside the image."""
    return bounding_box(hole, pad=min_margin, relative_pad=margin)


def context_box(hole: np.ndarray, margin: float, min_side: int = 0, square: bool = False) -> tuple[int, int, int, int]:
    """``hole_box`` grown to at least ``min_side`` a side (and to a square if asked), kept inside the image.

    The box grows around its centre and is shifted back inside the image at the borders;
    a side never exceeds the image's, so a square is not always possible.
    """
    y0, y1, x0, x1 = hole_box(hole, margin)
    height, width = y1 - y0, x1 - x0
    if square:
        height = width = max(height, width)

    def grow(lo: int, hi: int, size: int, limit: int) -> tuple[int, int]:
        size = min(limit, max(size, min_side))
        start = min(max(lo - (size - (hi - lo)) // 2, 0), limit - size)
        return start, start + size

    y0, y1 = grow(y0, y1, height, hole.shape[0])
    x0, x1 = grow(x0, x1, width, hole.shape[1])
    return y0, y1, x0, x1


def paste_hole(image: np.ndarray, filled: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """``image`` with only the hole's pixels taken from ``filled``: everything else stays byte-identical."""
    out = image.copy()
    out[hole] = filled[hole]
    return out
