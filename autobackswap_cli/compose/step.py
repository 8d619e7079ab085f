"""``compose``: foregrounds onto backgrounds of other images and classes.

For every foreground image, ``per_image`` composites are planned as ``OUT/<class>/<name>__<bg-class>__<bg-name>.<ext>``
(planning is pure: the same item always gets the same composites) and made through the compose core. How they are
written is the output layout's (``layouts.OUTPUT_LAYOUTS``): the layout's writer owns its files (the image-files
writer ``manifest.csv`` and the journal of finished items, the tar writer its shards and index). An image whose tight mask
holds no foreground is left out (``NoForeground``: counted and listed in the run record, not a failure), and so is
an image whose mask's confidence is below ``--min-confidence`` (``LowConfidence``; its background stays out of the
pool too).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import numpy as np

from ..engine import DatasetLayout, RunReport, Step, console
from ..images import ImageError, ImageItem, read_image
from .core import Compositor, Placement, item_rng, key_digest, placement_matrix, sample_placement
from .layouts import OUTPUT_LAYOUTS, WriterContext
from .options import ComposeOptions



@dataclass
class Composite:
    """One planned output: where it goes and what it is made of."""

    output: PurePosixPath
    background: str | None  # relative path under BACKGROUNDS
    placement: Placement = field(default_factory=Placement)


class ComposeStep(Step):
    """The ``compose`` step: plans and makes each item's composites; its output layout (``options.layout``, an
    ``OUTPUT_LAYOUTS`` name) writes them."""

    name = "compose"
    output_layout: str | None = None  # a subclass that always writes one layout names it here

    def __init__(self, masks_dir: Path, backgrounds_dir: Path, out_dir: Path, options: ComposeOptions,
                 preview: str | None = None, preview_count: int = 24, layout: DatasetLayout | None = None):
        options.check()
        layout = layout or DatasetLayout()  # DATA's class rule: BACKGROUNDS mirror DATA
        self.core = Compositor(masks_dir, backgrounds_dir, options.tight, options.feather, layout, min_confidence=options.min_confidence,
                               place=options.place)
        self.out_dir = Path(out_dir)
        self.options = options
        self.preview = preview
        self.preview_count = preview_count
        self.layout = layout.recorded()  # the class rule names the output folders: part of the plan
        context = WriterContext(self.out_dir, options, self.fingerprint(), self.plan, self.manifest_rows, preview, preview_count)
        self.writer = OUTPUT_LAYOUTS[self.output_layout or options.layout][0](context)

    def fingerprint(self) -> str:
        """What names and places the composites (options, the backgrounds pool, the class rule): a journal is
        only read back by a run with the same."""
        o = self.options
        plan = [o.variant, o.per_image, o.bg_from, o.seed, o.out_format, list(o.scale), o.rotate, o.translate, list(o.fill),
                o.include_originals, str(self.core.pool.root.resolve()), len(self.core.pool), self.layout] + ([o.place] if o.place != "own" else [])
        return hashlib.sha256(json.dumps(plan, default=str).encode()).hexdigest()[:12]

    # ----------------------------------------------------------------- the output layout's hooks (Step's protocol)

    def plan_items(self, items: Sequence[ImageItem], mine: Sequence[ImageItem], shard) -> None:
        self.writer.plan_items(items, mine, shard)

    def known_finished(self, mine: Sequence[ImageItem]) -> set[str] | None:
        return self.writer.known_finished(mine)

    def outputs(self, item: ImageItem) -> list[Path]:
        return self.writer.outputs(item)

    def write(self, item: ImageItem, results: list[tuple[Path, np.ndarray, dict]]) -> Any:
        return self.writer.write(item, results)

    def collect(self, item: ImageItem, info: Any) -> None:
        self.writer.collect(item, info)

    def finish(self, report: RunReport, items: Sequence[ImageItem]) -> None:
        if self.core.min_confidence > 0 and self.core.confidence is None:
            note = (f"{self.core.masks_dir} holds no mask_quality.csv (masks made before confidences): no image is left out "
                    f"for low confidence; segment again into a new folder to have them scored")
            report.warnings.append(note)
            console.print(f"[yellow]note:[/] {note}")
        self.writer.finish(report, items)

    def recorded_results(self) -> dict:
        return {**self.writer.recorded_results(), "backgrounds_left_out_low_confidence": self.core.pool.left_out}

    # ----------------------------------------------------------------- planning and making

    def plan(self, item: ImageItem) -> list[Composite]:
        """The item's composites, under OUT/<its class>/: the same item always gets the same ones."""
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
            bg = self.core.choose_background(item, rng, o.bg_from, used)
            used.add(bg)
            name = f"{stem}__{self.core.pool.describe(bg)[0]}__{PurePosixPath(bg).stem}"
            if any(p.output.stem == name for p in plans):
                name += f"__{k}"
            plans.append(Composite(parent / f"{name}{ext}", bg, sample_placement(rng, o)))
        for plan in plans:  # names are checked where they come from; a path that still leaves OUT is refused
            if plan.output.is_absolute() or ".." in plan.output.parts:
                raise ImageError(f"output {plan.output} would lie outside OUT")
        return plans

    def process(self, item: ImageItem) -> list[tuple[Path, np.ndarray, dict]]:
        """The item's composites (path, pixels, manifest row), not yet written."""
        o = self.options
        self.core.trust(item)
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

    def manifest_rows(self, item: ImageItem, plans: list[Composite]) -> list[dict]:
        """The manifest rows of an item finished earlier, without redoing its composites (reads only its mask)."""
        alpha = None
        rows = []
        for plan in plans:
            placement = plan.placement
            if plan.background is not None and (placement != Placement() or self.options.place != "own") and self.options.variant == "swap":
                if alpha is None:
                    alpha = self.core.alpha(item, None, required=False)
                placement = self.core.placed(alpha, plan.background, placement)
                _, placement = placement_matrix(alpha, placement)
            rows.append(self._row(item, Composite(plan.output, plan.background, placement)))
        return rows

    def recorded_options(self) -> dict:
        o = self.options
        return {
            "masks": str(self.core.masks_dir), "backgrounds": str(self.core.pool.root), "variant": o.variant, "per_image": o.per_image,
            "bg_from": o.bg_from, "place": o.place, "tight": self.core.tight, "tight_from": self.core.tight_source, "feather": o.feather,
            "min_confidence": self.core.min_confidence, "min_confidence_from": self.core.min_confidence_source, "scale": list(o.scale), "rotate": o.rotate,
            "translate": o.translate, "include_originals": o.include_originals, "format": o.out_format, "quality": o.quality, "seed": o.seed,
        }

class TarComposeStep(ComposeStep):
    """``compose --output-layout webdataset``, by its class: a compose step whose layout is always tar shards."""

    output_layout = "webdataset"


def compose_step(masks_dir: Path, backgrounds_dir: Path, out_dir: Path, options: ComposeOptions, preview: str | None = None,
                 layout: DatasetLayout | None = None) -> ComposeStep:
    """The compose step for ``options.layout`` (an ``OUTPUT_LAYOUTS`` name): ImageFolder files, or WebDataset tar shards;
    ``layout``: DATA's class rule (BACKGROUNDS follow it too)."""
    return ComposeStep(masks_dir, backgrounds_dir, out_dir, options, preview=preview, layout=layout)
