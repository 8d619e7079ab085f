"""``compose``: foregrounds onto backgrounds of other images and classes; ``BackSwapDataset`` does it on the fly.

For every foreground image, ``per_image`` composites are written to
``OUT/<class>/<name>__<bg-class>__<bg-name>.<ext>``. The foreground's alpha is its
*tight* mask (P(fg) >= ``tight``) with a feathered edge; it stays where it was in
its image unless jitter (scale, rotation, shift) is asked for, and always inside
the frame. Backgrounds are scaled to cover the foreground image's size, keeping
their aspect ratio, and centre-cropped. Every random choice comes from a generator
seeded by (seed, image path, composite index), so results do not depend on
workers, shards or order, and reruns are byte-identical. An image whose tight mask holds
no foreground is left out (``NoForeground``: counted and listed in the run record, not a
failure); ``BackSwapDataset`` gives such an image back as it is.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import cv2
import numpy as np

from ..choices import BackgroundsFrom
from ..engine import DatasetLayout, NoForeground, RunReport, Step, StepError, active_layout, console, mask_threshold, scan_dataset
from ..manifest import Journal, ManifestSpool
from ..tarshards import Sample, TarSpool, describe_tar, read_index, sample_key, write_index
from ..images import TEXT, FolderListing, ImageError, ImageItem, bounding_box, path_key, encode_image, mirror_path, preview_grid, read_image, read_mask, spread_sample, write_bytes_atomic, write_image_atomic

BG_MODES = BackgroundsFrom.values()
VARIANTS = ("swap", "only-fg", "only-bg")
DEFAULT_FEATHER = 2.0  # edge softness in pixels (Gaussian sigma = feather / 2)
MANIFEST_FIELDS = ["output", "foreground", "background", "foreground_class", "background_class", "scale", "angle", "shift_x", "shift_y", "seed",
                   "foreground_group", "background_group"]


@dataclass
class ComposeOptions:
    per_image: int = 1
    bg_from: str = "any"
    variant: str = "swap"
    tight: float | None = None  # alpha = P(fg) >= tight, then feathered; None: what MASKS' segmenter chose, else 0.5
    feather: float = DEFAULT_FEATHER
    scale: tuple[float, float] = (1.0, 1.0)
    rotate: float = 0.0  # degrees, uniform in [-rotate, rotate]
    translate: int = 0  # pixels, uniform in [-translate, translate] on each axis
    fill: tuple[int, int, int] = (0, 0, 0)  # only-fg: the flat fill colour
    include_originals: bool = False
    out_format: str = "same"
    quality: int = 95
    seed: int = 0
    layout: str = "imagefolder"  # or "webdataset": tar shards of ``shard_size`` samples (see tarshards)
    shard_size: int = 1000

    def check(self) -> None:
        if self.bg_from not in BG_MODES:
            raise StepError(f"--bg-from must be one of {', '.join(BG_MODES)}; got {self.bg_from!r}")
        if self.variant not in VARIANTS:
            raise StepError(f"variant must be one of {', '.join(VARIANTS)}")
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise StepError(f"--scale a,b needs 0 < a <= b; got {lo},{hi}")
        if self.per_image < 1:
            raise StepError("--per-image must be at least 1")
        if self.layout not in ("imagefolder", "webdataset"):
            raise StepError(f"--output-format must be imagefolder or webdataset; got {self.layout!r}")
        if self.layout == "webdataset" and self.include_originals:
            raise StepError("--include-originals is for ImageFolder output; a WebDataset loader can read DATA beside the tars")
        if self.shard_size < 1:
            raise StepError("--shard-size must be at least 1")


@dataclass(frozen=True)
class Placement:
    scale: float = 1.0
    angle: float = 0.0
    shift_x: float = 0.0
    shift_y: float = 0.0


# --------------------------------------------------------------------------- choosing


def key_digest(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()[:8], "little")


def item_rng(seed: int, key: str, index: int, epoch: int = 0, digest: int | None = None) -> np.random.Generator:
    """A generator that depends only on (seed, image key, composite index, epoch); ``digest`` is
    ``key_digest(key)`` when the caller has it already."""
    return np.random.default_rng([seed, key_digest(key) if digest is None else digest, index, epoch])


class BackgroundPool:
    """The backgrounds on disk, by class, and the rule to pick one for a foreground.

    Choosing is O(1) in the number of backgrounds (an index per class), so composing
    a large dataset stays linear. A background's class (and group) follows the data layout (``layout``, default
    the active one), as its image's does: BACKGROUNDS mirror DATA.
    """

    def __init__(self, backgrounds_dir: Path, layout: DatasetLayout | None = None):
        self.root = Path(backgrounds_dir)
        if not self.root.is_dir():
            raise StepError(f"backgrounds folder not found: {self.root}")
        scan, _ = scan_dataset(self.root, layout, what="BACKGROUNDS")
        self.by_class: dict[str, list[str]] = {}
        self._index: dict[str, tuple[str, int, str | None]] = {}  # image key -> (class, position in by_class[class], group)
        for it in scan.items:
            members = self.by_class.setdefault(it.cls, [])
            self._index[it.key] = (it.cls, len(members), it.group)
            members.append(str(it.rel))
        self.classes = sorted(self.by_class)
        if not self.classes:
            raise StepError(f"no backgrounds found in {self.root} (run `autobackswap inpaint` first)")
        self._candidates: dict[tuple[str, str], list[str]] = {}

    def candidate_classes(self, fg_class: str, mode: str) -> list[str]:
        key = (fg_class, mode)
        if key not in self._candidates:
            self._candidates[key] = self._candidate_classes(fg_class, mode)
        return self._candidates[key]

    def _candidate_classes(self, fg_class: str, mode: str) -> list[str]:
        if mode == "any":
            return self.classes
        if mode == "same-class":
            return [fg_class] if fg_class in self.by_class else []
        if mode == "other-class":
            return [c for c in self.classes if c != fg_class]
        # next-class: the class after the foreground's, in sorted order, wrapping around
        ordered = sorted(set(self.classes) | {fg_class})
        nxt = ordered[(ordered.index(fg_class) + 1) % len(ordered)]
        return [nxt] if nxt != fg_class and nxt in self.by_class else []

    def describe(self, rel: str) -> tuple[str, str | None]:
        """(class, group) of the background ``rel``."""
        cls, _, group = self._index[path_key(rel)]
        return cls, group

    def own(self, key: str) -> str | None:
        """The background made from the image with this key, if there is one."""
        found = self._index.get(key)
        return self.by_class[found[0]][found[1]] if found else None

    def choose(self, item: ImageItem, rng: np.random.Generator, mode: str, exclude: set[str]) -> str:
        """Class uniform, then image uniform (as in the paper); never the foreground's own background,
        and none of ``exclude`` (earlier picks for the same foreground) while others remain."""
        candidates = self.candidate_classes(item.cls, mode)
        own = self.own(item.key)
        for avoid in ({own, *exclude} - {None}, {own} - {None}):
            blocked: dict[str, list[int]] = {}  # class -> positions not to pick (a few: own and earlier picks)
            for cls, position, _ in (self._index[path_key(r)] for r in avoid):
                blocked.setdefault(cls, []).append(position)
            # only a class with as few images as are blocked drops out: check those, not every class
            full = {c for c, taken in blocked.items() if len(self.by_class.get(c, ())) <= len(taken)}
            classes = [c for c in candidates if c not in full] if full else candidates
            if classes:
                cls = classes[int(rng.integers(len(classes)))]
                position = int(rng.integers(len(self.by_class[cls]) - len(blocked.get(cls, ()))))
                for taken in sorted(blocked.get(cls, ())):  # step over blocked positions: uniform over the rest
                    if position >= taken:
                        position += 1
                return self.by_class[cls][position]
        raise ImageError(f"no background to choose from with --bg-from {mode} (classes with backgrounds: {', '.join(self.classes)})")


def sample_placement(rng: np.random.Generator, options: ComposeOptions) -> Placement:
    lo, hi = options.scale
    return Placement(
        scale=float(rng.uniform(lo, hi)) if hi > lo else float(lo),
        angle=float(rng.uniform(-options.rotate, options.rotate)) if options.rotate else 0.0,
        shift_x=float(rng.integers(-options.translate, options.translate + 1)) if options.translate else 0.0,
        shift_y=float(rng.integers(-options.translate, options.translate + 1)) if options.translate else 0.0,
    )


# --------------------------------------------------------------------------- pixels


def foreground_alpha(mask: np.ndarray, tight: float = 0.5, feather: float = DEFAULT_FEATHER) -> np.ndarray:
    """Tight binary mask (P(fg) >= tight) with a Gaussian-feathered edge, float32 in [0, 1].

    The soft edge lies inside the tight mask (eroded by ``feather`` px first), so the ring of the
    image's own background around the foreground is not carried into a composite. Only a box
    around the foreground is filtered: outside it alpha is 0 either way.
    """
    hard = mask >= tight - 1e-6
    if feather <= 0 or not hard.any():
        return hard.astype(np.float32)
    r = max(1, round(feather))
    pad = r + int(np.ceil(2 * feather)) + 2  # erosion radius + the blur's reach (OpenCV: 4 sigma, sigma = feather / 2)
    y0, y1, x0, x1 = bounding_box(hard, pad)
    crop = hard[y0:y1, x0:x1].astype(np.float32)
    inner = cv2.erode(crop, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    soft = cv2.GaussianBlur(inner if inner.any() else crop, (0, 0), feather / 2.0)
    soft[soft < 1e-3] = 0.0
    soft[soft > 1 - 1e-3] = 1.0
    alpha = np.zeros(mask.shape, np.float32)
    alpha[y0:y1, x0:x1] = soft
    return alpha


def fit_background(background: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale to cover height x width keeping the aspect ratio, then centre-crop."""
    bh, bw = background.shape[:2]
    if (bh, bw) == (height, width):
        return background
    scale = max(height / bh, width / bw)
    nh, nw = max(height, round(bh * scale)), max(width, round(bw * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(background, (nw, nh), interpolation=interp)
    y0, x0 = (nh - height) // 2, (nw - width) // 2
    return resized[y0 : y0 + height, x0 : x0 + width]


def placement_matrix(alpha: np.ndarray, placement: Placement) -> tuple[np.ndarray, Placement]:
    """Affine matrix scaling/rotating about the foreground's centre and shifting it, kept inside the frame.

    Returns the matrix and the placement actually used (the shift after clamping).
    """
    h, w = alpha.shape
    ys, xs = np.nonzero(alpha > 0)
    cy, cx = (ys.min() + ys.max()) / 2.0, (xs.min() + xs.max()) / 2.0
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), placement.angle, placement.scale)
    corners = np.array([[xs.min(), ys.min(), 1], [xs.max(), ys.min(), 1], [xs.min(), ys.max(), 1], [xs.max(), ys.max(), 1]], np.float64)
    moved = corners @ m.T
    x_lo, x_hi, y_lo, y_hi = moved[:, 0].min(), moved[:, 0].max(), moved[:, 1].min(), moved[:, 1].max()
    dx = float(np.clip(placement.shift_x, -x_lo, (w - 1) - x_hi)) if x_hi - x_lo <= w - 1 else (w - 1) / 2 - (x_lo + x_hi) / 2
    dy = float(np.clip(placement.shift_y, -y_lo, (h - 1) - y_hi)) if y_hi - y_lo <= h - 1 else (h - 1) / 2 - (y_lo + y_hi) / 2
    m[0, 2] += dx
    m[1, 2] += dy
    return m, Placement(placement.scale, placement.angle, round(dx, 2), round(dy, 2))


def place_foreground(image: np.ndarray, alpha: np.ndarray, placement: Placement) -> tuple[np.ndarray, np.ndarray, Placement]:
    """The foreground (image and alpha) moved by ``placement``, inside the frame; and the placement used."""
    if placement == Placement():
        return image, alpha, placement
    h, w = alpha.shape
    m, used = placement_matrix(alpha, placement)
    moved_image = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    moved_alpha = cv2.warpAffine(alpha, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return moved_image, moved_alpha, used


def blend(foreground: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    """alpha * foreground + (1 - alpha) * background, rounded to uint8 (exact where alpha is 0 or 1).

    Only the box where alpha > 0 is computed; the rest is the background.
    """
    out = background.copy()
    y0, y1, x0, x1 = bounding_box(alpha > 0)
    if y1 > y0 and x1 > x0:
        a = np.ascontiguousarray(alpha[y0:y1, x0:x1], dtype=np.float32)
        out[y0:y1, x0:x1] = cv2.blendLinear(np.ascontiguousarray(foreground[y0:y1, x0:x1]), np.ascontiguousarray(background[y0:y1, x0:x1]), a, 1.0 - a)
    return out


# --------------------------------------------------------------------------- the compose core


class Compositor:
    """THE compose core: mask -> alpha -> placement -> blend, for one MASKS folder and one pool of backgrounds.

    ``compose``, ``BackSwapDataset`` and ``evaluate`` all cut out and paste through it, so a composite is the same
    wherever it is made. ``tight`` None: what the masks' segmenter chose, else 0.5.
    """

    def __init__(self, masks_dir: Path, backgrounds_dir: Path, tight: float | None = None, feather: float = DEFAULT_FEATHER,
                 layout: DatasetLayout | None = None):
        self.masks_dir = Path(masks_dir)
        if not self.masks_dir.is_dir():
            raise StepError(f"masks folder not found: {self.masks_dir}")
        self.tight, self.tight_source = mask_threshold(self.masks_dir, "tight", tight)
        self.feather = feather
        self.pool = BackgroundPool(backgrounds_dir, layout)

    def alpha(self, item: ImageItem, size_hw: tuple[int, int] | None, required: bool = True) -> np.ndarray:
        """The item's cut-out alpha (its mask must have ``size_hw`` when given); with ``required``, a missing mask
        is an ``ImageError`` naming the reason and an empty cut-out a ``NoForeground`` (the image is left out,
        counted apart from failures)."""
        mask_path = mirror_path(self.masks_dir, item.rel, ".png")
        if required and not mask_path.exists():
            raise ImageError(f"no mask for this image (expected {mask_path})")
        alpha = foreground_alpha(read_mask(mask_path, size_hw), self.tight, self.feather)
        if required and not alpha.any():
            raise NoForeground(f"no foreground in the mask at P(fg) >= {self.tight}: nothing to compose")
        return alpha

    def background(self, rel: str, height: int, width: int) -> np.ndarray:
        """The background ``rel`` (relative to the pool) fitted to height x width."""
        return fit_background(read_image(self.pool.root / rel), height, width)

    def own_background(self, item: ImageItem) -> str:
        """The background made from this very image (``rel`` in the pool)."""
        own = self.pool.own(item.key)
        if own is None:
            raise ImageError(f"no background for this image in {self.pool.root}")
        return own

    def paste(self, image: np.ndarray, alpha: np.ndarray, background: np.ndarray, placement: Placement = Placement()) -> tuple[np.ndarray, Placement]:
        """The foreground of ``image`` moved by ``placement`` and blended onto ``background``; and the placement
        used (its shift kept inside the frame)."""
        fg, a, used = place_foreground(image, alpha, placement)
        return blend(fg, a, background), used

    def swap(self, image: np.ndarray, alpha: np.ndarray, background_rel: str, placement: Placement = Placement()) -> tuple[np.ndarray, Placement]:
        """The foreground on the background ``background_rel`` of the pool."""
        h, w = alpha.shape
        return self.paste(image, alpha, self.background(background_rel, h, w), placement)


# --------------------------------------------------------------------------- the step


@dataclass
class Composite:
    """One planned output: where it goes and what it is made of."""

    output: PurePosixPath
    background: str | None  # relative path under BACKGROUNDS
    placement: Placement = field(default_factory=Placement)


class ComposeStep(Step):
    name = "compose"

    def __init__(self, masks_dir: Path, backgrounds_dir: Path, out_dir: Path, options: ComposeOptions,
                 preview: str | None = None, preview_count: int = 24):
        options.check()
        self.core = Compositor(masks_dir, backgrounds_dir, options.tight, options.feather)
        self.out_dir = Path(out_dir)
        self.options = options
        self.preview = preview
        self.preview_count = preview_count
        self.spool = ManifestSpool(self.out_dir, MANIFEST_FIELDS)  # this run's rows, on disk
        self.collected: set[str] = set()  # keys of items whose rows this run already has
        self.manifest_count = 0
        self.layout = active_layout().recorded()  # the class rule names the output folders: part of the plan
        self.journal: Journal | None = None  # finished items, for a fast resume (opened by plan_items)
        self.earlier: set[str] | None = None  # keys an earlier run finished, by the journal; None: no journal

    def fingerprint(self) -> str:
        """What names and places the composites (options, the backgrounds pool, the class rule): a journal is
        only read back by a run with the same."""
        o = self.options
        plan = [o.variant, o.per_image, o.bg_from, o.seed, o.out_format, list(o.scale), o.rotate, o.translate, list(o.fill),
                o.include_originals, str(self.core.pool.root.resolve()), len(self.core.pool._index), self.layout]
        return hashlib.sha256(json.dumps(plan, default=str).encode()).hexdigest()[:12]

    def plan_items(self, items: Sequence[ImageItem], mine: Sequence[ImageItem], shard) -> None:
        """Open this shard's journal and read which items earlier runs finished."""
        self.journal = Journal(self.out_dir, MANIFEST_FIELDS, self.fingerprint(), shard.file_suffix)
        self.earlier = self.journal.finished(self.out_dir, FolderListing()) if self.journal.path.exists() else None

    def known_finished(self, mine: Sequence[ImageItem]) -> set[str] | None:
        return self.earlier

    # planning is pure: the same item always gets the same composites, under OUT/<its class>/
    def plan(self, item: ImageItem) -> list[Composite]:
        o = self.options
        ext = item.rel.suffix if o.out_format == "same" else "." + o.out_format.lstrip(".")
        stem = item.rel.stem
        parent = item.class_rel.parent
        if o.variant == "only-fg":
            return [Composite(parent / f"{stem}__only-fg{ext}", None)]
        if o.variant == "only-bg":
            return [Composite(parent / f"{stem}__only-bg{ext}", self.core.own_background(item))]
        plans, used = [], set()
        digest = key_digest(item.key)
        for k in range(o.per_image):
            rng = item_rng(o.seed, item.key, k, digest=digest)
            bg = self.core.pool.choose(item, rng, o.bg_from, used)
            used.add(bg)
            name = f"{stem}__{self.core.pool.describe(bg)[0]}__{PurePosixPath(bg).stem}"
            if any(p.output.stem == name for p in plans):
                name += f"__{k}"
            plans.append(Composite(parent / f"{name}{ext}", bg, sample_placement(rng, o)))
        return plans

    def outputs(self, item: ImageItem) -> list[Path]:
        try:
            paths = [self.out_dir / Path(c.output) for c in self.plan(item)]
        except ImageError:
            return []  # no background to plan with: the item runs, and fails with the reason
        if self.options.include_originals:
            paths.append(mirror_path(self.out_dir, item.class_rel))
        return paths

    def process(self, item: ImageItem) -> list[tuple[Path, np.ndarray, dict]]:
        """The item's composites (path, pixels, manifest row), not yet written."""
        o = self.options
        image = read_image(item.path)
        h, w = image.shape[:2]
        if o.variant == "only-bg":
            (plan,) = self.plan(item)
            return [(self.out_dir / Path(plan.output), self.core.background(plan.background, h, w), self._row(item, plan))]
        alpha = self.core.alpha(item, (h, w))
        results = []
        for plan in self.plan(item):
            if plan.background is None:  # only-fg: the foreground on a flat fill
                flat = np.empty_like(image)
                flat[:] = np.asarray(o.fill, np.uint8)
                composite, used = self.core.paste(image, alpha, flat)
            else:
                composite, used = self.core.swap(image, alpha, plan.background, plan.placement)
            plan = Composite(plan.output, plan.background, used)
            results.append((self.out_dir / Path(plan.output), composite, self._row(item, plan)))
        return results

    def write(self, item: ImageItem, results: list[tuple[Path, np.ndarray, dict]]) -> list[dict]:
        for path, array, _ in results:
            write_image_atomic(path, array, quality=self.options.quality)
        if self.options.include_originals:
            write_bytes_atomic(mirror_path(self.out_dir, item.class_rel), item.path.read_bytes())
        return [row for _, _, row in results]

    def _row(self, item: ImageItem, plan: Composite) -> dict:
        p = plan.placement
        bg_class, bg_group = self.core.pool.describe(plan.background) if plan.background else ("", "")
        return {
            "output": str(plan.output),
            "foreground": str(item.rel),
            "background": plan.background or f"flat fill {self.options.fill}",
            "foreground_class": item.cls,
            "background_class": bg_class,
            "scale": round(p.scale, 4),
            "angle": round(p.angle, 3),
            "shift_x": p.shift_x,
            "shift_y": p.shift_y,
            "seed": self.options.seed,
            "foreground_group": item.group or "",
            "background_group": bg_group or "",
        }

    def collect(self, item: ImageItem, rows: list[dict]) -> None:
        self.spool.add(rows)
        if self.journal is None:
            self.journal = Journal(self.out_dir, MANIFEST_FIELDS, self.fingerprint())
        self.journal.add(item.key, rows, MANIFEST_FIELDS)
        self.collected.add(item.key)

    def recorded_options(self) -> dict:
        o = self.options
        return {
            "masks": str(self.core.masks_dir), "backgrounds": str(self.core.pool.root), "variant": o.variant, "per_image": o.per_image,
            "bg_from": o.bg_from, "tight": self.core.tight, "tight_from": self.core.tight_source, "feather": o.feather, "scale": list(o.scale), "rotate": o.rotate,
            "translate": o.translate, "include_originals": o.include_originals, "format": o.out_format, "quality": o.quality, "seed": o.seed,
        }

    def recorded_results(self) -> dict:
        return {"composites_in_manifest": self.manifest_count}

    def manifest_rows(self, item: ImageItem, plans: list[Composite]) -> list[dict]:
        """The manifest rows of an item finished earlier, without redoing its composites (reads only its mask)."""
        alpha = None
        rows = []
        for plan in plans:
            placement = plan.placement
            if plan.background is not None and placement != Placement() and self.options.variant == "swap":
                if alpha is None:
                    alpha = self.core.alpha(item, None, required=False)
                _, placement = placement_matrix(alpha, placement)
            rows.append(self._row(item, Composite(plan.output, plan.background, placement)))
        return rows

    def finish(self, report: RunReport, items: Sequence[ImageItem]) -> None:
        """Write the manifest for every composite of this shard on disk (this run's and earlier runs')."""
        if self.earlier is not None:
            self._earlier_rows_from_journal(items)
        else:
            self._earlier_rows_from_plans(items)
        if self.journal is not None:
            self.journal.close()
        manifest = self.out_dir / f"manifest{report.shard.file_suffix}.csv"
        self.manifest_count = self.spool.write_sorted(manifest)
        if self.preview and self.manifest_count:
            tiles = [read_image(self.out_dir / output) for output in _spread_outputs(manifest, self.manifest_count, self.preview_count)]
            write_image_atomic(Path(self.preview), preview_grid(tiles))
            console.print(f"preview: {self.preview}")

    def _earlier_rows_from_journal(self, items: Sequence[ImageItem]) -> None:
        """The manifest rows of the items earlier runs finished, as their journal lines hold them."""
        wanted = self.earlier - self.collected
        if not wanted:
            return
        wanted &= {item.key for item in items}
        for number, key, rows in self.journal.lines():
            if number > self.journal.lines_before:
                break
            if key in wanted:
                wanted.discard(key)
                self.spool.add_raw(rows)

    def _earlier_rows_from_plans(self, items: Sequence[ImageItem]) -> None:
        """No journal (a folder from before journals, or other options): plan each item not composed in this run
        and take the rows of those whose composites are all on disk (and journal them for the next run)."""
        for item in items:
            if item.key in self.collected:  # composed in this run
                continue
            try:
                plans = self.plan(item)
                if all(os.path.exists(self.out_dir / p.output) for p in plans):  # finished by an earlier run (a name too long: not)
                    self.collect(item, self.manifest_rows(item, plans))
            except ImageError:
                continue


def _spread_outputs(manifest: Path, count: int, wanted: int) -> list[str]:
    """The outputs of ``wanted`` rows evenly spaced over a manifest of ``count`` rows (read as a stream)."""
    chosen = set(spread_sample(range(count), wanted))
    with open(manifest, newline="", **TEXT) as f:
        return [row["output"] for i, row in enumerate(csv.DictReader(f)) if i in chosen]


class TarComposeStep(ComposeStep):
    """``compose --output-format webdataset``: the same composites, as samples in tar shards of about
    ``shard_size`` samples (whole images: an image's composites share a tar). A tar is written, whole, when the
    last of its images is composed; an existing tar marks its images finished (resume at tar granularity).
    ``index.json`` lists the tars (wids' format, plus size and SHA-256)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tar_of: dict[str, int] = {}  # item key -> its tar's number
        self.tar_images: dict[int, int] = {}  # tar number -> images in it
        self.class_index: dict[str, int] = {}
        self.prefix = "shard-"
        self.pending: dict[int, TarSpool] = {}  # tar number -> its samples composed so far, spooled to disk
        self.arrived: dict[int, int] = {}
        self.written: dict[str, dict] = {}  # index entries of this run's tars
        self.samples = 0
        self.preview_tiles: list[np.ndarray] = []

    def plan_items(self, items: Sequence[ImageItem], mine: Sequence[ImageItem], shard) -> None:
        per_tar = max(1, self.options.shard_size // self.options.per_image)
        self.prefix = f"shard-{shard.index}-of-{shard.count}-" if shard.count > 1 else "shard-"
        self.class_index = {c: i for i, c in enumerate(sorted({it.cls for it in items}))}
        self.tar_of = {it.key: n // per_tar for n, it in enumerate(mine)}
        for number in self.tar_of.values():
            self.tar_images[number] = self.tar_images.get(number, 0) + 1

    def tar_path(self, number: int) -> Path:
        return self.out_dir / f"{self.prefix}{number:06d}.tar"

    def outputs(self, item: ImageItem) -> list[Path]:
        return [self.tar_path(self.tar_of[item.key])]

    def write(self, item: ImageItem, results: list[tuple[Path, np.ndarray, dict]]) -> list[Sample]:
        """Worker: encode the composites; the main process puts them in their tar."""
        samples = []
        for path, array, row in results:
            ext = path.suffix.lstrip(".").lower()
            samples.append(Sample(sample_key(row["output"]), ext, encode_image(array, ext, self.options.quality), self.class_index[item.cls], row))
        return samples

    def collect(self, item: ImageItem, samples: list[Sample]) -> None:
        number = self.tar_of[item.key]
        spool = self.pending.get(number)
        if spool is None:
            spool = self.pending[number] = TarSpool(self.out_dir)
        for sample in samples:
            spool.add(sample)
        if self.preview and len(self.preview_tiles) < self.preview_count:
            for sample in samples[: self.preview_count - len(self.preview_tiles)]:
                bgr = cv2.imdecode(np.frombuffer(sample.image, np.uint8), cv2.IMREAD_COLOR)
                self.preview_tiles.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        self.arrived[number] = self.arrived.get(number, 0) + 1
        if self.arrived[number] == self.tar_images[number]:
            self._write(number)

    def _write(self, number: int) -> None:
        spool = self.pending.pop(number)
        self.written[self.tar_path(number).name] = spool.write(self.tar_path(number))
        self.samples += len(spool)

    def finish(self, report: RunReport, items: Sequence[ImageItem]) -> None:
        """Write the tars some of whose images failed (with the samples that were made), then the index of every
        tar of this shard on disk."""
        for number in sorted(self.pending):
            self._write(number)
        index_path = self.out_dir / f"index{report.shard.file_suffix}.json"
        known = read_index(index_path)
        entries = []
        for number in sorted(set(self.tar_of.values())):
            name = self.tar_path(number).name
            if name in self.written:
                entries.append(self.written[name])
            elif self.tar_path(number).exists():
                entries.append(known.get(name) or describe_tar(self.tar_path(number)))
        write_index(index_path, entries, name=self.out_dir.name)
        self.manifest_count = sum(e["nsamples"] for e in entries)
        if self.preview and self.preview_tiles:
            write_image_atomic(Path(self.preview), preview_grid(self.preview_tiles))
            console.print(f"preview: {self.preview}")

    def recorded_results(self) -> dict:
        return {"samples": self.manifest_count, "samples_this_run": self.samples}


def compose_step(masks_dir: Path, backgrounds_dir: Path, out_dir: Path, options: ComposeOptions, preview: str | None = None) -> ComposeStep:
    """The compose step for ``options.layout``: ImageFolder files, or WebDataset tar shards."""
    cls = TarComposeStep if options.layout == "webdataset" else ComposeStep
    return cls(masks_dir, backgrounds_dir, out_dir, options, preview=preview)


# --------------------------------------------------------------------------- on the fly, for training


class BackSwapDataset:
    """A torch-style Dataset that composes on the fly: every epoch sees fresh foreground/background pairs.

    ``dataset[i]`` is ``(image, class_index)`` for the i-th image of DATA (ImageFolder order):
    its foreground on a background chosen and placed as ``compose`` would, as a PIL image
    (or ``transform(image)``). Call ``set_epoch(e)`` each epoch for reproducible, changing
    combinations; with ``p_original`` the original image is returned that often instead, and
    always for an image whose mask has no foreground (nothing to cut out). ``layout`` says where classes come
    from, as ``--class-level`` / ``--metadata`` do on the command line (default: the first folder).
    """

    def __init__(self, data_dir: Path | str, masks_dir: Path | str, backgrounds_dir: Path | str,
                 options: ComposeOptions | None = None, transform=None, p_original: float = 0.0, layout: DatasetLayout | None = None):
        self.options = options or ComposeOptions()
        self.options.check()
        layout = layout or DatasetLayout()
        scan, _ = scan_dataset(Path(data_dir), layout, exclude=[Path(masks_dir), Path(backgrounds_dir)])
        self.items = scan.items
        self.classes = scan.classes
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.targets = [self.class_to_idx[it.cls] for it in self.items]
        self.groups = [it.group for it in self.items]
        self.core = Compositor(Path(masks_dir), Path(backgrounds_dir), self.options.tight, self.options.feather, layout)
        self.transform = transform
        self.p_original = p_original
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def compose(self, index: int) -> np.ndarray:
        """The composite for ``index`` in the current epoch, as an RGB uint8 array."""
        item = self.items[index]
        o = self.options
        rng = item_rng(o.seed, item.key, 0, epoch=self.epoch + 1)
        image = read_image(item.path)
        if self.p_original and rng.random() < self.p_original:
            return image
        alpha = self.core.alpha(item, image.shape[:2], required=False)
        if not alpha.any():
            return image
        background = self.core.pool.choose(item, rng, o.bg_from, set())
        return self.core.swap(image, alpha, background, sample_placement(rng, o))[0]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        image = Image.fromarray(self.compose(index))
        return (self.transform(image) if self.transform else image), self.targets[index]
