"""The held-out-instance variants of the real-photo benchmark: many different objects per class, and the objects
of the test and of the unlabelled training images never seen in a label.

Objects are real photographs with an alpha channel from Debian's ``tuxpaint-stamps-default`` (see
debian_photos.py), pasted onto crops of real wallpaper photos from ``mate-backgrounds``; the pasted alpha is the
true mask and the crop before pasting the true clean background.

Classes (each a set of different objects):      Background families (one per class in training, all in test):
- bird     35 species (legs, beaks, wings)       - meadow   grass and leaves (GreenMeadow, Blinds, RainDrops)
- mammal   37 (bovines, rodents, others)         - shore    dune, water, storm sky (Dune, Aqua, Storm)
- produce  44 fruit and vegetables               - blossom  orange and yellow flowers (FreshFlower, Garden, YellowFlower)

Each class's objects are split once (seeded) into three disjoint thirds: the *labelled* objects (the only ones
the 150 labelled training images show), the *unlabelled* objects (the other training images: the mask figures
are measured there) and the *test* objects (the test split). Objects keep their own colours; scale (0.3-0.8 of
the frame), position, mirroring and a small rotation vary per image.

Variant ``instances-distractors``: every background also holds a salient object of its own that belongs to the
background (meadow: insects, shore: fish, blossom: flowers, all tuxpaint photos too), which a zero-label
salient-object model cuts out and the labels must teach the segmenter to leave.

Layout written (as real_photo_data.py, plus the labelled masks and the object of each image):
OUT/train/<class>/<name>.jpg, OUT/test/..., OUT/masks/<split>/..., OUT/masks/labelled/<class>/<name>.png (the
labelled images only: import these), OUT/backgrounds/<split>/..., OUT/test_groups.csv, OUT/objects.csv.
To look at one: ``python benchmarks/real_photo_data.py OUT --variant instances``.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

import debian_photos
from real_photo_data import Cutout, _paste, _place

CLASSES = ("bird", "mammal", "produce")
OBJECT_FOLDERS = {
    "bird": ("animals/birds",),
    "mammal": ("animals/mammals", "animals/mammals/bovines", "animals/mammals/rodents"),
    "produce": ("food/fruit", "food/vegetables"),
}
FAMILIES = {
    "meadow": ("GreenMeadow.jpg", "Blinds.jpg", "RainDrops.jpg"),
    "shore": ("Dune.jpg", "Aqua.jpg", "Storm.jpg"),
    "blossom": ("FreshFlower.jpg", "Garden.jpg", "YellowFlower.jpg"),
}
DISTRACTOR_FOLDERS = {"meadow": "animals/insects", "shore": "animals/fish", "blossom": "plants/flowers"}
VARIANTS = {"instances": False, "instances-distractors": True}
ROLES = ("labelled", "unlabelled", "test")
LABELLED_PER_CLASS, UNLABELLED_PER_CLASS, TEST_PER_GROUP = 50, 150, 60  # 60 a group: the worst of 9 groups is read to ~0.06
WALLPAPER_SIDE = 720  # wallpapers are kept at this longer side (crops are 128 px anyway)


def _read_stamp(path: Path) -> Cutout:
    rgba = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if rgba.ndim == 2 or rgba.shape[2] == 2:  # grey (+ alpha)
        grey = rgba if rgba.ndim == 2 else rgba[..., 0]
        alpha = np.full(grey.shape, 255, np.uint8) if rgba.ndim == 2 else rgba[..., 1]
        rgb = np.repeat(grey[..., None], 3, axis=2)
    else:
        rgb, alpha = cv2.cvtColor(rgba[..., :3], cv2.COLOR_BGR2RGB), rgba[..., 3]
    ys, xs = np.nonzero(alpha > 3)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return Cutout(np.ascontiguousarray(rgb[y0:y1, x0:x1]), np.ascontiguousarray(alpha[y0:y1, x0:x1]).astype(np.float32) / 255)


@lru_cache(maxsize=1)
def library(seed: int = 0) -> dict:
    """Objects per class split into roles, distractors per family, and the wallpapers (cached)."""
    stamps = debian_photos.stamps_dir()
    rng = np.random.default_rng([seed, 7])
    objects: dict[str, dict[str, list[tuple[str, Cutout]]]] = {}
    for cls in CLASSES:
        paths = sorted(p for folder in OBJECT_FOLDERS[cls] for p in (stamps / folder).glob("*.png"))
        order = rng.permutation(len(paths))
        thirds = np.array_split(order, 3)
        objects[cls] = {role: [(paths[i].stem, _read_stamp(paths[i])) for i in sorted(part)] for role, part in zip(ROLES, thirds)}
    distractors = {family: [_read_stamp(p) for p in sorted((stamps / folder).glob("*.png"))] for family, folder in DISTRACTOR_FOLDERS.items()}
    walls = debian_photos.wallpapers_dir()
    photos = {}
    for family, files in FAMILIES.items():
        photos[family] = []
        for name in files:
            image = cv2.cvtColor(cv2.imread(str(walls / name)), cv2.COLOR_BGR2RGB)
            scale = WALLPAPER_SIDE / max(image.shape[:2])
            photos[family].append(cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
    return {"objects": objects, "distractors": distractors, "photos": photos}


def background(lib: dict, family: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A random square crop of one of the family's wallpapers, maybe mirrored, brightness-jittered."""
    photos = lib["photos"][family]
    photo = photos[int(rng.integers(len(photos)))]
    h, w = photo.shape[:2]
    side = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = photo[y : y + side, x : x + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop = cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_AREA)
    gain = rng.uniform(0.9, 1.1) * rng.uniform(0.96, 1.04, 3)
    return np.clip(crop.astype(np.float32) * gain.astype(np.float32), 0, 255).astype(np.uint8)


def make_example(lib: dict, cls: str, family: str, role: str, distractors: bool, rng: np.random.Generator, size: int):
    """(image, true mask uint8, true clean background, object name) for one object of ``role`` on ``family``, from
    ``library(seed)``'s split of the objects."""
    clean = background(lib, family, rng, size)
    if distractors:
        pool = lib["distractors"][family]
        rgb, alpha = _place(pool[int(rng.integers(len(pool)))], rng, size, (0.25, 0.45), 15, 0.05)
        clean = _paste(clean, rgb, alpha)
    pool = lib["objects"][cls][role]
    name, cut = pool[int(rng.integers(len(pool)))]
    rgb, alpha = _place(cut, rng, size, (0.3, 0.8), 15, 0.06)
    image = _paste(clean, rgb, alpha)
    return image, np.clip(alpha * 255 + 0.5, 0, 255).astype(np.uint8), clean, name


def build(out: Path, variant: str = "instances", seed: int = 0, size: int = 128) -> Path:
    """Write the data set under ``out`` (skipped when ``out/done`` says it was built with the same settings)."""
    out = Path(out)
    stamp = f"{variant} seed={seed} roles=seeded size={size} labelled={LABELLED_PER_CLASS} unlabelled={UNLABELLED_PER_CLASS} test={TEST_PER_GROUP}\n"
    if (out / "done").is_file() and (out / "done").read_text() == stamp:
        return out
    distractors, families = VARIANTS[variant], tuple(FAMILIES)
    lib = library(seed)  # the seed splits the objects into roles too: another seed, other objects in each role
    jobs = []  # (split, role, class, family, count)
    for cls, family in zip(CLASSES, families):
        jobs += [("train", "labelled", cls, family, LABELLED_PER_CLASS), ("train", "unlabelled", cls, family, UNLABELLED_PER_CLASS)]
    jobs += [("test", "test", cls, family, TEST_PER_GROUP) for cls in CLASSES for family in families]
    groups, objects = [], []
    for split, role, cls, family, count in jobs:
        folders = ["", "masks/", "backgrounds/"] + (["masks/labelled/"] if role == "labelled" else [])
        for d in folders:
            (out / (d if d == "masks/labelled/" else f"{d}{split}/")).joinpath(cls).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rng = np.random.default_rng([seed, list(VARIANTS).index(variant), ROLES.index(role), CLASSES.index(cls), families.index(family), i])
            image, mask, clean, name = make_example(lib, cls, family, role, distractors, rng, size)
            stem = f"{cls}_{family}_{role[0]}{i:04d}"
            cv2.imwrite(str(out / split / cls / f"{stem}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
            cv2.imwrite(str(out / "masks" / split / cls / f"{stem}.png"), mask)
            if role == "labelled":
                cv2.imwrite(str(out / "masks/labelled" / cls / f"{stem}.png"), mask)
            cv2.imwrite(str(out / "backgrounds" / split / cls / f"{stem}.png"), cv2.cvtColor(clean, cv2.COLOR_RGB2BGR))
            objects.append((f"{split}/{cls}/{stem}.jpg", cls, role, name))
            if split == "test":
                groups.append((f"{cls}/{stem}.jpg", cls, family))
    for path, header, rows in ((out / "test_groups.csv", ["image", "class", "background"], groups),
                               (out / "objects.csv", ["image", "class", "role", "object"], objects)):
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
    (out / "done").write_text(stamp)
    return out

