"""A judge that can generalise to objects it never saw: a linear probe on frozen ImageNet features.

On the held-out-object variants a classifier trained from scratch on a few hundred composites does not recognise
a bird it never saw, even from true-mask composites, so its accuracy says nothing about the masks. This judge
does: EfficientNet-Lite0's ImageNet features (the trunk the default segmenter already installs, frozen), pooled
over the image, and a logistic regression (scikit-learn, the ``bench`` extra) fitted on the condition's training
images. Like any classifier it picks up a background shortcut where the training images offer one (the
originals), so its worst group still shows what the composites taught.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch

import photo_metrics
from autobackswap_cli.images import read_image, scan_image_folder
from autobackswap_cli.segmenter import efficientnet_lite

INPUT_SIDE = 224  # the side EfficientNet-Lite0 was trained at; the 128 px images are upsampled to it
PROBE_C = 0.5  # inverse L2 strength of the logistic regression (features standardised)


@lru_cache(maxsize=1)
def _trunk() -> torch.nn.Module:
    return efficientnet_lite.pretrained()


def image_features(images: list[np.ndarray], batch: int = 32) -> np.ndarray:
    """N x 432: the trunk's feature maps at strides 16 and 32, each averaged over the image."""
    net, rows = _trunk(), []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            chunk = [cv2.resize(im, (INPUT_SIDE, INPUT_SIDE), interpolation=cv2.INTER_LINEAR) for im in images[start : start + batch]]
            x = torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2).float() / 127.5 - 1
            maps = net(x)
            rows.append(torch.cat([m.mean((2, 3)) for m in maps.values()], 1).numpy())
    return np.concatenate(rows)


def _folder_features(folder: Path) -> tuple[np.ndarray, list[str]]:
    items = scan_image_folder(folder).items
    return image_features([read_image(item.path) for item in items]), [item.cls for item in items]


def probe_accuracy(train_folder: Path, data: Path) -> dict:
    """Fit the probe on ``train_folder`` (class folders) and score it on ``data``'s test split: worst-group and
    mean accuracy, and each group's (class @ background family)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _folder_features(Path(train_folder))
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=PROBE_C, max_iter=3000)).fit(x, y)
    rows = photo_metrics.test_groups(data)
    predicted = probe.predict(image_features([read_image(Path(data) / "test" / r["image"]) for r in rows]))
    return photo_metrics.group_accuracy(rows, list(predicted))
