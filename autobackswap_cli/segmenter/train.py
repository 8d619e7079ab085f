"""``train-segmenter``: learn per-patch foreground from LABELS.

BCE on labelled patches only (128 = ignore), augmentations that move the labels
with the image (flips, whole-patch shifts) plus colour jitter, a stratified
validation split, early stopping on validation IoU, and a checkpoint that holds
everything ``segment`` needs.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..engine import (StepError, build_record, console, make_progress, model_record_path, prepare_items, read_items,
                      record_interrupted_training, resolve_device, status_of, write_run_record)
from ..images import read_image
from ..labels import FOREGROUND, UNLABELLED, label_path, labelled_items, read_grid, read_labels_info
from .calibrate import calibrate_thresholds
from ..nets import imagenet_normalise
from .model import build_segmenter, default_image_size, save_checkpoint
from .predict import REFINE_METHODS, refined_mask


@dataclass
class TrainOptions:
    backbone: str = "small-cnn"
    pretrained: bool = False
    weights: str | None = None
    image_size: int | None = None  # default: backbone stride x grid
    epochs: int = 40
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.2
    patience: int = 10
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


def _split(keys: list[str], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Stratified by class: about ``val_fraction`` of each class goes to validation."""
    rng = random.Random(seed)
    by_class: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        by_class.setdefault(k.split("/")[0], []).append(i)
    train, val = [], []
    for cls in sorted(by_class):
        idx = by_class[cls][:]
        rng.shuffle(idx)
        n_val = int(round(len(idx) * val_fraction)) if len(keys) >= 8 else 0
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


def masked_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BCE over labelled patches only (labels: 255 fg, 0 bg, 128 ignored)."""
    known = labels != UNLABELLED
    if not known.any():
        return logits.sum() * 0
    target = (labels == FOREGROUND).float()
    return F.binary_cross_entropy_with_logits(logits[known], target[known])


def patch_iou(probs: torch.Tensor, labels: torch.Tensor) -> float:
    known = labels != UNLABELLED
    pred = (probs >= 0.5) & known
    truth = (labels == FOREGROUND) & known
    union = (pred | truth).sum().item()
    return 1.0 if union == 0 else (pred & truth).sum().item() / union


def label_coverage(info) -> float:
    """The share of a patch that makes it foreground in these labels: the importer's threshold, else 0.5 (painted)."""
    return float(info.threshold) if info.threshold is not None else 0.5


def calibrate_on(model, x: torch.Tensor, y: torch.Tensor, coverage: float, device: torch.device) -> tuple[dict, dict]:
    """Loose/tight thresholds for every --refine method, chosen on these (validation) images and labels."""
    model.eval()
    probs = []
    with torch.no_grad():
        for start in range(0, len(x), 64):
            probs.append(torch.sigmoid(model(imagenet_normalise(x[start : start + 64].to(device).float() / 255)).float()).cpu().numpy())
    probs = np.concatenate(probs)
    images = x.permute(0, 2, 3, 1).numpy()
    thresholds, reports = {}, {}
    for method in REFINE_METHODS:
        masks = np.stack([refined_mask(image, p, method) for image, p in zip(images, probs)])
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

    images, grids, keys = [], [], []
    for item, (image, labels) in read_items(labelled, read, failures, description="reading labelled images", progress=progress):
        images.append(image)
        grids.append(labels)
        keys.append(item.key)
    train_idx, val_idx = _split(keys, opts.val_fraction, opts.seed)
    if not val_idx:
        console.print("[yellow]warning:[/] too few labelled images for a validation split; early stopping uses the training loss")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return _Labelled(x, torch.from_numpy(np.stack(grids)), keys, train_idx, val_idx)


def _evaluate(model, data: _Labelled, idx: list[int], device) -> tuple[float, float]:
    """Masked BCE and patch IoU of ``model`` on the images ``idx``."""
    model.eval()
    losses, probs = [], []
    with torch.no_grad():
        for start in range(0, len(idx), 64):
            sel = idx[start : start + 64]
            logits = model(imagenet_normalise(data.x[sel].to(device).float() / 255)).float().cpu()
            losses.append(masked_bce(logits, data.y[sel]).item() * len(sel))
            probs.append(torch.sigmoid(logits))
    return sum(losses) / len(idx), patch_iou(torch.cat(probs), data.y[idx])


def _train_epoch(model, data: _Labelled, optimiser, scheduler, opts: TrainOptions, grid: int, gen: torch.Generator, device) -> float:
    """One pass over the training images with augmentation; the mean training loss."""
    model.train()
    order = torch.randperm(len(data.train_idx), generator=gen).tolist()
    total = 0.0
    for start in range(0, len(order), opts.batch_size):
        sel = [data.train_idx[i] for i in order[start : start + opts.batch_size]]
        xb, yb = _augment(data.x[sel].float() / 255, data.y[sel], opts, grid, gen)
        loss = masked_bce(model(imagenet_normalise(xb.to(device))).float(), yb.to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()
        total += loss.item() * len(sel)
    return total / len(data.train_idx)


def _fit(model, data: _Labelled, opts: TrainOptions, grid: int, device, progress: bool) -> tuple[dict, list[dict]]:
    """Train with early stopping on validation IoU (then loss); leaves the best weights in ``model``. Returns
    the best epoch's figures and the history."""
    gen = torch.Generator().manual_seed(opts.seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    steps_per_epoch = max(1, (len(data.train_idx) + opts.batch_size - 1) // opts.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=opts.lr, total_steps=opts.epochs * steps_per_epoch, pct_start=0.15)
    best, best_state, history, stale = {"epoch": -1, "val_iou": -1.0, "val_loss": float("inf")}, None, [], 0
    with make_progress(enabled=progress) as bar:
        task = bar.add_task("train-segmenter", total=opts.epochs, status="")
        for epoch in range(opts.epochs):
            train_loss = _train_epoch(model, data, optimiser, scheduler, opts, grid, gen, device)
            val_loss, val_iou = _evaluate(model, data, data.val_idx, device) if data.val_idx else (train_loss, float("nan"))
            history.append({"epoch": epoch + 1, "train_loss": round(train_loss, 5), "val_loss": round(val_loss, 5), "val_iou": round(val_iou, 5)})
            if data.val_idx:
                improved = val_iou > best["val_iou"] + 1e-4 or (abs(val_iou - best["val_iou"]) <= 1e-4 and val_loss < best["val_loss"])
            else:
                improved = val_loss < best["val_loss"]
            if improved:
                best = {"epoch": epoch + 1, "val_iou": val_iou, "val_loss": val_loss}
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            stale = 0 if improved else stale + 1
            bar.update(task, advance=1, status=f"loss {train_loss:.3f} · val loss {val_loss:.3f} · val IoU {val_iou:.3f} · best {best['val_iou']:.3f} @ {best['epoch']}")
            if stale >= opts.patience:
                bar.update(task, total=epoch + 1)
                break
    model.load_state_dict(best_state)
    return best, history


def train_segmenter(data_dir: Path, labels_dir: Path, out_path: Path, opts: TrainOptions, progress: bool = True) -> TrainResult:
    """Train on every labelled image of DATA and save the checkpoint to ``out_path`` (and its run record beside)."""
    t0 = time.perf_counter()
    labels_dir = Path(labels_dir)
    if not labels_dir.is_dir():
        raise StepError(f"labels folder not found: {labels_dir}")
    info = read_labels_info(labels_dir)
    items, warnings = prepare_items(Path(data_dir), other_inputs=[labels_dir])
    labelled = labelled_items(labels_dir, items)
    if len(labelled) < 4:
        raise StepError(f"only {len(labelled)} labelled image(s) of {data_dir} found in {labels_dir}; label at least a few dozen")
    grid = info.grid
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
        best, history = _fit(model, data, opts, grid, device, progress)
    except KeyboardInterrupt as exc:
        raise record_interrupted_training(
            out_path, "train-segmenter", exc, options=asdict(opts),
            counts={"labelled": len(labelled), "used": len(data.keys), "failed": len(failures)},
            wall_time_s=time.perf_counter() - t0, failures=failures) from None
    held_out = data.val_idx or data.train_idx
    thresholds, calibration = calibrate_on(model, data.x[held_out], data.y[held_out], label_coverage(info), device)
    metrics = {
        "best_epoch": best["epoch"], "epochs_run": len(history), "val_patch_iou": round(best["val_iou"], 5) if data.val_idx else None,
        "val_loss": round(best["val_loss"], 5), "train_images": len(data.train_idx), "val_images": len(data.val_idx),
        "history": history, "calibration": calibration,
    }
    options = {**asdict(opts), "device_used": str(device), "grid": grid, "image_size": size}
    extra = {"labels": {"dir": str(labels_dir), "grid": grid, "method": info.method}, "val_items": [data.keys[i] for i in data.val_idx],
             "thresholds": thresholds}
    save_checkpoint(out_path, model.cpu(), size, options, metrics, extra=extra)
    write_run_record(model_record_path(out_path), build_record(
        "train-segmenter", status=status_of(len(failures)), options=options,
        counts={"labelled": len(labelled), "used": len(data.keys), "failed": len(failures)},
        wall_time_s=time.perf_counter() - t0, failures=failures, checkpoint=str(out_path),
        metrics={k: v for k, v in metrics.items() if k != "history"}, warnings=warnings))
    return TrainResult(out_path, metrics, failures, thresholds)


def thresholds_line(thresholds: dict, refine: str = "guided") -> str:
    """One line for the console: the thresholds segment, inpaint and compose will use by default."""
    t = thresholds[refine]
    return (f"thresholds chosen on the validation labels (--refine {refine}): inpaint removes P(fg) >= {t['loose']:.2f}, "
            f"compose cuts out P(fg) >= {t['tight']:.2f}")
