"""A Waterbirds-style dataset built at run time, offline, from real photographs that Python packages ship.

Objects cut from real photos are pasted onto real background photos, so the truth is known exactly: the pasted
alpha is the true mask and the background before pasting is the true clean background.

Classes (objects):                     Background families (one per class in training, all in test), crops of
- cup     scikit-image `coffee`         the parts of a colour photo that hold no object:
- flower  scikit-learn `flower.jpg`     - foliage  scikit-learn `flower.jpg` (the blurred leaves beside the flower)
- coin    scikit-image `coins`, 22      - night    scikit-image `rocket` (sky, launch towers, lights; no rocket)
          different coins (tinted)      - park     scikit-learn `china.jpg` (lake, trees and haze; no pagoda)
Distractors (variant ``distractors``: each family holds its own salient object, part of the background):
foliage: the cat's head of scikit-image `chelsea`; night: the pagoda of `china.jpg`; park: the rocket of `rocket`.

Sources and licences (from the packages' own docs): coffee (Rachel Michetti), chelsea (Stefan van der Walt): CC0;
coins: Brooklyn Museum, no known copyright restrictions; rocket: SpaceX, public domain; flower.jpg, china.jpg:
scikit-learn's sample images, CC BY 2.0 (Flickr). Cut-outs are made once with GrabCut from a fixed box (coins: Otsu
threshold, one component per coin); as the pasted alpha *is* the truth, the cut-outs only need to look like
objects, not to match their source photo's own boundary.

Objects are shown in a random tint (their photo's luminance times a random colour), as a bird's species is not
told by its colour alone: shape and texture tell the classes apart, while each background family has its own
colours. Without the tint, the objects' own colours separate the classes so easily that no condition, not even
a classifier trained on the original (fully spurious) images, leans on the background, and the benchmark
measures nothing.

Training is 100 % spurious (class i only on family i); test holds every class x family group.
Layout written (the folder contract of `autobackswap` and sample_data/):
OUT/train/<class>/<name>.jpg, OUT/test/..., OUT/masks/<split>/<class>/<name>.png (alpha x 255),
OUT/backgrounds/<split>/<class>/<name>.png (the true clean background), OUT/test_groups.csv.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("cup", "flower", "coin")
# family -> (photo, regions (x0, y0, x1, y1) of it that hold no object, tint of a grey photo or None)
TEXTURED_FAMILIES = {
    "grass": ("grass", ((0, 0, 512, 512),), (0.62, 0.95, 0.42)),
    "gravel": ("gravel", ((0, 0, 512, 512),), (1.05, 0.92, 0.72)),
    "brick": ("brick", ((0, 0, 512, 512),), (1.08, 0.66, 0.52)),
}
SMOOTH_FAMILIES = {
    "foliage": ("flower", ((0, 0, 160, 427), (450, 0, 640, 427)), None),
    "night": ("rocket", ((0, 0, 290, 427), (370, 0, 640, 427)), None),
    "park": ("china", ((385, 110, 640, 427),), None),
}
FINE_CLASSES = ("coins-a", "coins-b", "coins-c")  # every third of the 22 coins: told apart by detail only
# variant -> (families, one per class in training, in class order; whether each family holds a distractor; classes)
VARIANTS = {
    "plain": (TEXTURED_FAMILIES, False, CLASSES),
    "distractors": (TEXTURED_FAMILIES, True, CLASSES),
    "fine": (TEXTURED_FAMILIES, False, FINE_CLASSES),
    "smooth": (SMOOTH_FAMILIES, False, CLASSES),
}
DISTRACTOR_OF = {"grass": "cat", "gravel": "pagoda", "brick": "rocket", "foliage": "cat", "night": "pagoda", "park": "rocket"}


@dataclass(frozen=True)
class Cutout:
    rgb: np.ndarray  # h x w x 3 uint8, cropped to the object
    alpha: np.ndarray  # h x w float32 in [0, 1]


def _grabcut(image: np.ndarray, rect: tuple[int, int, int, int]) -> np.ndarray:
    """The largest GrabCut component inside ``rect``, small holes filled; uint8 0/1."""
    mask = np.zeros(image.shape[:2], np.uint8)
    bgd, fgd = np.zeros((1, 65)), np.zeros((1, 65))
    cv2.grabCut(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), mask, rect, bgd, fgd, 8, cv2.GC_INIT_WITH_RECT)
    fg = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
    return _largest_component_filled(fg)


def _largest_component_filled(fg: np.ndarray) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg)
    if n > 1:
        fg = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(1 - fg)
    h, w = fg.shape
    for k in range(1, n):
        x, y, bw, bh, area = stats[k]
        if x > 0 and y > 0 and x + bw < w and y + bh < h and area < 0.02 * fg.size:
            fg[labels == k] = 1
    return fg


def _cutout(image: np.ndarray, fg: np.ndarray) -> Cutout:
    alpha = cv2.GaussianBlur(fg.astype(np.float32), (0, 0), 1.0)  # a real edge is a pixel or two wide
    ys, xs = np.nonzero(alpha > 0.01)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return Cutout(np.ascontiguousarray(image[y0:y1, x0:x1]), np.ascontiguousarray(alpha[y0:y1, x0:x1]))


def _tint(gray: np.ndarray, colour: tuple[float, float, float]) -> np.ndarray:
    return np.clip(gray.astype(np.float32)[..., None] * np.asarray(colour, np.float32), 0, 255).astype(np.uint8)


@lru_cache(maxsize=1)
def library() -> dict[str, object]:
    """Cut-outs per class, one distractor per family, and each family's texture photo (cached)."""
    from skimage import data
    from sklearn.datasets import load_sample_image

    coffee, flower = data.coffee(), load_sample_image("flower.jpg")
    objects = {
        "cup": [_cutout(coffee, _grabcut(coffee, (60, 10, 500, 385)))],
        "flower": [_cutout(flower, _grabcut(flower, (160, 70, 310, 310)))],
        "coin": [],
    }
    coins = data.coins()
    binary = cv2.threshold(cv2.GaussianBlur(coins, (5, 5), 0), 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[1]
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary)
    for k in range(1, n):
        x, y, w, h, area = stats[k]
        if 800 <= area <= 12000 and 0.75 <= w / h <= 1.33 and area >= 0.6 * w * h:  # a round coin, not the lit edge
            fg = _largest_component_filled((labels == k).astype(np.uint8))
            metal = (1.0, 0.86, 0.62) if len(objects["coin"]) % 2 else (0.95, 0.97, 1.0)  # bronze / silver
            objects["coin"].append(_cutout(_tint(coins, metal), fg))
    rocket, chelsea, china = data.rocket(), data.chelsea(), load_sample_image("china.jpg")
    distractors = {
        "cat": _cutout(chelsea, _grabcut(chelsea, (40, 0, 400, 299))),
        "pagoda": _cutout(china, _grabcut(china, (85, 15, 290, 400))),
        "rocket": _cutout(rocket, _grabcut(rocket, (300, 60, 60, 360))),
    }
    for k, name in enumerate(FINE_CLASSES):
        objects[name] = objects["coin"][k::3]
    photos = {"flower": flower, "rocket": rocket, "china": china, "grass": data.grass(), "gravel": data.gravel(), "brick": data.brick()}
    return {"objects": objects, "distractors": distractors, "photos": photos}


def family_spec(family: str) -> tuple[str, tuple, tuple | None]:
    return {**TEXTURED_FAMILIES, **SMOOTH_FAMILIES}[family]


def background(family: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A random square crop of an object-free region of the family's photo, maybe mirrored, brightness-jittered."""
    photo_name, regions, tint = family_spec(family)
    photo = library()["photos"][photo_name]
    if tint is not None:
        photo = _tint(photo, tint)
    x0, y0, x1, y1 = regions[int(rng.integers(len(regions)))]
    side = int(rng.integers(min(96, x1 - x0, y1 - y0), min(200, x1 - x0, y1 - y0) + 1))
    y, x = int(rng.integers(y0, y1 - side + 1)), int(rng.integers(x0, x1 - side + 1))
    crop = photo[y : y + side, x : x + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop = cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_CUBIC)
    gain = rng.uniform(0.85, 1.15) * rng.uniform(0.95, 1.05, 3)
    return np.clip(crop.astype(np.float32) * gain.astype(np.float32), 0, 255).astype(np.uint8)


def _place(cut: Cutout, rng: np.random.Generator, size: int, side: tuple[float, float], max_angle: float,
           colour_jitter: float, random_tint: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The cut-out scaled so its longer side is ``side`` x size, rotated, flipped, colour-jittered and put at a
    random place fully inside a size x size frame: (rgb, alpha) at frame size."""
    rgb, alpha = cut.rgb.astype(np.float32), cut.alpha
    if rng.random() < 0.5:
        rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
    h, w = alpha.shape
    diag = float(np.hypot(h, w))
    pad_y, pad_x = int(np.ceil((diag - h) / 2)) + 2, int(np.ceil((diag - w) / 2)) + 2
    rgb = cv2.copyMakeBorder(np.ascontiguousarray(rgb), pad_y, pad_y, pad_x, pad_x, cv2.BORDER_REPLICATE)
    alpha = cv2.copyMakeBorder(np.ascontiguousarray(alpha), pad_y, pad_y, pad_x, pad_x, cv2.BORDER_CONSTANT, value=0)
    ph, pw = alpha.shape
    m = cv2.getRotationMatrix2D((pw / 2, ph / 2), float(rng.uniform(-max_angle, max_angle)), 1.0)
    rgb = cv2.warpAffine(rgb, m, (pw, ph), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(alpha, m, (pw, ph), flags=cv2.INTER_LINEAR)
    ys, xs = np.nonzero(alpha > 0.01)
    rgb, alpha = rgb[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1], alpha[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    scale = rng.uniform(*side) * size / max(alpha.shape)
    nh, nw = max(4, round(alpha.shape[0] * scale)), max(4, round(alpha.shape[1] * scale))
    rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(alpha, (nw, nh), interpolation=cv2.INTER_AREA)
    if random_tint:  # the object's luminance in a random colour: its colour says nothing of its class
        hue = rng.uniform(0, 2 * np.pi)
        tint = 1 + rng.uniform(0.15, 0.5) * np.cos(hue + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]))
        rgb = cv2.cvtColor(np.clip(rgb, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)[..., None] * tint
    gain = 1 + rng.uniform(-colour_jitter, colour_jitter, 3) + rng.uniform(-colour_jitter, colour_jitter)
    rgb = np.clip(rgb * gain, 0, 255)
    y, x = int(rng.integers(0, size - nh + 1)), int(rng.integers(0, size - nw + 1))
    frame_rgb, frame_alpha = np.zeros((size, size, 3), np.float32), np.zeros((size, size), np.float32)
    frame_rgb[y : y + nh, x : x + nw], frame_alpha[y : y + nh, x : x + nw] = rgb, alpha
    return frame_rgb, frame_alpha


def _paste(base: np.ndarray, rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return np.clip(alpha[..., None] * rgb + (1 - alpha[..., None]) * base.astype(np.float32) + 0.5, 0, 255).astype(np.uint8)


def make_example(cls: str, family: str, variant: str, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, true mask uint8, true clean background) for one class on one family."""
    lib = library()
    clean = background(family, rng, size)
    if VARIANTS[variant][1]:
        rgb, alpha = _place(lib["distractors"][DISTRACTOR_OF[family]], rng, size, (0.35, 0.55), 15, 0.08)
        clean = _paste(clean, rgb, alpha)
    choices = lib["objects"][cls]
    rgb, alpha = _place(choices[int(rng.integers(len(choices)))], rng, size, (0.35, 0.7), 180, 0.08, random_tint=True)
    image = _paste(clean, rgb, alpha)
    return image, np.clip(alpha * 255 + 0.5, 0, 255).astype(np.uint8), clean


def build(out: Path, variant: str = "plain", seed: int = 0, size: int = 128, train_per_class: int = 200,
          test_per_group: int = 30) -> Path:
    """Write the dataset under ``out`` (skipped when ``out/done`` says it was built with the same settings)."""
    out = Path(out)
    stamp = f"{variant} seed={seed} size={size} train={train_per_class} test={test_per_group}\n"
    if (out / "done").is_file() and (out / "done").read_text() == stamp:
        return out
    groups = []
    families, classes = tuple(VARIANTS[variant][0]), VARIANTS[variant][2]
    for split, pairs in (
        ("train", [(c, f, train_per_class) for c, f in zip(classes, families)]),
        ("test", [(c, f, test_per_group) for c in classes for f in families]),
    ):
        for cls, family, count in pairs:
            for d in ("", "masks/", "backgrounds/"):
                (out / f"{d}{split}" / cls).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                rng = np.random.default_rng([seed, list(VARIANTS).index(variant), 0 if split == "train" else 1,
                                             classes.index(cls), families.index(family), i])
                image, mask, clean = make_example(cls, family, variant, rng, size)
                name = f"{cls}_{family}_{i:04d}"
                cv2.imwrite(str(out / split / cls / f"{name}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 92])
                cv2.imwrite(str(out / "masks" / split / cls / f"{name}.png"), mask)
                cv2.imwrite(str(out / "backgrounds" / split / cls / f"{name}.png"), cv2.cvtColor(clean, cv2.COLOR_RGB2BGR))
                if split == "test":
                    groups.append((f"{cls}/{name}.jpg", cls, family))
    with open(out / "test_groups.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "class", "background"])
        writer.writerows(groups)
    (out / "done").write_text(stamp)
    return out


def build_variant(out: Path, variant: str, seed: int = 0) -> Path:
    """The data set of either family by variant name: these repeated-object ones, or the held-out-object ones of
    stamp_photo_data.py."""
    import stamp_photo_data  # it builds on this module's placement and pasting

    if variant in stamp_photo_data.VARIANTS:
        return stamp_photo_data.build(out, variant, seed)
    return build(out, variant, seed)


if __name__ == "__main__":
    import argparse

    import stamp_photo_data

    parser = argparse.ArgumentParser(description="Build a real-photo data set of the benchmark (to look at it).")
    parser.add_argument("out", type=Path)
    parser.add_argument("--variant", choices=[*stamp_photo_data.VARIANTS, *VARIANTS], default="plain")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(build_variant(args.out, args.variant, args.seed))
