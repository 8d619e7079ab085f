"""``--method torchscript``: a TorchScript inpainting model file, the way LaMa is distributed (big-lama.pt).

The model convention (LaMa's): ``model(image, mask)`` with ``image`` float Bx3xHxW in
[0, 1] and ``mask`` float Bx1xHxW, 1 = fill; it returns Bx3xHxW in [0, 1]. Models that
return 0..255 are accepted too: an output whose maximum exceeds 2 is read as 0..255.
The image is passed with the hole already zeroed, so no trace of the object reaches
a model that does not mask its input itself.

Each image is cropped around its hole (``context_box``: the hole's box grown by
``options.margin``, at least ``min_crop`` px a side where the image allows, since LaMa
needs context) and run at native resolution, reflect-padded to a multiple of 8; only
the hole's pixels are pasted back. Crops of the same padded size share one model call
(images of a fixed size with similar holes batch well); other crops run one by one.
Runs in fp32: LaMa's Fourier convolutions are not safe in half precision.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from ..engine import StepError, resolve_device
from .base import InpaintOptions, Inpainter, context_box


class TorchScriptInpainter(Inpainter):
    """A TorchScript model ``(image, mask) -> image`` run on native-resolution crops around the holes."""

    name = "torchscript"
    uses_model = True
    min_crop = 256  # LaMa's training resolution: crops are at least this big where the image allows
    multiple = 8  # crops are padded to a multiple of this (LaMa downsamples 3 times)

    def __init__(self, options: InpaintOptions):
        super().__init__(options)
        if not options.model:
            raise StepError("--method torchscript needs --model: a TorchScript file such as big-lama.pt")
        path = Path(options.model).expanduser()
        if not path.is_file():
            raise StepError(f"--model {options.model}: no such file")
        if not zipfile.is_zipfile(path):
            raise StepError(f"--model {options.model}: not a TorchScript file (expected the zip archive torch.jit.save writes)")
        if options.precision not in ("auto", "fp32"):
            raise StepError(f"--method torchscript runs in fp32 (LaMa's Fourier layers are not safe in half precision); got --precision {options.precision}")
        self.path = path
        self.model = None

    def setup(self) -> None:
        """Load the TorchScript model onto the device (main process, once; ``--device`` resolved here if the
        inpainter was not given one)."""
        import torch

        if self.device is None:
            self.on_device(resolve_device(self.options.device))
        try:
            with warnings.catch_warnings():  # recent torch deprecates TorchScript, but it is how LaMa is distributed
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*deprecated", category=FutureWarning)
                self.model = torch.jit.load(str(self.path), map_location=self.device).eval()
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StepError((f"--model {self.options.model}: torch.jit.load could not read it as a TorchScript model ({reason}); export one with "
                             f"torch.jit.script or torch.jit.trace and torch.jit.save")) from None

    def crop_box(self, hole: np.ndarray) -> tuple[int, int, int, int]:
        return context_box(hole, self.options.margin, self.min_crop)

    def padded_shape(self, height: int, width: int) -> tuple[int, int]:
        return height + -height % self.multiple, width + -width % self.multiple

    def fill_batch(self, crops: Sequence[np.ndarray], holes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Crops of equal padded size run as one model call."""
        by_shape: dict[tuple[int, int], list[int]] = {}
        for index, crop in enumerate(crops):
            by_shape.setdefault(crop.shape[:2], []).append(index)
        filled: dict[int, np.ndarray] = {}
        for indices in by_shape.values():
            outputs = self._run(np.stack([crops[i] for i in indices]), np.stack([holes[i] for i in indices]))
            filled.update(zip(indices, outputs))
        return [filled[i] for i in range(len(crops))]

    def _run(self, views: np.ndarray, view_holes: np.ndarray) -> np.ndarray:
        """One model call: uint8 BxHxWx3 crops and boolean BxHxW holes -> uint8 BxHxWx3 fills."""
        import torch

        with torch.inference_mode():
            mask = torch.from_numpy(view_holes).to(self.device, torch.float32)[:, None]
            image = torch.from_numpy(views).to(self.device).permute(0, 3, 1, 2).float().div_(255) * (1 - mask)
            output = self.model(image, mask).float()
            if output.shape != image.shape:
                raise RuntimeError(f"the model returned shape {tuple(output.shape)} for input {tuple(image.shape)} (expected image, mask -> image)")
            scale = 1.0 if output.amax() > 2 else 255.0
            return (output * scale).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    def record(self) -> dict:
        """What ran: the model file, the device, the crop rule."""
        return {"method": self.name, "model": str(self.path), "device": self.device, "dtype": "float32", "margin": self.options.margin,
                "min_crop": self.min_crop}
