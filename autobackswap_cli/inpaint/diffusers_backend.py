"""``--method diffusers``: any diffusers inpainting pipeline, from a local folder or a hub id.

Where the model comes from: a local folder (written by ``save_pretrained``) loads fully
offline; a hub id loads from huggingface's own cache when it is there, otherwise it is
downloaded (unless ``HF_HUB_OFFLINE`` is set). Anything else is a ``StepError``.

How an image is filled: a square crop around the hole (``context_box``: the hole's box
grown by ``options.margin``, at least ``options.resolution`` a side so small holes are
seen at native resolution; reflect-padded to a square where the image is too narrow)
is resized to ``resolution`` x ``resolution``, filled by the pipeline, resized back,
and only the hole's pixels are pasted back. A batch is one pipeline call. Each image
gets its own generator, seeded from ``--seed`` and the image's own pixels, so a result
does not depend on which other images share its batch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import warnings
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..engine import PRECISIONS, StepError, console, resolve_device, resolve_precision
from .base import InpaintOptions, Inpainter, context_box

def image_seed(seed: int, image: np.ndarray, hole: np.ndarray) -> int:
    """A per-image seed from ``seed`` and the image's pixels and hole: stable across batches and runs."""
    digest = hashlib.blake2b(image.tobytes(), digest_size=8, key=str(seed).encode())
    digest.update(np.packbits(hole).tobytes())
    return int.from_bytes(digest.digest(), "little") >> 1


class DiffusersInpainter(Inpainter):
    """A diffusers inpainting pipeline, run batched on square crops around the holes."""

    name = "diffusers"
    uses_model = True

    def __init__(self, options: InpaintOptions):
        super().__init__(options)
        if not options.model:
            raise StepError("--method diffusers needs --model: a hub id (e.g. stabilityai/stable-diffusion-2-inpainting) or a local pipeline folder")
        if importlib.util.find_spec("diffusers") is None:
            raise StepError("--method diffusers needs the diffusers extra: pip install 'autobackswap-cli[diffusers]'")
        if options.resolution % 8:
            raise StepError(f"--resolution must be a multiple of 8; got {options.resolution}")
        # Located here, before any worker starts, so a bad model is reported at once (the device: ``on_device``);
        # kept as strings (the inpainter is pickled to the workers, which need no torch).
        self.location, self.local_only, self.source = self._locate(options.model)
        self.precision: str | None = None  # --precision for the device, set with it
        self.pipeline = None
        self.takes_negative_prompt = True

    def on_device(self, device) -> None:
        """The device, and the precision ``--precision`` means on it (auto: fp16 on CUDA)."""
        super().on_device(device)
        self.precision = resolve_precision(self.options.precision, self.device.split(":")[0])

    def setup(self) -> None:
        """Load the pipeline onto the device (main process, once; ``--device`` resolved here if the inpainter was
        not given one)."""
        import torch
        from diffusers import AutoPipelineForInpainting

        if self.device is None:
            self.on_device(resolve_device(self.options.device))
        if not self.local_only:
            console.print(f"{self.options.model} is not in the huggingface cache: downloading it from the hub")
        try:
            with warnings.catch_warnings():  # newer diffusers call it `dtype`; `torch_dtype` works in every version
                warnings.filterwarnings("ignore", message=".*torch_dtype.*deprecated", category=FutureWarning)
                pipeline = AutoPipelineForInpainting.from_pretrained(self.location, torch_dtype=getattr(torch, PRECISIONS[self.precision]),
                                                                     local_files_only=self.local_only)
        except Exception as exc:
            raise StepError(f"could not load the diffusers inpainting pipeline {self.options.model!r} ({self.source}): {type(exc).__name__}: {exc}") from None
        pipeline.set_progress_bar_config(disable=True)
        self.pipeline = pipeline.to(torch.device(self.device))
        self.takes_negative_prompt = "negative_prompt" in inspect.signature(pipeline.__call__).parameters

    @staticmethod
    def _locate(model: str) -> tuple[str, bool, str]:
        """(what to pass to from_pretrained, whether to stay offline, where it came from) for ``--model``."""
        from huggingface_hub import constants, try_to_load_from_cache
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        path = Path(model).expanduser()
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise StepError(f"--model {model}: this folder is not a diffusers pipeline (no model_index.json; write one with save_pretrained)")
            return str(path), True, "local folder"
        if path.exists():
            raise StepError(f"--model {model}: --method diffusers wants a pipeline folder or a hub id, not a file")
        try:
            validate_repo_id(model)
        except HFValidationError:
            raise StepError(f"--model {model}: no such folder, and not a valid hub id (like owner/name)") from None
        if isinstance(try_to_load_from_cache(model, "model_index.json"), str):
            return model, True, "hub cache"
        if constants.HF_HUB_OFFLINE:
            raise StepError(f"--model {model}: not a local folder and not in the huggingface cache ({constants.HF_HUB_CACHE}), and HF_HUB_OFFLINE is set")
        return model, False, "downloaded from the hub"

    def crop_box(self, hole: np.ndarray) -> tuple[int, int, int, int]:
        return context_box(hole, self.options.margin, self.options.resolution, square=True)

    def padded_shape(self, height: int, width: int) -> tuple[int, int]:
        return (max(height, width),) * 2  # the pipeline sees squares

    def fill_batch(self, crops: Sequence[np.ndarray], holes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One pipeline call for the whole batch of square crops."""
        import torch
        from PIL import Image

        side = self.options.resolution
        views = [self._model_view(crop, hole) for crop, hole in zip(crops, holes)]
        kwargs = {"negative_prompt": [self.options.negative_prompt] * len(views)} if self.takes_negative_prompt else {}
        result = self.pipeline(
            prompt=[self.options.prompt] * len(views),
            image=[Image.fromarray(view) for view, _ in views],
            mask_image=[Image.fromarray(view_hole) for _, view_hole in views],
            height=side,
            width=side,
            num_inference_steps=self.options.steps,
            guidance_scale=self.options.guidance,
            generator=[torch.Generator("cpu").manual_seed(image_seed(self.options.seed, c, h)) for c, h in zip(crops, holes)],
            output_type="np",
            **kwargs,
        )
        flagged = getattr(result, "nsfw_content_detected", None) or [False] * len(views)
        if any(flagged):
            raise RuntimeError("the pipeline's safety checker blanked the fill (use a pipeline without one, or another --prompt)")
        filled = np.clip(np.rint(np.asarray(result.images, dtype=np.float32) * 255), 0, 255).astype(np.uint8)
        return [self._crop_size(fill, crop.shape[0]) for fill, crop in zip(filled, crops)]

    def _model_view(self, crop: np.ndarray, hole: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The model's view of a square crop: the hole pre-filled with the crop's mean known colour (so no trace of
        the object reaches the model), resized to ``resolution``; and its hole mask (255 = fill, grown rather than
        shrunk by the resize)."""
        crop = crop.copy()
        crop[hole] = crop[~hole].mean(0).round().astype(np.uint8)
        size = (self.options.resolution,) * 2
        shrink = crop.shape[0] > self.options.resolution
        view = cv2.resize(crop, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
        view_hole = (cv2.resize(hole.astype(np.float32), size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR) > 0).astype(np.uint8) * 255
        return view, view_hole

    @staticmethod
    def _crop_size(fill: np.ndarray, side: int) -> np.ndarray:
        """The model's output resized back to the crop's side."""
        return cv2.resize(fill, (side, side), interpolation=cv2.INTER_AREA if side < fill.shape[0] else cv2.INTER_CUBIC)

    def record(self) -> dict:
        """What ran: the pipeline, where it came from, sampling options, device and dtype."""
        return {
            "method": self.name,
            "model": self.options.model,
            "model_source": self.source,
            "pipeline": type(self.pipeline).__name__ if self.pipeline is not None else None,
            "prompt": self.options.prompt,
            "negative_prompt": self.options.negative_prompt,
            "steps": self.options.steps,
            "guidance": self.options.guidance,
            "resolution": self.options.resolution,
            "margin": self.options.margin,
            "seed": self.options.seed,
            "device": self.device,
            "dtype": PRECISIONS[self.precision],
        }
