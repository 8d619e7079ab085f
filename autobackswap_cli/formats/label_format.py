"""The LABELS format: what ``label`` writes and the segmenter's trainer, the labelling page and the exporter read.

LABELS/<class>/<name>.png is a P x P uint8 grid: 255 foreground, 0 background,
128 not labelled. Grid cell (i, j) covers rows i*H/P .. (i+1)*H/P and columns
j*W/P .. (j+1)*W/P of the (EXIF-rotated) image, whatever its aspect ratio.
LABELS/labels.json records the grid size and how the labels were made. The reference
implementation's ``masks.csv`` holds a grid as a P*P string of '0'/'1', row-major.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

import cv2
import numpy as np
from PIL import Image

from ..images import ImageError, ImageItem, write_bytes_atomic, write_mask_atomic

FOREGROUND, BACKGROUND, UNLABELLED = 255, 0, 128
LABELS_INFO = "labels.json"
DEFAULT_GRID = 16


@dataclass
class LabelsInfo:
    """LABELS/labels.json: the grid size P and how the labels were made."""

    grid: int = DEFAULT_GRID
    source: str = ""
    method: str = ""
    threshold: float | None = None
    count: int = 0
    extra: dict = field(default_factory=dict)


def write_labels_info(labels_dir: Path, info: LabelsInfo) -> None:
    """Write LABELS/labels.json atomically."""
    write_bytes_atomic(Path(labels_dir) / LABELS_INFO, (json.dumps(asdict(info), indent=2) + "\n").encode())


def read_labels_info(labels_dir: Path) -> LabelsInfo:
    """LABELS/labels.json (its known fields), or the defaults when there is none."""
    path = Path(labels_dir) / LABELS_INFO
    if not path.exists():
        return LabelsInfo()
    data = json.loads(path.read_text())
    known = {k: data[k] for k in LabelsInfo.__dataclass_fields__ if k in data}
    return LabelsInfo(**known)


# --------------------------------------------------------------------------- grids


def grid_from_mask(mask: np.ndarray, grid: int, threshold: float = 0.25) -> np.ndarray:
    """Pixel mask in [0, 1] -> P x P grid (255 where the patch's mean >= threshold, else 0)."""
    fraction = cv2.resize(np.asarray(mask, np.float32), (grid, grid), interpolation=cv2.INTER_AREA)
    return np.where(fraction >= threshold - 1e-6, FOREGROUND, BACKGROUND).astype(np.uint8)


def write_grid(path: Path, grid: np.ndarray) -> None:
    """Write a P x P label grid as a PNG, atomically."""
    write_mask_atomic(path, np.asarray(grid, np.uint8))


def read_grid(path: Path, grid: int | None = None) -> np.ndarray:
    """Read a label grid; values other than 0/255 count as not labelled (128). Its size is checked from the header,
    before decoding; an unreadable grid is an ``ImageError`` naming the file."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            if w != h or (grid is not None and w != grid) or w > 1024:
                want = f"{grid}x{grid}" if grid else "square, at most 1024"
                raise ImageError(f"label grid {Path(path).name} is {w}x{h}, expected {want}")
            arr = np.asarray(img.convert("L"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"unreadable label grid {Path(path).name}: {exc}") from exc
    out = np.full(arr.shape, UNLABELLED, np.uint8)
    out[arr >= 192] = FOREGROUND
    out[arr <= 63] = BACKGROUND
    return out


def grid_to_string(grid: np.ndarray) -> str:
    """Reference format: row-major '1' foreground / '0' background (unlabelled -> '0')."""
    return "".join("1" if v == FOREGROUND else "0" for v in np.asarray(grid).ravel())


def grid_from_string(text: str, grid: int | None = None) -> np.ndarray:
    """Reference format -> grid (P from the string's length unless ``grid``); a malformed string is a ``ValueError``."""
    text = text.strip()
    p = grid or int(round(math.sqrt(len(text))))
    if p * p != len(text):
        raise ValueError(f"mask string has {len(text)} characters, not {p}x{p}")
    if set(text) - {"0", "1"}:
        raise ValueError("mask string may only hold '0' and '1'")
    return np.frombuffer(text.encode(), np.uint8).reshape(p, p).copy().__eq__(ord("1")).astype(np.uint8) * FOREGROUND


def label_path(labels_dir: Path, item: ImageItem | str) -> Path:
    """Where an item's (or a relative path's) grid lies in LABELS: its key, as a PNG."""
    key = item.key if isinstance(item, ImageItem) else str(PurePosixPath(item).with_suffix(""))
    return Path(labels_dir) / f"{key}.png"


def labelled_items(labels_dir: Path, items: Sequence[ImageItem]) -> list[ImageItem]:
    """The items of DATA that have a grid in LABELS."""
    return [it for it in items if label_path(labels_dir, it).exists()]


def select_stratified(keys: Sequence[str], count: int, seed: int = 0, class_of: Callable[[str], str] | None = None) -> list[str]:
    """Choose ``count`` keys spread evenly over classes, reproducibly; a key's class is ``class_of(key)`` (default:
    its first folder, 'class/...')."""
    by_class: dict[str, list[str]] = {}
    for key in sorted(keys):
        by_class.setdefault(class_of(key) if class_of else str(key).split("/")[0], []).append(key)
    rng = random.Random(seed)
    for members in by_class.values():
        rng.shuffle(members)
    chosen: list[str] = []
    queues = [by_class[c] for c in sorted(by_class)]
    while len(chosen) < count and any(queues):
        for q in queues:
            if q and len(chosen) < count:
                chosen.append(q.pop())
    return sorted(chosen)


def select_uncertain(keys: Sequence[str], count: int, confidence: dict[str, float], labelled: set[str],
                     class_of: Callable[[str], str] | None = None) -> list[str]:
    """``label --pick uncertain``: the keys already ``labelled`` (they stay), then the least confident of the others
    (``confidence``: key -> its mask's confidence; a key without one is not picked), taken class by class in turn so
    every class gets its share of the new labels, until ``count`` keys are chosen. Returns the new picks, least
    confident first."""
    by_class: dict[str, list[str]] = {}
    for key in keys:
        if key not in labelled and key in confidence:
            by_class.setdefault(class_of(key) if class_of else str(key).split("/")[0], []).append(key)
    queues = [sorted(by_class[c], key=lambda k: (confidence[k], k), reverse=True) for c in sorted(by_class)]
    wanted = count - sum(1 for key in keys if key in labelled)
    picked: list[str] = []
    while len(picked) < wanted and any(queues):
        for queue in queues:
            if queue and len(picked) < wanted:
                picked.append(queue.pop())
    return sorted(picked, key=lambda k: (confidence[k], k))
