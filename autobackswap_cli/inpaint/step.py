"""``inpaint``: BACKGROUNDS/<class>/<name>.<ext> = the image with its loose foreground filled in.

The region to fill is the *loose* foreground (P(fg) >= ``loose``, default 0.1, the
paper's loose mask) grown by ``dilate`` pixels so no halo of the object survives.
Classical backends run entirely in worker processes; model backends (diffusers,
TorchScript) run batched in the main process, with workers decoding and encoding.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..engine import RunReport, Step, StepError, console, resolve_devices
from ..images import ImageError, ImageItem, mirror_path, preview_grid, read_image, read_mask, spread_sample, write_image_atomic
from ..formats.mask_thresholds import PAPER_THRESHOLDS, mask_threshold
from .backends import make_inpainter
from .base import InpaintOptions


@dataclass
class FillRegion:
    loose: float | None = None  # P(fg) at or above this is removed; None: what MASKS' segmenter chose, else 0.1
    dilate: int = 4  # then grown by this many pixels


def fill_region(mask: np.ndarray, region: FillRegion) -> np.ndarray:
    """Boolean hole: the loose foreground of a soft mask in [0, 1], dilated by ``region.dilate`` px."""
    loose = PAPER_THRESHOLDS["loose"] if region.loose is None else region.loose
    hole = mask >= loose - 1e-6
    if region.dilate > 0 and hole.any():
        k = 2 * region.dilate + 1
        hole = cv2.dilate(hole.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) > 0
    return hole


class InpaintStep(Step):
    name = "inpaint"

    def __init__(self, masks_dir: Path, out_dir: Path, options: InpaintOptions, region: FillRegion,
                 out_format: str = "same", quality: int = 95, preview: str | None = None, preview_count: int = 12):
        self.masks_dir = Path(masks_dir)
        if not self.masks_dir.is_dir():
            raise StepError(f"masks folder not found: {self.masks_dir}")
        self.out_dir = Path(out_dir)
        self.options = options
        loose, self.loose_source = mask_threshold(self.masks_dir, "loose", region.loose)
        self.region = replace(region, loose=loose)
        self.out_format = out_format
        self.quality = quality
        self.preview = preview
        self.preview_count = preview_count
        self.inpainter = make_inpainter(options)
        self.devices: list[str] = []  # a model backend's devices, one replica each (names: workers need no torch)
        if self.inpainter.uses_model:
            self.compute = self._compute
            # --device resolved once, before any worker starts (a device that is not there is reported at once)
            self.devices = [str(d) for d in resolve_devices(options.device)]
            self.inpainter.on_device(self.devices[0])
        self.no_foreground = 0

    def output_path(self, item: ImageItem) -> Path:
        suffix = None if self.out_format == "same" else "." + self.out_format.lstrip(".")
        return mirror_path(self.out_dir, item.rel, suffix)

    def outputs(self, item: ImageItem) -> list[Path]:
        return [self.output_path(item)]

    def replicas(self) -> list[InpaintStep]:
        """A model backend on ``--device cuda`` with several GPUs: one copy of the step (and model) per GPU."""
        if len(self.devices) <= 1:
            return [self]
        copies = []
        for device in self.devices:
            replica = copy.copy(self)
            replica.options = replace(self.options, device=device)
            replica.inpainter = make_inpainter(replica.options)
            replica.inpainter.on_device(device)
            replica.compute = replica._compute  # bound to the copy, not to this step
            copies.append(replica)
        return copies

    def setup(self) -> None:
        if self.inpainter.uses_model:
            self.inpainter.setup()

    def prepare(self, item: ImageItem) -> tuple[np.ndarray, np.ndarray]:
        """Worker: the image and its hole (for a model backend, which fills batches in ``compute``)."""
        image = read_image(item.path)
        mask_path = mirror_path(self.masks_dir, item.rel, ".png")
        if not mask_path.exists():
            raise ImageError(f"no mask for this image (expected {mask_path})")
        hole = fill_region(read_mask(mask_path, image.shape[:2]), self.region)
        if hole.all():
            raise ImageError("the mask covers the whole image: no background is left to fill from")
        return image, hole

    def process(self, item: ImageItem) -> tuple[np.ndarray, bool]:
        """Worker, classical backends: the background, and whether there was a foreground to remove (else the
        image is copied unchanged)."""
        image, hole = self.prepare(item)
        return (self.inpainter.inpaint(image, hole), True) if hole.any() else (image, False)

    def _compute(self, batch: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, bool]]:
        todo = [i for i, (_, hole) in enumerate(batch) if hole.any()]
        filled = self.inpainter.inpaint_batch([batch[i][0] for i in todo], [batch[i][1] for i in todo]) if todo else []
        results = [(image, False) for image, _ in batch]
        for i, background in zip(todo, filled):
            results[i] = (background, True)
        return results

    def write(self, item: ImageItem, result: Any) -> bool:
        background, had_foreground = result
        write_image_atomic(self.output_path(item), background, quality=self.quality)
        return had_foreground

    def collect(self, item: ImageItem, had_foreground: bool) -> None:
        if not had_foreground:
            self.no_foreground += 1

    def recorded_options(self) -> dict:
        return {
            "masks": str(self.masks_dir),
            "loose_threshold": self.region.loose,
            "loose_threshold_from": self.loose_source,
            "dilate_px": self.region.dilate,
            "format": self.out_format,
            "quality": self.quality,
            **self.inpainter.record(),
            **({"device": ",".join(self.devices)} if len(self.devices) > 1 else {}),
        }

    def recorded_results(self) -> dict:
        return {"images_without_foreground_copied_unchanged": self.no_foreground}

    def finish(self, report: RunReport, items) -> None:
        if self.no_foreground:
            console.print(f"[yellow]note:[/] {self.no_foreground} image(s) had no foreground in their mask and were copied unchanged")
        finished = [it for it in items if self.output_path(it).exists()] if self.preview else []
        if finished:
            tiles = []
            for item in spread_sample(finished, self.preview_count):
                tiles.append(read_image(item.path))
                tiles.append(read_image(self.output_path(item)))
            write_image_atomic(Path(self.preview), preview_grid(tiles, columns=6))
            console.print(f"preview: {self.preview} (image, background pairs)")
