"""``train-segmenter``: learn per-patch foreground from LABELS.

BCE on labelled patches only (128 = ignore), augmentations that move the labels
with the image (flips, whole-patch shifts) plus colour jitter, a stratified
validation split, early stopping on validation IoU, and a checkpoint that holds
everything ``segment`` needs.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..engine import (Dataset, StepError, as_dataset, build_record, console, make_progress, model_record_path, prepare_items, read_items,
                      record_interrupted_training, resolve_device, status_of, write_run_record)
from ..images import read_image
from ..formats.label_format import FOREGROUND, UNLABELLED, label_path, labelled_items, read_grid, read_labels_info
from .calibrate import calibrate_thresholds
from ..nets import imagenet_normalise
from .backbones import DEFAULT_BACKBONE
from .model import backbone_spec, build_segmenter, default_image_size, optimize_for_inference, save_checkpoint
from .refine import REFINE_METHODS, refined_mask


@dataclass
class TrainOptions:
    backbone: str = DEFAULT_BACKBONE
    pretrained: bool = False
    weights: str | None = None
    image_size: int | None = None  # default: backbone stride x grid
    epochs: int | None = None  # None: the backbone's default (model.Backbone)
    batch_size: int = 16
    lr: float | None = None  # None: the backbone's default
    weight_decay: float = 1e-4
    val_fraction: float = 0.2
    patience: int | None = None  # None: the backbone's default
    seed: int = 0
    device: str = "auto"
    hflip: bool = True
    vflip: bool = False
    max_shift: int = 2  # in patches
    colour_jitter: float = 0.25


@dataclass
class TrainResult:
    checkpoint: Path
    metrics: dict
    failures: list[dict]
    thresholds: dict  # --refine method -> {"loose": ..., "tight": ...}


def _split(classes: list[str], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Stratified by class (each image's, by the dataset's class rule): about ``val_fraction`` of each class goes
    to validation."""
    rng = random.Random(seed)
    by_class: dict[str, list[int]] = {}
    for i, cls in enumerate(classes):
        by_class.setdefault(cls, []).append(i)
    train, val = [], []
    for cls in sorted(by_class):
        idx = by_class[cls][:]
        rng.shuffle(idx)
        n_val = int(round(len(idx) * val_fraction)) if len(classes) >= 8 else 0
        val += idx[:n_val]
        train += idx[n_val:]
    return sorted(train), sorted(val)


def _augment(x: torch.Tensor, y: torch.Tensor, opts: TrainOptions, grid: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """x: B x 3 x S x S in [0, 1]; y: B x P x P labels. Geometry moves both; colour only x."""
    b, _, s, _ = x.shape
    cell = s // grid
    x, y = x.clone(), y.clone()
    for i in range(b):
        if opts.hflip and torch.rand(1, generator=gen).item() < 0.5:
            x[i], y[i] = x[i].flip(-1), y[i].flip(-1)
        if opts.vflip and torch.rand(1, generator=gen).item() < 0.5:
            x[i], y[i] = x[i].flip(-2), y[i].flip(-2)
        if opts.max_shift:
            dy, dx = (int(v) for v in torch.randint(-opts.max_shift, opts.max_shift + 1, (2,), generator=gen))
            # Rolling moves pixels and their labels together; the seam is the only artefact.
            x[i] = torch.roll(x[i], shifts=(dy * cell, dx * cell), dims=(-2, -1))
            y[i] = torch.roll(y[i], shifts=(dy, dx), dims=(-2, -1))
    if opts.colour_jitter:
        j = opts.colour_jitter
        bright = 1 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * j
        contrast = 1 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * j
        sat = 1 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * j
        gray = x.mean(dim=1, keepdim=True)
        x = gray + (x - gray) * sat
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * contrast + mean
        x = (x * bright).clamp(0, 1)
    return x, y


COVERAGE_SHARPNESS = 12.0  # pooled-coverage margin -> patch logit: coverage 0.25 above the rule's threshold ~ P 0.95


def to_patch_logits(logits: torch.Tensor, grid: int, coverage: float) -> torch.Tensor:
    """B x P x P patch logits from a model's output. A patch model's output already is one; a pixel model's
    probabilities are pooled to the grid by the labels' own rule (a patch is foreground when at least ``coverage``
    of it is), so a patch's logit is positive exactly when that much of it is foreground, and a labelled boundary
    patch asks for no more than its share: the outline inside it is free to follow the object."""
    if logits.shape[-1] == grid and logits.shape[-2] == grid:
        return logits
    # The share of the patch that the mask (cut at 0.5) covers; its gradient is the soft probabilities' (a
    # straight-through estimate), so a patch cannot be satisfied by a haze of pixels at P 0.3 that no cut keeps.
    soft = torch.sigmoid(logits)
    hard = (logits > 0).to(soft.dtype) + soft - soft.detach()
    pooled = F.adaptive_avg_pool2d(hard.unsqueeze(1), grid).squeeze(1)
    return COVERAGE_SHARPNESS * (pooled - coverage)


def masked_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BCE over labelled patches only (labels: 255 fg, 0 bg, 128 ignored)."""
    known = labels != UNLABELLED
    if not known.any():
        return logits.sum() * 0
    target = (labels == FOREGROUND).float()
    return F.binary_cross_entropy_with_logits(logits[known], target[known])


def interior_pixel_bce(pixel_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BCE on the pixels of patches whose 3 x 3 neighbourhood carries one label (inside the object, or well clear
    of it): there the labels say what every pixel is, not just a share; the rest is left to the pooled rule."""
    fg, bg = (labels == FOREGROUND).float().unsqueeze(1), (labels == 0).float().unsqueeze(1)
    erode = lambda m: -F.max_pool2d(-m, 3, stride=1, padding=1)  # noqa: E731 (outside the image counts as agreeing)
    inside, outside = erode(fg), erode(bg)
    size = pixel_logits.shape[-2:]
    inside, outside = (F.interpolate(m, size=size, mode="nearest").squeeze(1) > 0.5 for m in (inside, outside))
    sure = inside | outside
    if not sure.any():
        return pixel_logits.sum() * 0
    return F.binary_cross_entropy_with_logits(pixel_logits[sure], inside[sure].float())


def patch_iou(probs: torch.Tensor, labels: torch.Tensor) -> float:
    known = labels != UNLABELLED
    pred = (probs >= 0.5) & known
    truth = (labels == FOREGROUND) & known
    union = (pred | truth).sum().item()
    return 1.0 if union == 0 else (pred & truth).sum().item() / union


def label_coverage(info) -> float:
    """The share of a patch that makes it foreground in these labels: the importer's threshold, else 0.5 (painted)."""
    return float(info.threshold) if info.threshold is not None else 0.5


def calibrate_on(model, inputs: "_Inputs", idx: list[int]) -> tuple[dict, dict]:
    """Loose/tight thresholds for every --refine method, chosen on the (validation) images ``idx`` and their labels,
    from the model's outputs as training feeds it (a frozen encoder's cached outputs are not computed again)."""
    model.eval()
    probs = []
    with torch.no_grad():
        for start in range(0, len(idx), 64):
            probs.append(torch.sigmoid(inputs(model, idx[start : start + 64], None)[2]).cpu().numpy())
    probs = np.concatenate(probs)
    images = inputs.data.x[idx].permute(0, 2, 3, 1).numpy()
    y, coverage = inputs.data.y[idx], inputs.coverage
    thresholds, reports = {}, {}
    for method in REFINE_METHODS:
        masks = np.stack([refined_mask(image, p, method, y.shape[-1]) for image, p in zip(images, probs)])
        chosen, reports[method] = calibrate_thresholds(masks, y.numpy(), coverage)
        thresholds[method] = chosen.as_dict()
    return thresholds, reports


@dataclass
class _Labelled:
    """The labelled images in memory: uint8 N x 3 x S x S, their grids, keys and the validation split."""

    x: torch.Tensor
    y: torch.Tensor
    keys: list[str]
    train_idx: list[int]
    val_idx: list[int]


def _read_labelled(labelled, labels_dir: Path, size: int, grid: int, opts: TrainOptions, failures: list[dict], progress: bool) -> _Labelled:
    def read(item):
        image = cv2.resize(read_image(item.path), (size, size), interpolation=cv2.INTER_AREA)
        return image, read_grid(label_path(labels_dir, item), grid)

    images, grids, keys, classes = [], [], [], []
    for item, (image, labels) in read_items(labelled, read, failures, description="reading labelled images", progress=progress):
        images.append(image)
        grids.append(labels)
        keys.append(item.key)
        classes.append(item.cls)
    train_idx, val_idx = _split(classes, opts.val_fraction, opts.seed)
    if not val_idx:
        console.print("[yellow]warning:[/] too few labelled images for a validation split; early stopping uses the training loss")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return _Labelled(x, torch.from_numpy(np.stack(grids)), keys, train_idx, val_idx)


class _Inputs:
    """What the model is fed for a batch of labelled images, as patch logits beside their labels.

    A patch model sees the images, augmented anew each epoch (flips, whole-patch shifts, colour). A model with a
    frozen encoder (``encode`` / ``decode``: u2netp) sees its encoder's outputs, computed once per image and per
    mirror image of a training image, so an epoch costs only the trained head; its augmentation is the horizontal
    flip."""

    def __init__(self, model, data: _Labelled, opts: TrainOptions, grid: int, coverage: float, device, progress: bool):
        self.data, self.opts, self.grid, self.coverage, self.device = data, opts, grid, coverage, device
        self.cache = None
        if hasattr(model, "encode"):
            # Validation and calibration see images as segment does; only training images are ever mirrored.
            pairs = [(i, False) for i in range(len(data.x))] + ([(i, True) for i in data.train_idx] if opts.hflip else [])
            self.cache = _encode_all(model, data.x, pairs, device, progress)

    def __call__(self, model, sel: list[int], gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(patch logits, labels, the model's own output) of images ``sel``; augmented when ``gen`` is given."""
        y = self.data.y[sel]
        if self.cache is None:
            x = self.data.x[sel].float() / 255
            if gen is not None:
                x, y = _augment(x, y, self.opts, self.grid, gen)
            logits = model(imagenet_normalise(x.to(self.device)))
        else:
            flips = (torch.rand(len(sel), generator=gen) < 0.5).tolist() if gen is not None and self.opts.hflip else [False] * len(sel)
            y = torch.stack([label.flip(-1) if f else label for label, f in zip(y, flips)])
            x = torch.stack([image.flip(-1) if f else image for image, f in zip(self.data.x[sel], flips)]).float() / 255
            parts = [part.to(self.device).float() for part in self.cache.batch(list(zip(sel, flips)))]
            logits = model.decode(*parts, imagenet_normalise(x.to(self.device)))
        y = y.to(self.device)
        return to_patch_logits(logits.float(), self.grid, self.coverage), y, logits.float()


def segmenter_loss(patch_logits: torch.Tensor, labels: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """The training loss: BCE on the labelled patches; a pixel model also learns the pixels the labels settle."""
    loss = masked_bce(patch_logits, labels)
    if output.shape[-2:] != labels.shape[-2:]:
        loss = loss + interior_pixel_bce(output, labels)
    return loss


@dataclass
class _Encodings:
    """A frozen encoder's two outputs for (image index, mirrored?) pairs, in half precision on the CPU."""

    outputs: tuple[torch.Tensor, torch.Tensor]
    rows: dict[tuple[int, bool], int]

    def batch(self, pairs: list[tuple[int, bool]]) -> list[torch.Tensor]:
        rows = torch.tensor([self.rows[pair] for pair in pairs])
        return [output[rows] for output in self.outputs]


def _encode_all(model, x: torch.Tensor, pairs: list[tuple[int, bool]], device, progress: bool) -> _Encodings:
    """The frozen encoder's outputs for the images ``x[i]`` (mirrored where asked) of ``pairs``.

    Computed by a copy of the model prepared as ``segment`` runs it (BatchNorm folded, channels-last): the same
    outputs to ~5e-4, about 1.8x faster on a CPU, and what the head will be fed at inference. Mirror images are
    encoded, not the outputs mirrored (which would save their share of this: 4 passes in 9 with the default
    validation split): the encoder is not mirror-symmetric, so mirrored outputs are inputs the head never meets in
    ``segment``, and trained on them it was no better
    (held-out-object photos, seed-1 set, two heads: mean IoU 0.896 -> 0.886 and 0.898 -> 0.889; beside distractors
    0.802 -> 0.807 and 0.786 -> 0.795: noise at best, and a loss on the plain set both times)."""
    model.eval()
    encoder = optimize_for_inference(copy.deepcopy(model))  # the model being trained keeps its own BatchNorm layers
    parts: list[list[torch.Tensor]] = [[], []]
    with make_progress(enabled=progress) as bar:
        task = bar.add_task("encoding labelled images", total=len(pairs), status="")
        for start in range(0, len(pairs), 8):
            chunk = pairs[start : start + 8]
            xb = torch.stack([x[i].flip(-1) if mirrored else x[i] for i, mirrored in chunk]).float() / 255
            encoded = encoder.encode(imagenet_normalise(xb.to(device)).contiguous(memory_format=torch.channels_last))
            for k in range(2):
                parts[k].append(encoded[k].half().cpu())
            bar.update(task, advance=len(chunk))
    return _Encodings(tuple(torch.cat(p) for p in parts), {pair: row for row, pair in enumerate(pairs)})


def _evaluate(model, inputs: _Inputs, idx: list[int]) -> tuple[float, float]:
    """Masked BCE and patch IoU of ``model`` on the images ``idx``."""
    model.eval()
    losses, probs = [], []
    with torch.no_grad():
        for start in range(0, len(idx), 64):
            sel = idx[start : start + 64]
            logits, labels, _ = inputs(model, sel, None)
            losses.append(masked_bce(logits, labels).item() * len(sel))
            probs.append(torch.sigmoid(logits).cpu())
    return sum(losses) / len(idx), patch_iou(torch.cat(probs), inputs.data.y[idx])


def _train_epoch(model, inputs: _Inputs, optimiser, scheduler, opts: TrainOptions, gen: torch.Generator) -> float:
    """One pass over the training images with augmentation; the mean training loss."""
    model.train()
    data = inputs.data
    order = torch.randperm(len(data.train_idx), generator=gen).tolist()
    total = 0.0
    for start in range(0, len(order), opts.batch_size):
        sel = [data.train_idx[i] for i in order[start : start + opts.batch_size]]
        loss = segmenter_loss(*inputs(model, sel, gen))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()
        total += loss.item() * len(sel)
    return total / len(data.train_idx)


def _fit(model, inputs: _Inputs, opts: TrainOptions, progress: bool) -> tuple[dict, list[dict]]:
    """Train with early stopping on validation IoU (then loss); leaves the best weights in ``model``. Returns
    the best epoch's figures and the history."""
    data = inputs.data
    gen = torch.Generator().manual_seed(opts.seed)
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=opts.lr, weight_decay=opts.weight_decay)
    steps_per_epoch = max(1, (len(data.train_idx) + opts.batch_size - 1) // opts.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=opts.lr, total_steps=opts.epochs * steps_per_epoch, pct_start=0.15)
    best, best_state, history, stale = {"epoch": -1, "val_iou": -1.0, "val_loss": float("inf")}, None, [], 0
    with make_progress(enabled=progress) as bar:
        task = bar.add_task("train-segmenter", total=opts.epochs, status="")
        for epoch in range(opts.epochs):
            train_loss = _train_epoch(model, inputs, optimiser, scheduler, opts, gen)
            val_loss, val_iou = _evaluate(model, inputs, data.val_idx) if data.val_idx else (train_loss, float("nan"))
            history.append({"epoch": epoch + 1, "train_loss": round(train_loss, 5), "val_loss": round(val_loss, 5), "val_iou": round(val_iou, 5)})
            if data.val_idx:
                improved = val_iou > best["val_iou"] + 1e-4 or (abs(val_iou - best["val_iou"]) <= 1e-4 and val_loss < best["val_loss"])
            else:
                improved = val_loss < best["val_loss"]
            if improved:
                best = {"epoch": epoch + 1, "val_iou": val_iou, "val_loss": val_loss}
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            stale = 0 if improved else stale + 1
            bar.update(task, advance=1, status=(f"loss {train_loss:.3f} · val loss {val_loss:.3f} · val IoU {val_iou:.3f} · best {best['val_iou']:.3f} "
                                                f"@ {best['epoch']}"))
            if stale >= opts.patience:
                bar.update(task, total=epoch + 1)
                break
    model.load_state_dict(best_state)
    return best, history


def with_backbone_defaults(opts: TrainOptions) -> TrainOptions:
    """``opts`` with the epochs, learning rate and patience the backbone trains with unless told otherwise."""
    spec = backbone_spec(opts.backbone)
    return replace(opts, epochs=opts.epochs or spec.epochs, lr=opts.lr or spec.lr, patience=opts.patience or spec.patience)


def train_segmenter(dataset: Dataset | Path, labels_dir: Path, out_path: Path, opts: TrainOptions, progress: bool = True) -> TrainResult:
    """Train on every labelled image of DATA (a folder, or a ``Dataset`` with its class rule) and save the checkpoint
    to ``out_path`` (and its run record beside)."""
    dataset = as_dataset(dataset)
    t0 = time.perf_counter()
    if opts.pretrained and opts.weights:
        raise StepError("use either --pretrained or --weights FILE, not both")
    labels_dir = Path(labels_dir)
    if not labels_dir.is_dir():
        raise StepError(f"labels folder not found: {labels_dir}")
    info = read_labels_info(labels_dir)
    items, warnings = prepare_items(dataset, other_inputs=[labels_dir, Path(opts.weights) if opts.weights else None],
                                    output_files=[("-o", Path(out_path))])
    labelled = labelled_items(labels_dir, items)
    if len(labelled) < 4:
        raise StepError(f"only {len(labelled)} labelled image(s) of {dataset.root} found in {labels_dir}; label at least a few dozen")
    grid = info.grid
    opts = with_backbone_defaults(opts)
    size = opts.image_size or default_image_size(opts.backbone, grid)
    if size % grid:
        raise StepError(f"--image-size {size} must be a multiple of the grid size {grid}")
    device = resolve_device(opts.device)
    torch.manual_seed(opts.seed)
    failures: list[dict] = []
    data = _read_labelled(labelled, labels_dir, size, grid, opts, failures, progress)
    model = build_segmenter(opts.backbone, grid, pretrained=opts.pretrained, weights=Path(opts.weights) if opts.weights else None).to(device)
    out_path = Path(out_path)
    try:
        inputs = _Inputs(model, data, opts, grid, label_coverage(info), device, progress)
        best, history = _fit(model, inputs, opts, progress)
    except KeyboardInterrupt as exc:
        raise record_interrupted_training(
            out_path, "train-segmenter", exc, options={**asdict(opts), "layout": dataset.layout.recorded()},
            counts={"labelled": len(labelled), "used": len(data.keys), "failed": len(failures)},
            wall_time_s=time.perf_counter() - t0, failures=failures) from None
    held_out = data.val_idx or data.train_idx
    thresholds, calibration = calibrate_on(model, inputs, held_out)
    metrics = {
        "best_epoch": best["epoch"], "epochs_run": len(history), "val_patch_iou": round(best["val_iou"], 5) if data.val_idx else None,
        "val_loss": round(best["val_loss"], 5), "train_images": len(data.train_idx), "val_images": len(data.val_idx),
        "history": history, "calibration": calibration,
    }
    options = {**asdict(opts), "device_used": str(device), "grid": grid, "image_size": size, "layout": dataset.layout.recorded()}
    extra = {"labels": {"dir": str(labels_dir), "grid": grid, "method": info.method}, "val_items": [data.keys[i] for i in data.val_idx],
             "thresholds": thresholds}
    save_checkpoint(out_path, model.cpu(), size, options, metrics, extra=extra)
    write_run_record(model_record_path(out_path), build_record(
        "train-segmenter", status=status_of(len(failures)), options=options,
        counts={"labelled": len(labelled), "used": len(data.keys), "failed": len(failures)},
        wall_time_s=time.perf_counter() - t0, failures=failures, checkpoint=str(out_path),
        metrics={k: v for k, v in metrics.items() if k != "history"}, warnings=warnings))
    return TrainResult(out_path, metrics, failures, thresholds)


def thresholds_line(thresholds: dict, refine: str = "grabcut") -> str:
    """One line for the console: the thresholds segment, inpaint and compose will use by default."""
    t = thresholds[refine]
    return (f"thresholds chosen on the validation labels (--refine {refine}): inpaint removes P(fg) >= {t['loose']:.2f}, "
            f"compose cuts out P(fg) >= {t['tight']:.2f}")
