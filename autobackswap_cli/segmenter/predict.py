"""``segment``: soft foreground masks at full image resolution, through the engine.

Workers decode and resize (``prepare``), the main process runs the model on batches
(``compute``), workers upsample the P x P probabilities smoothly to the image
size, optionally snap edges to the image (``--refine``, see ``refine``), and write the PNG.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any
from pathlib import Path

import cv2
import numpy as np

from ..engine import PRECISIONS, RunReport, Step, StepError, console, resolve_device, resolve_devices, resolve_precision
from ..images import ImageItem, mirror_path, overlay_mask, preview_grid, read_image, read_mask, spread_sample, write_image_atomic, write_mask_atomic
from .refine import REFINE_METHODS, guided_filter, refine_mask, refined_mask, upsample_probabilities

__all__ = ["REFINE_METHODS", "SECOND_LOOK_BELOW", "PatchPredictor", "SegmentOptions", "SegmentStep", "guided_filter", "mask_iou",
           "mask_iou_report", "refine_mask", "refined_mask", "upsample_probabilities", "write_mask_preview"]

# A pixel model (u2netp) looks again at an image where it found foreground in less than SECOND_LOOK_BELOW of the
# pixels: U^2-Net-p misses small objects at 160 px that it sees at 320, its training size, and the head (trained at
# 160) drops some objects it never saw in a label at one size and keeps them at another. The extra looks go through
# SECOND_LOOK_SCALES (multiples of the model's input size) in order, stopping at the first that finds that much
# foreground; when none does, the extra look that found the most is kept. Chosen on the held-out-object photos
# built with data seed 1 (benchmarks/real_photos.py, not its seed-0 set), mean IoU over the unlabelled images with
# one trained model: no extra look 0.877 / 0.751 (plain / beside distractors), 2x only 0.889 / 0.794, 1.5x then 2x
# 0.893 / 0.801; 6-14 % of the images look again.
SECOND_LOOK_BELOW = 0.02
SECOND_LOOK_SCALES = (1.5, 2.0)


@dataclass
class SegmentOptions:
    device: str = "auto"
    refine: str = "grabcut"
    precision: str = "auto"  # auto: fp16 on CUDA, fp32 elsewhere
    preview: str | None = None
    preview_count: int = 24
    truth: str | None = None  # a folder of ground-truth masks mirroring DATA: report IoU against it
    gpus: int | None = None  # with --device cuda: use the first N GPUs (default: every visible one)
    second_look: float = SECOND_LOOK_BELOW  # foreground share below which a pixel model looks again (SECOND_LOOK_SCALES); 0: never


class PatchPredictor:
    """A segmenter checkpoint that predicts P x P foreground probabilities; the model loads on first use (in the
    main process: pickled copies sent to workers leave it behind). ``device`` is a resolved ``torch.device`` (the
    segment step resolves ``--device`` once, where it makes its replicas) or a name, resolved when the model loads."""

    def __init__(self, checkpoint: Path, device="auto", precision: str = "auto", second_look: float = SECOND_LOOK_BELOW):
        from .model import BACKBONES, read_checkpoint

        self.checkpoint = Path(checkpoint)
        # The description only, checked now (before workers start); the weights load in setup: the step is pickled
        # to every worker, and torch would send each tensor as a file descriptor.
        self.meta = read_checkpoint(self.checkpoint, weights=False)
        self.image_size = int(self.meta["image_size"])
        self.grid = int(self.meta["grid"])
        self.backbone = self.meta["backbone"]
        self.device, self.precision = device, precision
        self.model = self.dtype = None
        # Only a model with pixel outputs can look at another input size; a patch model's grid is fixed by its input.
        pixel_model = BACKBONES[self.backbone].segmenter is not None
        self.second_look = second_look if pixel_model else 0.0
        self.second_look_sizes = tuple(round(s * self.image_size) for s in SECOND_LOOK_SCALES) if self.second_look > 0 else ()

    @property
    def second_look_size(self) -> int | None:
        """The largest extra look's input size (None: never looks again). Workers send the input at this size; the
        smaller looks are resized from it where needed."""
        return max(self.second_look_sizes) if self.second_look_sizes else None

    def __getstate__(self) -> dict:  # workers get no model, and the device by name (they need no torch)
        return {**self.__dict__, "model": None, "device": str(self.device)}

    def model_input(self, image: np.ndarray, size: int | None = None) -> np.ndarray:
        """An RGB image as the model takes it: uint8, C x S x S (S: the model's input size unless ``size``)."""
        size = size or self.image_size
        small = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(small.transpose(2, 0, 1))

    def model_inputs(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``model_input`` at the first look's size, and at the largest extra look's (None when it never looks again)."""
        second = self.model_input(image, self.second_look_size) if self.second_look_size else None
        return self.model_input(image), second

    def predict(self, inputs: list[tuple[np.ndarray, np.ndarray | None]]) -> tuple[list[np.ndarray], list[bool]]:
        """(foreground probabilities per image, whether each was looked at again) for ``model_inputs`` pairs.
        An image where the first look finds foreground in less than ``second_look`` of its pixels takes the
        probabilities of an extra look instead (see SECOND_LOOK_SCALES)."""
        probs = list(self([first for first, _ in inputs]))
        found = lambda p: float((p >= 0.5).mean())  # noqa: E731
        pending = [i for i, p in enumerate(probs) if inputs[i][1] is not None and found(p) < self.second_look]
        again, extra = set(pending), {}
        for size in self.second_look_sizes:
            if not pending:
                break
            # One image at a time: a few images of a batch look again, and a chunk of 8 at 1.5-2x the size would
            # cost each batch about as much as its whole first look.
            looks = [self._resized_input(inputs[i][1], size) for i in pending]
            for i, p in zip(pending, self(looks, chunk=self.second_look_chunk)):
                if i not in extra or found(p) > found(extra[i]):
                    extra[i] = p
            pending = [i for i in pending if found(extra[i]) < self.second_look]
        for i, p in extra.items():
            probs[i] = p
        return probs, [i in again for i in range(len(probs))]

    def _resized_input(self, largest: np.ndarray, size: int) -> np.ndarray:
        """A C x S x S model input resized from the largest look's input (as it came from the worker)."""
        return largest if largest.shape[-1] == size else self.model_input(np.ascontiguousarray(largest.transpose(1, 2, 0)), size)

    def load(self) -> None:
        """Load the model onto the device, in the precision ``--precision`` means there (main process)."""
        import torch

        from .model import load_segmenter, optimize_for_inference

        if not isinstance(self.device, torch.device):
            self.device = resolve_device(self.device)
        model, _ = load_segmenter(self.checkpoint)
        self.model = optimize_for_inference(model).to(self.device)
        self.dtype = getattr(torch, PRECISIONS[resolve_precision(self.precision, self.device.type)])
        self._mean = torch.as_tensor(np.asarray(self.meta["mean"], np.float32), device=self.device).view(1, 3, 1, 1)
        self._std = torch.as_tensor(np.asarray(self.meta["std"], np.float32), device=self.device).view(1, 3, 1, 1)

    chunk = 8  # the model always sees batches of exactly this many images (the last one padded)
    second_look_chunk = 1  # ... and an extra look, at a larger size, one image at a time

    def __call__(self, inputs: list[np.ndarray], chunk: int | None = None) -> np.ndarray:
        """N x P x P foreground probabilities for ``model_input`` arrays.

        Kernels may pick another algorithm for another batch size, and their sums then differ in the last bits
        (a mask pixel by one grey level). So the model only ever runs on batches of exactly ``chunk`` images
        (``self.chunk`` unless given): an image's mask does not depend on ``--batch-size``, on the shards or on
        which images share its batch.
        """
        import torch

        if self.model is None:
            self.load()
        chunk = chunk or self.chunk
        stacked = np.stack(inputs)
        padded = -len(stacked) % chunk
        if padded:
            stacked = np.concatenate([stacked, np.zeros((padded, *stacked.shape[1:]), stacked.dtype)])
        out = []
        for start in range(0, len(stacked), chunk):
            x = torch.from_numpy(stacked[start : start + chunk]).to(self.device, non_blocking=True)
            x = ((x.float() / 255.0 - self._mean) / self._std).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                out.append(torch.sigmoid(self.model(x).float()).cpu().numpy())
        return np.concatenate(out)[: len(inputs)]


def _dtype_name(dtype) -> str | None:
    return str(dtype).replace("torch.", "") if dtype is not None else None


class SegmentStep(Step):
    """MASKS/<class>/<name>.png = P(foreground) * 255 at the image's size."""

    name = "segment"

    def __init__(self, checkpoint: Path, out_dir: Path, options: SegmentOptions):
        if options.refine not in REFINE_METHODS:
            raise StepError(f"--refine must be one of {', '.join(REFINE_METHODS)}; got {options.refine!r}")
        if options.truth is not None and not Path(options.truth).is_dir():
            raise StepError(f"--truth: ground-truth mask folder not found: {options.truth}")
        self.predictor = PatchPredictor(checkpoint, options.device, options.precision, options.second_look)
        self.second_looks = 0  # images looked at again (SECOND_LOOK_BELOW), counted in the main process by collect
        from .model import BACKBONES

        self.compute_bound = BACKBONES[self.predictor.backbone].heavy
        calibrated = (self.predictor.meta.get("thresholds") or {}).get(options.refine)
        # Recorded only when the segmenter chose them; an older checkpoint leaves inpaint/compose their defaults.
        self.thresholds = {**calibrated, "source": "segmenter (validation labels)"} if calibrated else None
        self.out_dir = Path(out_dir)
        self.options = options
        self.truth_report: dict | None = None
        self.devices: list[str] = []  # where the model ran (one replica per device)
        self._replicas: list[SegmentStep] = []

    def outputs(self, item: ImageItem) -> list[Path]:
        return [mirror_path(self.out_dir, item.rel, ".png")]

    def replicas(self) -> list[SegmentStep]:
        """One copy of this step per device (every GPU of ``--device cuda``); the model's fixed chunks make each
        replica's masks byte-identical to a one-device run on the same kind of device."""
        devices = resolve_devices(self.options.device, self.options.gpus)  # --device, resolved once
        self.devices = [str(d) for d in devices]
        if len(devices) == 1:
            self.predictor.device = devices[0]
            return [self]
        copies = []
        for device in devices:
            replica = copy.copy(self)
            replica.predictor = PatchPredictor(self.predictor.checkpoint, device, self.options.precision, self.options.second_look)
            copies.append(replica)
        self._replicas = copies
        return copies

    def setup(self) -> None:
        self.predictor.load()

    def prepare(self, item: ImageItem) -> tuple[np.ndarray, tuple[tuple[int, int], np.ndarray | None]]:
        """Worker: the model's input and, for refining, the full-size guide (luma or RGB)."""
        image = read_image(item.path)
        guide = None  # --refine none
        if self.options.refine == "guided":
            guide = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        elif self.options.refine == "grabcut":
            guide = image
        return self.predictor.model_inputs(image), (image.shape[:2], guide)

    def compute(self, batch: list[tuple[tuple[np.ndarray, np.ndarray | None], Any]]) -> list[tuple[np.ndarray, Any]]:
        """Main process: foreground probabilities for a batch; what ``prepare`` passed along goes on to ``write``."""
        probs, looked_again = self.predictor.predict([b[0] for b in batch])
        return [(p, (b[1], again)) for p, b, again in zip(probs, batch, looked_again)]

    def write(self, item: ImageItem, result: tuple[np.ndarray, tuple[tuple[tuple[int, int], np.ndarray | None], bool]]) -> bool:
        """Worker: upsample, refine and write the mask; returns whether the model looked at the image again."""
        probs, (((h, w), guide), looked_again) = result
        soft = upsample_probabilities(probs, h, w)
        if guide is not None:
            soft = refine_mask(guide, soft, self.options.refine, cell=max(h, w) / self.predictor.grid)
        write_mask_atomic(mirror_path(self.out_dir, item.rel, ".png"), soft)
        return looked_again

    def collect(self, item: ImageItem, looked_again: bool) -> None:
        # Here, not in compute: with --executor ray or one replica per GPU, compute runs on copies of this step.
        self.second_looks += bool(looked_again)

    def recorded_options(self) -> dict:
        p = self.predictor
        return {
            "checkpoint": str(p.checkpoint),
            "backbone": p.backbone,
            "grid": p.grid,
            "image_size": p.image_size,
            "refine": self.options.refine,
            "second_look": {"below": p.second_look, "image_sizes": list(p.second_look_sizes)} if p.second_look_sizes else None,
            "thresholds": self.thresholds,
            "device": ",".join(self.devices) if self.devices else self.options.device,
            "dtype": _dtype_name((self._replicas or [self])[0].predictor.dtype),
        }

    def recorded_results(self) -> dict:
        results = {"second_looks": self.second_looks} if self.predictor.second_look_size else {}
        if self.truth_report:
            results["iou_against_truth"] = self.truth_report
        return results

    def finish(self, report: RunReport, items: list[ImageItem]) -> None:
        if self.options.preview:
            finished = [it for it in items if mirror_path(self.out_dir, it.rel, ".png").exists()]
            if finished:
                write_mask_preview(spread_sample(finished, self.options.preview_count), self.out_dir, Path(self.options.preview))
        if self.options.truth:
            self.truth_report = mask_iou_report(items, self.out_dir, Path(self.options.truth))
            t = self.truth_report
            if t["images"]:
                console.print(
                    f"IoU against {self.options.truth} (mask >= 0.5): mean {t['mean_iou']:.3f}, "
                    f"worst {t['min_iou']:.3f} over {t['images']} images"
                )


def mask_iou(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> float:
    """IoU of two masks in [0, 1], each binarised at ``threshold`` (1.0 when both are empty)."""
    p, t = pred >= threshold, truth >= threshold
    union = np.logical_or(p, t).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, t).sum() / union)


def mask_iou_report(items: list[ImageItem], masks_dir: Path, truth_dir: Path) -> dict:
    """Mean and worst IoU of MASKS against ground-truth masks, over items that have both."""
    ious = []
    for item in items:
        pred_path, truth_path = mirror_path(masks_dir, item.rel, ".png"), mirror_path(truth_dir, item.rel, ".png")
        if pred_path.exists() and truth_path.exists():
            truth = read_mask(truth_path)
            ious.append(mask_iou(read_mask(pred_path, truth.shape), truth))
    if not ious:
        return {"images": 0, "mean_iou": None, "min_iou": None}
    return {"images": len(ious), "mean_iou": round(float(np.mean(ious)), 4), "min_iou": round(float(np.min(ious)), 4)}


def write_mask_preview(items: list[ImageItem], masks_dir: Path, out_png: Path) -> None:
    """Overlay grid: each image with its mask tinted red."""
    tiles = []
    for item in items:
        image = read_image(item.path)
        mask = read_mask(mirror_path(masks_dir, item.rel, ".png"), image.shape[:2])
        tiles.append(overlay_mask(image, mask))
    write_image_atomic(out_png, preview_grid(tiles))
    console.print(f"preview: {out_png}")
