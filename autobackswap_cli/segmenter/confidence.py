"""How likely a mask is right: a confidence in [0, 1] for every mask ``segment`` writes (MASKS/mask_quality.csv).

Built from what the model itself shows about one image, no label needed (``mask_features``): how much of its map is
unsure (P between 0.1 and 0.9) compared to what it found, whether the edge refinement kept what the
model found, whether its mask agrees with the salient-object map it started from (U^2-Net-p's), and whether it
had to look again because its first look found almost nothing. A logistic model (``WEIGHTS``) turns them into the
estimated probability that the mask keeps its object (IoU >= 0.5 with the truth). Its weights were fitted on the
real-photo benchmark's tuning sets (``benchmarks/real_photos.py --data-seed 1``: held-out objects with and without
distractors, repeated objects), never on the sets the benchmark reports; docs/decisions.md has the figures.
"""

from __future__ import annotations

import math

import numpy as np

# feature -> weight of the logistic model, and its bias (see the module's docstring)
WEIGHTS = {"log_unsure": -2.59, "refined_kept": 0.82, "saliency_agreement": 2.18, "looked_again": -1.29}
BIAS = 3.27
# a model without a salient-object map (the patch backbones) is scored as if its mask agreed with one this much
NO_SALIENCY_AGREEMENT = 0.75


def mask_features(probs: np.ndarray, coarse: np.ndarray, refined: np.ndarray, looked_again: bool,
                  saliency: np.ndarray | None = None) -> dict[str, float]:
    """What the confidence is computed from: ``probs`` the model's foreground probabilities (P x P, or pixels at
    its input size), ``coarse`` them upsampled to the image and ``refined`` the mask written (both full size, in
    [0, 1]), ``looked_again`` whether the model looked at the image again (its first look found almost nothing),
    ``saliency`` the salient-object map the model started from, at ``probs``' size (None: it has none)."""
    fg = probs >= 0.5
    area = float(fg.mean())
    unsure = float(((probs > 0.1) & (probs < 0.9)).mean())
    return {
        "log_unsure": math.log1p(unsure / max(area, 1e-3)),
        "refined_kept": _iou(coarse >= 0.5, refined >= 0.5),
        "saliency_agreement": _iou(fg, saliency >= 0.5) if saliency is not None else NO_SALIENCY_AGREEMENT,
        "looked_again": float(looked_again),
    }


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks (1 when both are empty)."""
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 1.0


def mask_confidence(probs: np.ndarray, coarse: np.ndarray, refined: np.ndarray, looked_again: bool,
                    saliency: np.ndarray | None = None) -> float:
    """The estimated probability that the mask is right (keeps its object: IoU >= 0.5), in [0, 1]; 0 for a mask
    with no foreground at all. Arguments as ``mask_features``'."""
    if not (refined >= 0.5).any():
        return 0.0
    features = mask_features(probs, coarse, refined, looked_again, saliency)
    z = BIAS + sum(WEIGHTS[name] * value for name, value in features.items())
    return float(1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z)))))
