"""A small synthetic ImageFolder with a 100% spurious background, for demos and tests.

Classes are shapes (``disc``, ``triangle``, ``cross``) in random colours; each class
is shown in the training split only on its own background family (``water``,
``grass``, ``desert``), so no training image breaks the correlation. In the test
split every class appears on every family. Ground truth is written for every
image: the binary foreground mask and the clean background, plus patch labels (the
LABELS format) for a stratified subset of the training images.

Layout written under OUT::

    train/<class>/<name>.jpg            test/<class>/<name>.jpg
    masks/train/<class>/<name>.png      masks/test/<class>/<name>.png      (0 / 255)
    backgrounds/train/<class>/<name>.jpg backgrounds/test/<class>/<name>.jpg
    labels/<class>/<name>.png, labels/labels.json                      (P x P grids)
    test_groups.csv                     image,class,background
    README.md
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .images import write_bytes_atomic, write_image_atomic, write_mask_atomic

CLASSES = ("disc", "triangle", "cross")
FAMILIES = ("water", "grass", "desert")  # FAMILIES[i] is the training background of CLASSES[i]
SUPERSAMPLE = 4


@dataclass
class SampleSpec:
    seed: int = 0
    size: int = 128  # the shorter image side in pixels
    train_per_class: int = 60
    test_per_group: int = 10  # per (class, background family) pair
    labelled: int = 60  # training images that get patch labels
    grid: int = 16
    quality: int = 92


# --------------------------------------------------------------------------- backgrounds


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Value noise in [0, 1]: random values on a coarse grid, smoothly upsampled."""
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    coarse = Image.fromarray((rng.random((gh, gw)) * 255).astype(np.uint8))
    return np.asarray(coarse.resize((w, h), Image.BICUBIC), dtype=np.float32) / 255.0


def make_background(family: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A procedural background texture of one family, HxWx3 uint8."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    grain = rng.normal(0, 1, (h, w)).astype(np.float32)
    if family == "water":
        base = np.array([30, 90, 170], np.float32) + rng.uniform(-20, 20, 3)
        freq = rng.uniform(0.25, 0.45)
        phase = rng.uniform(0, 2 * math.pi)
        waves = np.sin(yy * freq + 3 * np.sin(xx * 0.05 + phase)) * 0.5 + 0.5
        depth = yy / h
        img = base[None, None] * (0.75 + 0.35 * depth[..., None]) + waves[..., None] * np.array([25, 35, 45], np.float32)
        img += _smooth_noise(rng, h, w, 24)[..., None] * 20 + grain[..., None] * 4
    elif family == "grass":
        base = np.array([55, 125, 45], np.float32) + rng.uniform(-15, 15, 3)
        blades = np.repeat(rng.random((1, w)).astype(np.float32), h, axis=0)
        blades = np.asarray(Image.fromarray((blades * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.7)), np.float32) / 255
        patches = _smooth_noise(rng, h, w, 20)
        img = base[None, None] * (0.7 + 0.5 * patches[..., None]) + (blades[..., None] - 0.5) * np.array([30, 50, 20], np.float32)
        img += grain[..., None] * 6
    elif family == "desert":
        base = np.array([205, 170, 115], np.float32) + rng.uniform(-15, 15, 3)
        freq = rng.uniform(0.04, 0.08)
        dunes = np.sin(yy * freq + np.sin(xx * 0.03 + rng.uniform(0, 6)) * 2.5) * 0.5 + 0.5
        img = base[None, None] * (0.8 + 0.25 * dunes[..., None]) + _smooth_noise(rng, h, w, 16)[..., None] * 15
        img += grain[..., None] * 5
    else:
        raise ValueError(f"unknown background family {family!r}")
    return np.clip(img, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- foregrounds


def _shape_polygon(cls: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]] | None:
    if cls == "disc":
        return None
    if cls == "triangle":
        pts = [(math.cos(angle + k * 2 * math.pi / 3), math.sin(angle + k * 2 * math.pi / 3)) for k in range(3)]
    elif cls == "cross":
        a = 0.36  # half width of an arm, relative to r
        unit = [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a), (-1, -a), (-a, -a)]
        c, s = math.cos(angle), math.sin(angle)
        pts = [(x * c - y * s, x * s + y * c) for x, y in unit]
    else:
        raise ValueError(f"unknown class {cls!r}")
    return [(cx + r * x, cy + r * y) for x, y in pts]


def make_foreground(cls: str, h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A shape of class ``cls`` at a random place: (RGB texture HxWx3 float, alpha HxW in [0, 1])."""
    r = rng.uniform(0.24, 0.34) * min(h, w)
    margin = r * 1.05
    cx = rng.uniform(margin, w - margin)
    cy = rng.uniform(margin, h - margin)
    angle = rng.uniform(0, 2 * math.pi)
    if cls == "disc":
        r *= 0.85
    big = Image.new("L", (w * SUPERSAMPLE, h * SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(big)
    poly = _shape_polygon(cls, cx * SUPERSAMPLE, cy * SUPERSAMPLE, r * SUPERSAMPLE, angle)
    if poly is None:
        rx, ry = r * SUPERSAMPLE, r * SUPERSAMPLE * rng.uniform(0.8, 1.0)
        cxs, cys = cx * SUPERSAMPLE, cy * SUPERSAMPLE
        draw.ellipse([cxs - rx, cys - ry, cxs + rx, cys + ry], fill=255)
    else:
        draw.polygon(poly, fill=255)
    alpha = np.asarray(big.resize((w, h), Image.BOX), dtype=np.float32) / 255.0

    # Colour: a saturated hue away from the backgrounds' blues, greens and sands.
    hue = rng.choice([0.0, 0.75, 0.83, 0.92, 0.14]) + rng.uniform(-0.03, 0.03)
    base = np.array(_hsv_to_rgb(hue % 1.0, rng.uniform(0.65, 0.95), rng.uniform(0.75, 1.0)), np.float32) * 255
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light = 1.0 - 0.35 * np.clip(np.hypot(xx - (cx - r / 3), yy - (cy - r / 3)) / (1.6 * r), 0, 1)
    spots = _smooth_noise(rng, h, w, 6)
    texture = base[None, None] * light[..., None] * (0.85 + 0.25 * spots[..., None])
    return np.clip(texture, 0, 255), alpha


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


# --------------------------------------------------------------------------- writing


def _image_hw(size: int, rng: np.random.Generator) -> tuple[int, int]:
    """Mostly square, some landscape and portrait images, so sizes vary like real data."""
    kind = rng.choice(3, p=[0.6, 0.25, 0.15])
    long = int(round(size * 1.25))
    return [(size, size), (size, long), (long, size)][kind]


def make_sample(cls: str, family: str, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, binary mask 0/255, clean background) for one sample."""
    h, w = _image_hw(size, rng)
    background = make_background(family, h, w, rng)
    texture, alpha = make_foreground(cls, h, w, rng)
    image = background.astype(np.float32) * (1 - alpha[..., None]) + texture * alpha[..., None]
    mask = np.where(alpha >= 0.5, 255, 0).astype(np.uint8)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask, background


def generate(out: Path | str, spec: SampleSpec = SampleSpec()) -> dict:
    """Write the sample dataset to ``out``; returns a summary (counts per split)."""
    from .formats.label_format import LabelsInfo, grid_from_mask, select_stratified, write_grid, write_labels_info

    out = Path(out)
    rng = np.random.default_rng(spec.seed)
    counts = {"train": 0, "test": 0}
    train_keys: list[str] = []
    train_masks: dict[str, np.ndarray] = {}

    def save(split: str, cls: str, name: str, image: np.ndarray, mask: np.ndarray, background: np.ndarray) -> None:
        write_image_atomic(out / split / cls / f"{name}.jpg", image, quality=spec.quality)
        write_mask_atomic(out / "masks" / split / cls / f"{name}.png", mask)
        write_image_atomic(out / "backgrounds" / split / cls / f"{name}.jpg", background, quality=spec.quality)
        counts[split] += 1

    for cls, family in zip(CLASSES, FAMILIES):
        for i in range(spec.train_per_class):
            name = f"{cls}_{i:04d}"
            image, mask, background = make_sample(cls, family, rng, spec.size)
            save("train", cls, name, image, mask, background)
            train_keys.append(f"{cls}/{name}")
            train_masks[f"{cls}/{name}"] = mask

    groups = io.StringIO()
    writer = csv.writer(groups, lineterminator="\n")
    writer.writerow(["image", "class", "background"])
    for cls in CLASSES:
        for family in FAMILIES:
            for i in range(spec.test_per_group):
                name = f"{cls}_{family}_{i:03d}"
                image, mask, background = make_sample(cls, family, rng, spec.size)
                save("test", cls, name, image, mask, background)
                writer.writerow([f"{cls}/{name}.jpg", cls, family])
    write_bytes_atomic(out / "test_groups.csv", groups.getvalue().encode())

    chosen = select_stratified(train_keys, min(spec.labelled, len(train_keys)), seed=spec.seed)
    for key in chosen:
        write_grid(out / "labels" / f"{key}.png", grid_from_mask(train_masks[key] / 255.0, spec.grid, threshold=0.25))
    write_labels_info(
        out / "labels",
        LabelsInfo(grid=spec.grid, source="sample-data ground-truth masks", method="from-masks", threshold=0.25, count=len(chosen)),
    )
    summary = {
        "seed": spec.seed,
        "size": spec.size,
        "classes": list(CLASSES),
        "train_backgrounds": dict(zip(CLASSES, FAMILIES)),
        "train_images": counts["train"],
        "test_images": counts["test"],
        "labelled_images": len(chosen),
        "grid": spec.grid,
    }
    write_bytes_atomic(out / "README.md", _readme(summary).encode())
    return summary


def _readme(summary: dict) -> str:
    pairs = ", ".join(f"{c} on {f}" for c, f in summary["train_backgrounds"].items())
    return f"""# autobackswap sample data

Synthetic, deterministic (seed {summary['seed']}), made by `autobackswap sample-data OUT --seed {summary['seed']} --size {summary['size']}`.

* `train/` — {summary['train_images']} images. Every class is shown only on its own background family
  ({pairs}): the background predicts the class perfectly, the spurious shortcut.
* `test/` — {summary['test_images']} images: every class on every background family; `test_groups.csv` names
  each image's class and background group.
* `masks/<split>/...png` — ground-truth foreground masks (255 foreground, 0 background).
* `backgrounds/<split>/...jpg` — the clean background of every image, before the shape was drawn.
* `labels/` — patch labels ({summary['grid']}x{summary['grid']} grids, the LABELS format) for
  {summary['labelled_images']} training images, stratified over classes.
"""
