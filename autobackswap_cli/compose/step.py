"""``compose``: foregrounds onto backgrounds of other images and classes.

For every foreground image, ``per_image`` composites are planned as ``OUT/<class>/<name>__<bg-class>__<bg-name>.<ext>``
(planning is pure: the same item always gets the same composites) and made through the compose core. How they are
written is the output layout's (``layouts.OUTPUT_LAYOUTS``); the image-files layout keeps ``manifest.csv`` (a row per
composite, streamed to disk and sorted at the end) and a journal of finished items, here. An image whose tight mask
holds no foreground is left out (``NoForeground``: counted and listed in the run record, not a failure), and so is
an image whose mask's confidence is below ``--min-confidence`` (``LowConfidence``; its background stays out of the
pool too).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import numpy as np

from ..engine import RunReport, Step, active_layout, console
from ..images import FolderListing, ImageError, ImageItem, read_image
from ..manifest import Journal, ManifestSpool
from .core import Compositor, Placement, item_rng, key_digest, placement_matrix, sample_placement
from .layouts import OUTPUT_LAYOUTS
from .options import ComposeOptions

MANIFEST_FIELDS = ["output", "foreground", "background", "foreground_class", "background_class", "scale", "angle", "shift_x", "shift_y", "seed",
                   "foreground_group", "background_group"]


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
                 preview: str | None = None, preview_count: int = 24):
        options.check()
        self.core = Compositor(masks_dir, backgrounds_dir, options.tight, options.feather, min_confidence=options.min_confidence)
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
        self._mine: dict[str, ImageItem] = {}  # this shard's items by key, for checking the journal's lines
        self.writer = OUTPUT_LAYOUTS[self.output_layout or options.layout][0](self)

    def fingerprint(self) -> str:
        """What names and places the composites (options, the backgrounds pool, the class rule): a journal is
        only read back by a run with the same."""
        o = self.options
        plan = [o.variant, o.per_image, o.bg_from, o.seed, o.out_format, list(o.scale), o.rotate, o.translate, list(o.fill),
                o.include_originals, str(self.core.pool.root.resolve()), len(self.core.pool), self.layout]
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
        ignored = self.journal.ignored if self.journal is not None else 0
        return {**self.writer.recorded_results(), "backgrounds_left_out_low_confidence": self.core.pool.left_out, "journal_lines_ignored": ignored}

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
            if plan.background is not None and placement != Placement() and self.options.variant == "swap":
                if alpha is None:
                    alpha = self.core.alpha(item, None, required=False)
                _, placement = placement_matrix(alpha, placement)
            rows.append(self._row(item, Composite(plan.output, plan.background, placement)))
        return rows

    def recorded_options(self) -> dict:
        o = self.options
        return {
            "masks": str(self.core.masks_dir), "backgrounds": str(self.core.pool.root), "variant": o.variant, "per_image": o.per_image,
            "bg_from": o.bg_from, "tight": self.core.tight, "tight_from": self.core.tight_source, "feather": o.feather,
            "min_confidence": self.core.min_confidence, "min_confidence_from": self.core.min_confidence_source, "scale": list(o.scale), "rotate": o.rotate,
            "translate": o.translate, "include_originals": o.include_originals, "format": o.out_format, "quality": o.quality, "seed": o.seed,
        }

    # ----------------------------------------------------------------- the manifest and the journal

    def open_journal(self, shard, mine: Sequence[ImageItem]) -> None:
        """Open this shard's journal and read which of ``mine`` earlier runs finished. The journal is data, not a
        command: a line counts only where it names one of ``mine`` and the outputs that item would have, inside
        OUT, all on disk (``_fits``); other lines are ignored (the item is made again) and counted."""
        self.journal = Journal(self.out_dir, MANIFEST_FIELDS, self.fingerprint(), shard.file_suffix)
        self._mine = {item.key: item for item in mine}
        self.earlier = self.journal.finished(self.out_dir, FolderListing(), self._fits) if self.journal.path.exists() else None
        if self.journal.ignored:
            console.print(f"[yellow]note:[/] {self.journal.ignored} line(s) of the journal {self.journal.path.name} name outputs "
                          f"their image would not have, or images not in this run: ignored (those images are made again)")

    def _fits(self, key: str, rows: list[list[str]]) -> bool:
        """Whether a journal line's rows are what the item ``key`` of this run would have: as many composites as
        planned, each under OUT/<its class>/<its name>__..., from that very image."""
        item = self._mine.get(key)
        expected = 1 if self.options.variant != "swap" else self.options.per_image
        if item is None or len(rows) != expected:
            return False
        prefix, source = f"{item.class_rel.parent / item.rel.stem}__", str(item.rel)
        for row in rows:
            output = PurePosixPath(row[0])
            if not row[0].startswith(prefix) or output.is_absolute() or ".." in output.parts or row[1] != source:
                return False
        return True

    def record_rows(self, item: ImageItem, rows: list[dict]) -> None:
        """Main process: a finished item's manifest rows, to the spool and the journal."""
        self.spool.add(rows)
        if self.journal is None:
            self.journal = Journal(self.out_dir, MANIFEST_FIELDS, self.fingerprint())
        self.journal.add(item.key, rows, MANIFEST_FIELDS)
        self.collected.add(item.key)

    def write_manifest(self, report: RunReport, items: Sequence[ImageItem]) -> Path:
        """Write the manifest for every composite of this shard on disk (this run's and earlier runs'); its path."""
        if self.earlier is not None:
            self._earlier_rows_from_journal(items)
        else:
            self._earlier_rows_from_plans(items)
        if self.journal is not None:
            self.journal.close()
        manifest = self.out_dir / f"manifest{report.shard.file_suffix}.csv"
        self.manifest_count = self.spool.write_sorted(manifest)
        return manifest

    def _earlier_rows_from_journal(self, items: Sequence[ImageItem]) -> None:
        """The manifest rows of the items earlier runs finished, as their journal lines hold them."""
        wanted = self.earlier - self.collected
        if not wanted:
            return
        wanted &= {item.key for item in items}
        for number, key, rows in self.journal.lines():
            if number > self.journal.lines_before:
                break
            if key in wanted and self._fits(key, rows):
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
                    self.record_rows(item, self.manifest_rows(item, plans))
            except ImageError:
                continue


class TarComposeStep(ComposeStep):
    """``compose --output-layout webdataset``, by its class: a compose step whose layout is always tar shards."""

    output_layout = "webdataset"


def compose_step(masks_dir: Path, backgrounds_dir: Path, out_dir: Path, options: ComposeOptions, preview: str | None = None) -> ComposeStep:
    """The compose step for ``options.layout`` (an ``OUTPUT_LAYOUTS`` name): ImageFolder files, or WebDataset tar shards."""
    return ComposeStep(masks_dir, backgrounds_dir, out_dir, options, preview=preview)
