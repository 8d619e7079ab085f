"""--refine grabcut: edges snapped to the image, and an object the model found is not cut away."""

import cv2
import numpy as np
import pytest

from autobackswap_cli.segmenter import refine

SIZE = 128
YELLOW, GREEN = np.array([230, 200, 40]), np.array([60, 150, 50])


def _iou(mask: np.ndarray, truth: np.ndarray) -> float:
    return float((mask & truth).sum() / (mask | truth).sum())


def _disc(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return (yy - SIZE // 2) ** 2 + (xx - SIZE // 2) ** 2 < radius**2


def _unsure_map(core: np.ndarray, around: np.ndarray, inside: float) -> np.ndarray:
    """A model's blurred map: ``inside`` on the object, 0.3 on a band around it, ~0 elsewhere."""
    soft = np.full((SIZE, SIZE), 0.02, np.float32)
    soft[around] = 0.3
    soft[core] = inside
    return cv2.GaussianBlur(soft, (0, 0), 2)


def test_grabcut_snaps_a_blurred_map_to_the_object_edge():
    rng = np.random.default_rng(0)
    truth = _disc(30)
    image = np.where(truth[..., None], YELLOW, GREEN).astype(np.float32)
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    soft = cv2.GaussianBlur(_disc(34).astype(np.float32), (0, 0), 6)  # too wide and blurred, as patches upsampled
    plain = _iou(soft >= 0.5, truth)
    snapped = _iou(refine.refine_mask(image, soft, "grabcut", SIZE / 16) >= 0.5, truth)
    assert snapped > 0.97 > plain


@pytest.fixture
def camouflaged():
    """A disc in the background's own colours (stripes the other way), which the model found at P 0.7 only."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    truth = _disc(30)
    image = np.where((((xx // 6) % 2) == 1)[..., None], YELLOW, GREEN).astype(np.float32)
    image[truth] = np.where((((yy // 6) % 2) == 1)[..., None], YELLOW, GREEN)[truth]
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    return image, _unsure_map(truth, _disc(40), 0.7), truth


def test_grabcut_keeps_an_unsure_object_in_the_backgrounds_colours(camouflaged, monkeypatch):
    image, soft, truth = camouflaged
    kept = refine.refine_mask(image, soft, "grabcut", SIZE / 16) >= 0.5
    assert _iou(kept, truth) > 0.85
    # GrabCut alone (never asked again) takes it for background: the whole object would be lost.
    monkeypatch.setattr(refine, "GRABCUT_KEEPS", 0.0)
    assert (refine.refine_mask(image, soft, "grabcut", SIZE / 16) >= 0.5).sum() < 0.05 * truth.sum()
