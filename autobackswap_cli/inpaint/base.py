"""The inpainter interface and the helpers every backend shares (crop around the hole, paste back)."""

from __future__ import annotations

from dataclasses import dataclass
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


class Inpainter:
    """One backend. The base owns the crop around the hole, the padding and the paste-back, so a backend is its
    fill alone: ``fill`` (or ``fill_batch``) gets a crop (RGB uint8) and its boolean hole, and returns the crop
    filled; only the hole's pixels of it are used.

    Backends with ``uses_model = True`` run batched in the main process (``inpaint_batch``); the others run in
    worker processes, one image at a time (``inpaint``).
    """

    name = "base"
    uses_model = False
    device: str | None = None  # a model backend's device, resolved once by whoever runs it (``on_device``)
    context: float | None = None  # crop margin around the hole, a share of its larger side; None: the whole image
    min_context = 8  # the margin is at least this many pixels
    min_side = 0  # a crop grows to at least this a side where the image allows
    square = False  # grow the crop to a square

    def __init__(self, options: InpaintOptions):
        self.options = options

    def on_device(self, device) -> None:
        """Run the model on ``device`` (a resolved ``torch.device``, or its name): the inpaint step resolves
        ``--device`` once and hands each backend its device. Kept as a name: the inpainter is pickled to workers,
        which need no torch."""
        self.device = str(device)

    def setup(self) -> None:
        """Load models (main process, once)."""

    def fill(self, crop: np.ndarray, hole: np.ndarray) -> np.ndarray:
        """The backend: ``crop`` with ``hole`` filled (same shape; pixels outside the hole are ignored)."""
        raise NotImplementedError

    def fill_batch(self, crops: Sequence[np.ndarray], holes: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [self.fill(c, h) for c, h in zip(crops, holes)]

    def padded_shape(self, height: int, width: int) -> tuple[int, int]:
        """The shape a crop is reflect-padded to (bottom, right) before ``fill``: a model's size rule."""
        return height, width

    def record(self) -> dict:
        return {"method": self.name}

    def crop_box(self, hole: np.ndarray) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of the region ``fill`` sees."""
        if self.context is None:
            return 0, hole.shape[0], 0, hole.shape[1]
        return context_box(hole, self.context, self.min_side, self.square, self.min_context)

    def inpaint(self, image: np.ndarray, hole: np.ndarray) -> np.ndarray:
        """``image`` with its hole filled; every pixel outside the hole stays byte-identical."""
        return self.inpaint_batch([image], [hole])[0]

    def inpaint_batch(self, images: Sequence[np.ndarray], holes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``inpaint`` for many images, with one ``fill_batch`` call (one model call for a model backend)."""
        views = [self._view(image, hole) for image, hole in zip(images, holes)]
        filled = self.fill_batch([v for v, _, _ in views], [h for _, h, _ in views])
        out = []
        for image, hole, fill, (_, _, (y0, y1, x0, x1)) in zip(images, holes, filled, views):
            result = image.copy()
            result[y0:y1, x0:x1] = paste_hole(image[y0:y1, x0:x1], fill[: y1 - y0, : x1 - x0], hole[y0:y1, x0:x1])
            out.append(result)
        return out

    def _view(self, image: np.ndarray, hole: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
        """The crop ``fill`` sees, reflect-padded to ``padded_shape`` (the hole reflected with it, so no pixel of
        the object enters the padding as known); its hole; its box in the image."""
        y0, y1, x0, x1 = box = self.crop_box(hole)
        crop, crop_hole = image[y0:y1, x0:x1], hole[y0:y1, x0:x1]
        height, width = self.padded_shape(y1 - y0, x1 - x0)
        if (height, width) != crop_hole.shape:
            pad = ((0, height - (y1 - y0)), (0, width - (x1 - x0)))
            crop, crop_hole = np.pad(crop, (*pad, (0, 0)), mode="reflect"), np.pad(crop_hole, pad, mode="reflect")
        return crop, crop_hole, box


def hole_box(hole: np.ndarray, margin: float, min_margin: int = 8) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the hole's bounding box grown by ``margin`` x its larger side (at least
    ``min_margin`` px), inside the image."""
    return bounding_box(hole, pad=min_margin, relative_pad=margin)


def context_box(hole: np.ndarray, margin: float, min_side: int = 0, square: bool = False, min_margin: int = 8) -> tuple[int, int, int, int]:
    """``hole_box`` grown to at least ``min_side`` a side (and to a square if asked), kept inside the image.

    The box grows around its centre and is shifted back inside the image at the borders;
    a side never exceeds the image's, so a square is not always possible.
    """
    y0, y1, x0, x1 = hole_box(hole, margin, min_margin)
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
