"""The quality figures of the real-photo benchmark, one function each, shared by the benchmark scripts.

All take uint8 RGB images (H x W x 3) and boolean or [0, 1] float masks of the same size.

- ``mask_iou``: IoU of a predicted soft mask and the true one, both cut at 0.5.
- ``halo``: the share of what a composite pastes (the alpha) that is background in the truth: the ring of the
  image's own background that travels with the foreground into every composite.
- ``hole_psnr``: PSNR of a fill against the true clean background, over the hole's pixels only.
- ``texture_energies``: fine-texture energy of a fill inside the hole and of the true background there. Their
  ratio (summed over a data set, so that smooth backgrounds such as a clear sky do not divide by ~0) is the
  texture ratio: a smooth blob scores ~0.1; a fill that continues the texture scores ~1. The hole's outer 2 px
  are left out, so a seam at the hole's edge does not count as texture.
- ``group_accuracy``: worst-group and mean accuracy of predicted classes over the test split's groups.
"""

from __future__ import annotations

import cv2
import numpy as np

FINE_SIGMA = 1.0  # the scale of "fine" texture: what a Gaussian of this sigma removes


def mask_iou(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> float:
    p, t = pred >= threshold, truth >= threshold
    union = np.logical_or(p, t).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, t).sum() / union)


def object_lost(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> float:
    """The share of the true object that the mask leaves out (1.0: the object is missed entirely)."""
    t = truth >= threshold
    return 0.0 if not t.any() else float((t & (pred < threshold)).sum() / t.sum())


def misses(ious: list[float], lost: list[float], found: list[float]) -> dict:
    """Where a mean IoU goes: the images that keep less than half of their object (how many, and the share of the
    mean IoU they cost), the masks with (almost) no foreground at all, and the mean IoU of the other images.
    ``lost``: ``object_lost`` per image; ``found``: the mask's foreground share per image."""
    missed = [iou for iou, share in zip(ious, lost) if share > 0.5]
    rest = [iou for iou, share in zip(ious, lost) if share <= 0.5]
    return {"images": len(missed), "of": len(ious), "iou_cost": float(sum(1 - iou for iou in missed) / max(1, len(ious))),
            "empty": sum(share < 0.005 for share in found), "iou_where_found": float(np.mean(rest)) if rest else None}


def halo(alpha: np.ndarray, truth: np.ndarray) -> float:
    """Alpha-weighted share of the cut-out lying on true background (truth < 0.5)."""
    total = float(alpha.sum())
    return 0.0 if total <= 0 else float((alpha * (truth < 0.5)).sum() / total)


def hole_psnr(filled: np.ndarray, true_background: np.ndarray, hole: np.ndarray) -> float | None:
    if not hole.any():
        return None
    diff = filled[hole].astype(np.float64) - true_background[hole].astype(np.float64)
    mse = float((diff**2).mean())
    return 99.0 if mse <= 1e-10 else 10 * np.log10(255.0**2 / mse)


def fine_texture(image: np.ndarray) -> np.ndarray:
    """Per-pixel fine-texture energy: the squared difference of luma and its Gaussian blur."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    detail = gray - cv2.GaussianBlur(gray, (0, 0), FINE_SIGMA)
    return detail * detail


def texture_energies(filled: np.ndarray, true_background: np.ndarray, hole: np.ndarray) -> tuple[float, float] | None:
    """(fill's, truth's) mean fine-texture energy inside the hole less its outer 2 px; None for a tiny hole."""
    inner = cv2.erode(hole.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    if inner.sum() < 16:
        return None
    return float(fine_texture(filled)[inner].mean()), float(fine_texture(true_background)[inner].mean())


def texture_ratio(filled: np.ndarray, true_background: np.ndarray, hole: np.ndarray) -> float | None:
    """One image's texture ratio (for a data set, sum the energies first: see ``texture_energies``)."""
    energies = texture_energies(filled, true_background, hole)
    return None if energies is None or energies[1] <= 1e-6 else energies[0] / energies[1]


def test_groups(data) -> list[dict]:
    """The rows of a data set's ``test_groups.csv``: image (under test/), class, background."""
    import csv
    from pathlib import Path

    with open(Path(data) / "test_groups.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def group_accuracy(rows: list[dict], predicted: list[str]) -> dict:
    """Worst-group and mean accuracy, and each group's, of ``predicted`` classes for the rows of a data set's
    ``test_groups.csv`` (a group is class @ background family)."""
    hits: dict[str, list[bool]] = {}
    for r, p in zip(rows, predicted):
        hits.setdefault(f"{r['class']}@{r['background']}", []).append(p == r["class"])
    per_group = {g: float(np.mean(v)) for g, v in hits.items()}
    return {"worst_group": min(per_group.values()), "mean": float(np.mean([h for v in hits.values() for h in v])), "groups": per_group}


def auroc(scores: list[float], positive: list[bool]) -> float | None:
    """The area under the ROC curve of ``scores`` for telling the ``positive`` cases from the others (higher score
    = more likely positive; ties count half): the chance that a random positive outscores a random negative.
    None when either side is empty."""
    s, y = np.asarray(scores, np.float64), np.asarray(positive, bool)
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return None
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def failure_filter(ious: list[float], confidences: list[float], threshold: float, failed_below: float = 0.5) -> dict:
    """How a confidence threshold sorts masks: the share of images it leaves out (confidence < ``threshold``), the
    share of the failed masks (IoU < ``failed_below``) among them, and the AUROC of the confidence for telling
    failed masks from the rest (the failed ones are the positives of ``1 - confidence``)."""
    failed = [iou < failed_below for iou in ious]
    out = [c < threshold for c in confidences]
    caught = sum(f and o for f, o in zip(failed, out))
    return {"images": len(ious), "failed": sum(failed), "left_out": sum(out), "left_out_share": sum(out) / max(1, len(ious)),
            "failed_caught": caught, "failed_caught_share": caught / sum(failed) if any(failed) else None,
            "auroc": auroc([1 - c for c in confidences], failed), "threshold": threshold}
