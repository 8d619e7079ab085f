"""``segment``: soft foreground masks at full image resolution, through the engine.

Workers decode and resize (``prepare``), the main process runs the model on batches
(``compute``), workers upsample the P x P probabilities smoothly to the image
size, optionally snap edges to the image (``--refine``, see ``refine``), and write the PNG.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any
from pathlib import Path

import cv2
import numpy as np

from ..engine import PRECISIONS, RunReport, Shard, Step, StepError, console, resolve_device, resolve_devices, resolve_precision
from ..images import (ImageItem, mirror_path, overlay_mask, preview_grid, read_image, read_mask, read_mask_text, spread_sample, write_image_atomic,
                      write_mask_atomic)
from ..formats.mask_quality import CONFIDENCE_NOTE, DEFAULT_MIN_CONFIDENCE, QUALITY_FILE, format_confidence, parse_confidence, update_mask_quality
from .confidence import mask_confidence
from .refine import REFINE_METHODS, guided_filter, refine_guide, refine_mask, refined_mask, upsample_probabilities

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
    preview_order: str = "least-confident"  # --preview shows the least confident masks first, or "spread" over DATA
    write_masks: bool = True  # False: only score each mask (its confidence, in ``SegmentStep.confidences``), write nothing


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

    def predict(self, inputs: list[tuple[np.ndarray, np.ndarray | None]]) -> list[tuple[np.ndarray, np.ndarray | None, bool]]:
        """For ``model_inputs`` pairs, per image: the foreground probabilities, the saliency map of the same look
        (``looks``; None for a patch model) and whether the model looked at the image again. An image where the
        first look finds foreground in less than ``second_look`` of its pixels takes an extra look's instead (see
        SECOND_LOOK_SCALES)."""
        probs, saliency = self.looks([first for first, _ in inputs])
        chosen = [(p, None if saliency is None else saliency[i]) for i, p in enumerate(probs)]
        found = lambda look: float((look[0] >= 0.5).mean())  # noqa: E731
        pending = [i for i, look in enumerate(chosen) if inputs[i][1] is not None and found(look) < self.second_look]
        again, extra = set(pending), {}
        for size in self.second_look_sizes:
            if not pending:
                break
            # One image at a time: a few images of a batch look again, and a chunk of 8 at 1.5-2x the size would
            # cost each batch about as much as its whole first look.
            more, more_saliency = self.looks([self._resized_input(inputs[i][1], size) for i in pending], chunk=self.second_look_chunk)
            for k, i in enumerate(pending):
                look = (more[k], None if more_saliency is None else more_saliency[k])
                if i not in extra or found(look) > found(extra[i]):
                    extra[i] = look
            pending = [i for i in pending if found(extra[i]) < self.second_look]
        chosen = [extra.get(i, look) for i, look in enumerate(chosen)]
        return [(p, sal, i in again) for i, (p, sal) in enumerate(chosen)]

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
        """N x P x P foreground probabilities for ``model_input`` arrays (``looks`` without the saliency)."""
        return self.looks(inputs, chunk)[0]

    def looks(self, inputs: list[np.ndarray], chunk: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """N x P x P foreground probabilities for ``model_input`` arrays, and N x P x P of the salient-object map
        the model started from (U^2-Net-p's, stretched; None for a model without one): where the two disagree, the
        labels moved the model away from what stands out, and the confidence (``confidence.py``) reads that.

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
        probs, saliency = [], []
        with_saliency = hasattr(self.model, "forward_with_saliency")
        for start in range(0, len(stacked), chunk):
            x = torch.from_numpy(stacked[start : start + chunk]).to(self.device, non_blocking=True)
            x = ((x.float() / 255.0 - self._mean) / self._std).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                if with_saliency:
                    logits, salient = self.model.forward_with_saliency(x)
                    saliency.append(torch.sigmoid(salient.float()).cpu().numpy())
                else:
                    logits = self.model(x)
                probs.append(torch.sigmoid(logits.float()).cpu().numpy())
        return np.concatenate(probs)[: len(inputs)], np.concatenate(saliency)[: len(inputs)] if with_saliency else None


def _dtype_name(dtype) -> str | None:
    return str(dtype).replace("torch.", "") if dtype is not None else None


class SegmentStep(Step):
    """MASKS/<class>/<name>.png = P(foreground) * 255 at the image's size, each with its confidence (a PNG note),
    and MASKS/mask_quality.csv, the confidences of every mask (``mask_quality``)."""

    name = "segment"

    def __init__(self, checkpoint: Path, out_dir: Path, options: SegmentOptions):
        if options.refine not in REFINE_METHODS:
            raise StepError(f"--refine must be one of {', '.join(REFINE_METHODS)}; got {options.refine!r}")
        if options.truth is not None and not Path(options.truth).is_dir():
            raise StepError(f"--truth: ground-truth mask folder not found: {options.truth}")
        self.predictor = PatchPredictor(checkpoint, options.device, options.precision, options.second_look)
        self.second_looks = 0  # images looked at again (SECOND_LOOK_BELOW), counted in the main process by collect
        self.confidences: dict[str, float] = {}  # image (rel) -> its mask's confidence, for this run's masks
        self.quality_summary: dict | None = None
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
        return [mirror_path(self.out_dir, item.rel, ".png")] if self.options.write_masks else []

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
        return self.predictor.model_inputs(image), (image.shape[:2], refine_guide(image, self.options.refine))

    def compute(self, batch: list[tuple[tuple[np.ndarray, np.ndarray | None], Any]]) -> list[tuple[np.ndarray, Any]]:
        """Main process: foreground probabilities for a batch; what ``prepare`` passed along goes on to ``write``."""
        looks = self.predictor.predict([b[0] for b in batch])
        return [(probs, (b[1], again, saliency)) for (probs, saliency, again), b in zip(looks, batch)]

    def write(self, item: ImageItem, result: tuple[np.ndarray, tuple[tuple[tuple[int, int], np.ndarray | None], bool, np.ndarray | None]]) -> tuple[bool,
                                                                                                                                                    float]:
        """Worker: upsample, refine, score and write the mask (its confidence in a PNG note); returns whether the
        model looked at the image again, and the confidence."""
        probs, (((h, w), guide), looked_again, saliency) = result
        coarse = soft = upsample_probabilities(probs, h, w)
        if self.options.refine != "none":
            soft = refine_mask(guide, coarse, self.options.refine, cell=max(h, w) / self.predictor.grid)
        confidence = float(format_confidence(mask_confidence(probs, coarse, soft, looked_again, saliency)))
        if not self.options.write_masks:
            return looked_again, confidence
        write_mask_atomic(mirror_path(self.out_dir, item.rel, ".png"), soft, {CONFIDENCE_NOTE: format_confidence(confidence)})
        return looked_again, confidence

    def _write_quality(self, items: list[ImageItem]) -> dict[str, float]:
        """Merge this shard's confidences into MASKS/mask_quality.csv (those of masks an earlier run wrote come from
        their PNG notes), say how many masks are below the default threshold; returns image -> confidence."""
        scores, unscored = dict(self.confidences), 0
        for item in items:
            rel = str(item.rel)
            if rel not in scores:
                path = mirror_path(self.out_dir, item.rel, ".png")
                value = parse_confidence(read_mask_text(path).get(CONFIDENCE_NOTE)) if path.exists() else None
                if value is not None:
                    scores[rel] = value
                elif path.exists():
                    unscored += 1
        if not scores and not unscored:
            return scores
        rows = update_mask_quality(self.out_dir, scores)
        low = sorted(rel for rel, c in scores.items() if c < DEFAULT_MIN_CONFIDENCE)
        self.quality_summary = {"file": QUALITY_FILE, "images": len(scores), "rows": rows, "below_min_confidence": len(low),
                                "min_confidence": DEFAULT_MIN_CONFIDENCE, "unscored": unscored}
        console.print(f"mask confidence: {len(low)} of {len(scores)} masks below {DEFAULT_MIN_CONFIDENCE:g}, probably wrong "
                      f"(compose leaves them out; the lowest first with --preview) -> {self.out_dir / QUALITY_FILE}")
        if unscored:
            console.print(f"[yellow]note:[/] {unscored} mask(s) carry no confidence (made by an older version, or by hand): "
                          f"segment with --overwrite to score them")
        return scores

    def collect(self, item: ImageItem, info: tuple[bool, float]) -> None:
        # Here, not in compute: with --executor ray or one replica per GPU, compute runs on copies of this step.
        looked_again, confidence = info
        self.second_looks += bool(looked_again)
        self.confidences[str(item.rel)] = confidence

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
            "min_confidence": {"value": DEFAULT_MIN_CONFIDENCE, "source": "default"},
            "device": ",".join(self.devices) if self.devices else self.options.device,
            "dtype": _dtype_name((self._replicas or [self])[0].predictor.dtype),
        }

    def recorded_results(self) -> dict:
        results = {"second_looks": self.second_looks} if self.predictor.second_look_size else {}
        if self.truth_report:
            results["iou_against_truth"] = self.truth_report
        if self.quality_summary:
            results["mask_quality"] = self.quality_summary
        return results

    def finish(self, report: RunReport, items: list[ImageItem]) -> None:
        if not self.options.write_masks:
            return
        scores = self._write_quality(items)
        if self.options.preview:
            finished = [it for it in items if str(it.rel) in scores or mirror_path(self.out_dir, it.rel, ".png").exists()]
            if finished:
                chosen = preview_items(finished, scores, self.options.preview_order, self.options.preview_count)
                write_mask_preview(chosen, self.out_dir, Path(self.options.preview), scores)
        if self.options.truth:
            self.truth_report = mask_iou_report(items, self.out_dir, Path(self.options.truth))
            t = self.truth_report
            if t["images"]:
                console.print(
                    f"IoU against {self.options.truth} (mask >= 0.5): mean {t['mean_iou']:.3f}, "
                    f"worst {t['min_iou']:.3f} over {t['images']} images"
                )
            if t["no_truth"]:
                note = (f"--truth {self.options.truth}: no mask there for {t['no_truth']} of the {len(items)} images "
                        f"(expected TRUTH/<path under DATA>.png){'' if t['images'] else '; no IoU was computed'}")
                report.warnings.append(note)
                console.print(f"[yellow]warning:[/] {note}")


def preview_items(items: list[ImageItem], confidences: dict[str, float], order: str, count: int) -> list[ImageItem]:
    """The masks ``segment --preview`` shows: the ``count`` least confident, lowest first (``order``
    "least-confident"; a mask with no confidence comes last), or ``count`` spread evenly over ``items``."""
    if order == "least-confident":
        return sorted(items, key=lambda it: (confidences.get(str(it.rel), 2.0), str(it.rel)))[:count]
    return spread_sample(items, count)


def score_masks(checkpoint: Path, items: list[ImageItem], common) -> dict[str, float]:
    """Each item's mask confidence (image rel -> confidence) as ``segment`` would write it, without writing a
    mask: the segment step through the engine (``common``'s device, workers, batch size, progress), scoring only
    (``label --pick uncertain``)."""
    import tempfile

    from ..engine import run_step

    options = common.into(SegmentOptions, write_masks=False, preview=None)
    with tempfile.TemporaryDirectory(prefix="autobackswap-score-") as tmp:
        step = SegmentStep(checkpoint, Path(tmp), options)
        run_step(step, items, replace(common, shard=Shard(), overwrite=True))
    return step.confidences


def mask_iou(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> float:
    """IoU of two masks in [0, 1], each binarised at ``threshold`` (1.0 when both are empty)."""
    p, t = pred >= threshold, truth >= threshold
    union = np.logical_or(p, t).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, t).sum() / union)


def mask_iou_report(items: list[ImageItem], masks_dir: Path, truth_dir: Path) -> dict:
    """Mean and worst IoU of MASKS against ground-truth masks, over items that have both; ``no_truth``: how many
    items have no ground-truth mask."""
    ious, no_truth = [], 0
    for item in items:
        pred_path, truth_path = mirror_path(masks_dir, item.rel, ".png"), mirror_path(truth_dir, item.rel, ".png")
        if not truth_path.exists():
            no_truth += 1
        elif pred_path.exists():
            truth = read_mask(truth_path)
            ious.append(mask_iou(read_mask(pred_path, truth.shape), truth))
    if not ious:
        return {"images": 0, "mean_iou": None, "min_iou": None, "no_truth": no_truth}
    return {"images": len(ious), "mean_iou": round(float(np.mean(ious)), 4), "min_iou": round(float(np.min(ious)), 4), "no_truth": no_truth}


def write_mask_preview(items: list[ImageItem], masks_dir: Path, out_png: Path, confidences: dict[str, float] | None = None) -> None:
    """Overlay grid: each image with its mask (background dimmed, outline drawn), captioned with its confidence
    and name when ``confidences`` are given."""
    tiles, captions = [], []
    for item in items:
        image = read_image(item.path)
        mask = read_mask(mirror_path(masks_dir, item.rel, ".png"), image.shape[:2])
        tiles.append(overlay_mask(image, mask))
        confidence = (confidences or {}).get(str(item.rel))
        captions.append(f"{confidence:.2f} {item.rel.name}" if confidence is not None else item.rel.name)
    write_image_atomic(out_png, preview_grid(tiles, captions=captions))
    console.print(f"preview: {out_png}")
