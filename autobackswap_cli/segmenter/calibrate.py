"""Loose and tight thresholds chosen on the segmenter's validation labels, stored in its checkpoint.

``segment`` records them in MASKS' run record; ``inpaint`` (loose: what to remove) and ``compose`` (tight: what
to cut out) use them unless told otherwise. The fixed 0.1 / 0.5 of the paper are right for the paper's patch
masks, not for a refined pixel mask: on real photographs they left a hole ~1.6x the object's size and a ring of
the object's own background on the cut-out.

Both are read off the validation images' refined masks, pooled back to patches the way the labels were made:

- tight: the threshold at which the pooled mask best reproduces the labels (patch IoU), a patch being
  foreground when at least ``coverage`` of it is (the label importer's threshold; 0.5 for hand-painted labels).
  At boundary patches that pins the mask's edge where the labels put it. Ties go to the higher threshold: a
  thinner ring costs less than a lost rim.
- loose: the highest threshold (at most tight) whose region still touches ``recall`` of the labelled foreground
  patches, so the hole reaches every part of the object the labels know; ``inpaint --dilate`` then covers the rim.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..formats.label_format import FOREGROUND, UNLABELLED
from ..formats.mask_thresholds import PAPER_THRESHOLDS

TIGHT_CANDIDATES = np.round(np.arange(0.30, 0.901, 0.05), 2)
LOOSE_CANDIDATES = np.round(np.arange(0.05, 0.901, 0.05), 2)


@dataclass(frozen=True)
class Thresholds:
    loose: float = PAPER_THRESHOLDS["loose"]  # what inpaint removes
    tight: float = PAPER_THRESHOLDS["tight"]  # what compose cuts out

    def as_dict(self) -> dict:
        return {"loose": self.loose, "tight": self.tight}


DEFAULT_THRESHOLDS = Thresholds()


def patch_coverage(masks: np.ndarray, threshold: float, grid: int) -> np.ndarray:
    """N x P x P: the share of each patch's pixels where the mask is at least ``threshold``."""
    return np.stack([cv2.resize((m >= threshold - 1e-6).astype(np.float32), (grid, grid), interpolation=cv2.INTER_AREA) for m in masks])


def calibrate_thresholds(masks: np.ndarray, labels: np.ndarray, coverage: float, recall: float = 0.995) -> tuple[Thresholds, dict]:
    """``masks``: N x H x W refined soft masks of validation images; ``labels``: N x P x P patch labels.

    Returns the thresholds and how they were chosen (for the checkpoint's metrics)."""
    grid = labels.shape[-1]
    known = labels != UNLABELLED
    truth = (labels == FOREGROUND) & known
    if not truth.any() or not (known & ~truth).any():
        return DEFAULT_THRESHOLDS, {"method": "default (validation labels hold no foreground or no background)"}
    scores = {}
    for t in TIGHT_CANDIDATES:
        pred = (patch_coverage(masks, t, grid) >= coverage - 1e-6) & known
        scores[float(t)] = (pred & truth).sum() / max(1, (pred | truth).sum())
    best = max(scores.values())
    tight = max(t for t, s in scores.items() if s >= best - 1e-9)
    loose, touched = float(LOOSE_CANDIDATES[0]), 0.0
    for t in LOOSE_CANDIDATES[::-1]:
        if t > tight:
            continue
        share = float((patch_coverage(masks, t, grid) > 0)[truth].mean())
        if share >= recall:
            loose, touched = float(t), share
            break
    report = {"method": "validation labels", "label_coverage": coverage, "patch_iou_at_tight": round(float(best), 5),
              "foreground_patches_touched_at_loose": round(touched, 5), "validation_images": int(len(masks))}
    return Thresholds(loose=loose, tight=float(tight)), report
