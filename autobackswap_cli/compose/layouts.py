"""compose's output layouts: how the composites the step makes are written, and what marks them finished.

``OUTPUT_LAYOUTS`` (``--output-layout``) names each one: its writer class and a line of help. A writer is built by
the step from a ``WriterContext`` (where it writes, the options that shape its files, the preview, and the step's
planning: pure functions of an item), owns its files, and takes the step's output hooks: ``plan_items``,
``known_finished``, ``outputs``, ``write`` (in workers), ``collect`` and ``finish`` (main process) and
``recorded_results``.

* ``imagefolder`` (``ImageFiles``): one image file per composite under ``OUT/<class>/``, ``manifest.csv`` (a row per
  composite, streamed to disk and sorted at the end) and a journal of finished items (fast resume);
* ``webdataset`` (``TarShards``): samples in tar shards of about ``shard_size`` samples (whole images: an image's
  composites share a tar). A tar is written, whole, when the last of its images is composed; an existing tar marks
  its images finished (resume at tar granularity). ``index.json`` lists the tars (wids' format, plus size and SHA-256).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Callable, Sequence

import cv2
import numpy as np

from ..engine import RunReport, console
from ..images import (TEXT, FolderListing, ImageError, ImageItem, encode_image, mirror_path, preview_grid, read_image, spread_sample,
                      write_bytes_atomic, write_image_atomic)
from ..formats.manifest import Journal, ManifestSpool
from ..formats.tarshards import Sample, TarSpool, describe_tar, read_index, sample_key, write_index

if TYPE_CHECKING:
    from .options import ComposeOptions

MANIFEST_FIELDS = ["output", "foreground", "background", "foreground_class", "background_class", "scale", "angle", "shift_x", "shift_y", "seed",
                   "foreground_group", "background_group"]


@dataclass
class WriterContext:
    """What a writer gets from the compose step: where it writes, the options that shape its files, the step's
    planning (``plan``: an item's planned composites; ``manifest_rows``: the rows of an item finished earlier), the
    plan's ``fingerprint`` (a journal is read back only by a run with the same), and the preview asked for."""

    out_dir: Path
    options: ComposeOptions
    fingerprint: str
    plan: Callable[[ImageItem], list]
    manifest_rows: Callable[[ImageItem, list], list[dict]]
    preview: str | None = None
    preview_count: int = 24

class ImageFiles:
    """``--output-layout imagefolder``: each composite an image file (and, with ``--include-originals``, the
    original beside them); its manifest and its journal say what is finished."""

    def __init__(self, ctx: WriterContext):
        self.ctx = ctx
        self.spool = ManifestSpool(ctx.out_dir, MANIFEST_FIELDS)  # this run's rows, on disk
        self.collected: set[str] = set()  # keys of items whose rows this run already has
        self.manifest_count = 0
        self.journal: Journal | None = None  # finished items, for a fast resume (opened by plan_items)
        self.earlier: set[str] | None = None  # keys an earlier run finished, by the journal; None: no journal
        self._mine: dict[str, ImageItem] = {}  # this shard's items by key, for checking the journal's lines

    def plan_items(self, items: Sequence[ImageItem], mine: Sequence[ImageItem], shard) -> None:
        """Open this shard's journal (it names the items earlier runs finished)."""
        self.open_journal(shard, mine)

    def known_finished(self, mine: Sequence[ImageItem]) -> set[str] | None:
        """The keys the journal says are finished (None without one: the engine checks the files)."""
        return self.earlier

    def outputs(self, item: ImageItem) -> list[Path]:
        """The item's planned composites (and its copy with ``--include-originals``)."""
        try:
            paths = [self.ctx.out_dir / Path(c.output) for c in self.ctx.plan(item)]
        except ImageError:
            return []  # no background to plan with: the item runs, and fails with the reason
        if self.ctx.options.include_originals:
            paths.append(mirror_path(self.ctx.out_dir, item.class_rel))
        return paths

    def write(self, item: ImageItem, results: list[tuple[Path, np.ndarray, dict]]) -> list[dict]:
        """Worker: the image files; their manifest rows go back to ``collect``."""
        for path, array, _ in results:
            write_image_atomic(path, array, quality=self.ctx.options.quality)
        if self.ctx.options.include_originals:
            write_bytes_atomic(mirror_path(self.ctx.out_dir, item.class_rel), item.path.read_bytes())
        return [row for _, _, row in results]

    def collect(self, item: ImageItem, rows: list[dict]) -> None:
        """The item's manifest rows, to the manifest's spool and the journal."""
        self.record_rows(item, rows)

    def finish(self, report: RunReport, items: Sequence[ImageItem]) -> None:
        """The manifest of every composite of this shard on disk, then the preview (composites spread over it)."""
        ctx = self.ctx
        manifest = self.write_manifest(report, items)
        if ctx.preview and self.manifest_count:
            tiles = [read_image(ctx.out_dir / output) for output in _spread_outputs(manifest, self.manifest_count, ctx.preview_count)]
            write_image_atomic(Path(ctx.preview), preview_grid(tiles))
            console.print(f"preview: {ctx.preview}")

    def recorded_results(self) -> dict:
        """How many composites the manifest lists, and how many journal lines were not believed."""
        return {"composites_in_manifest": self.manifest_count, "journal_lines_ignored": self.journal.ignored if self.journal else 0}

    def open_journal(self, shard, mine: Sequence[ImageItem]) -> None:
        """Open this shard's journal and read which of ``mine`` earlier runs finished. The journal is data, not a
        command: a line counts only where it names one of ``mine`` and the outputs that item would have, inside
        OUT, all on disk (``_fits``); other lines are ignored (the item is made again) and counted."""
        self.journal = Journal(self.ctx.out_dir, MANIFEST_FIELDS, self.ctx.fingerprint, shard.file_suffix)
        self._mine = {item.key: item for item in mine}
        self.earlier = self.journal.finished(self.ctx.out_dir, FolderListing(), self._fits) if self.journal.path.exists() else None
        if self.journal.ignored:
            console.print(f"[yellow]note:[/] {self.journal.ignored} line(s) of the journal {self.journal.path.name} name outputs "
                          f"their image would not have, or images not in this run: ignored (those images are made again)")

    def _fits(self, key: str, rows: list[list[str]]) -> bool:
        """Whether a journal line's rows are what the item ``key`` of this run would have: as many composites as
        planned, each under OUT/<its class>/<its name>__..., from that very image."""
        item = self._mine.get(key)
        expected = 1 if self.ctx.options.variant != "swap" else self.ctx.options.per_image
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
            self.journal = Journal(self.ctx.out_dir, MANIFEST_FIELDS, self.ctx.fingerprint)
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
        manifest = self.ctx.out_dir / f"manifest{report.shard.file_suffix}.csv"
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
                plans = self.ctx.plan(item)
                if all(os.path.exists(self.ctx.out_dir / p.output) for p in plans):  # finished by an earlier run (a name too long: not)
                    self.record_rows(item, self.ctx.manifest_rows(item, plans))
            except ImageError:
                continue



def _spread_outputs(manifest: Path, count: int, wanted: int) -> list[str]:
    """The outputs of ``wanted`` rows evenly spaced over a manifest of ``count`` rows (read as a stream)."""
    chosen = set(spread_sample(range(count), wanted))
    with open(manifest, newline="", **TEXT) as f:
        return [row["output"] for i, row in enumerate(csv.DictReader(f)) if i in chosen]


class TarShards:
    """``--output-layout webdataset``: the same composites, as samples in tar shards (see the module docstring)."""

    def __init__(self, ctx: WriterContext):
        self.ctx = ctx
        self.tar_of: dict[str, int] = {}  # item key -> its tar's number
        self.tar_images: dict[int, int] = {}  # tar number -> images in it
        self.class_index: dict[str, int] = {}
        self.prefix = "shard-"
        self.pending: dict[int, TarSpool] = {}  # tar number -> its samples composed so far, spooled to disk
        self.arrived: dict[int, int] = {}
        self.written: dict[str, dict] = {}  # index entries of this run's tars
        self.samples = 0  # written by this run
        self.samples_total = 0  # in this shard's tars on disk
        self.preview_tiles: list[np.ndarray] = []

    def plan_items(self, items: Sequence[ImageItem], mine: Sequence[ImageItem], shard) -> None:
        """Group this shard's items into tars (in order, whole images) and number the classes."""
        per_tar = max(1, self.ctx.options.shard_size // self.ctx.options.per_image)
        self.prefix = f"shard-{shard.index}-of-{shard.count}-" if shard.count > 1 else "shard-"
        self.class_index = {c: i for i, c in enumerate(sorted({it.cls for it in items}))}
        self.tar_of = {it.key: n // per_tar for n, it in enumerate(mine)}
        for number in self.tar_of.values():
            self.tar_images[number] = self.tar_images.get(number, 0) + 1

    def known_finished(self, mine: Sequence[ImageItem]) -> set[str] | None:
        """None: the tars on disk say what is finished."""
        return None

    def tar_path(self, number: int) -> Path:
        """Where tar ``number`` of this shard goes."""
        return self.ctx.out_dir / f"{self.prefix}{number:06d}.tar"

    def outputs(self, item: ImageItem) -> list[Path]:
        """The item's tar: once it exists, the item is finished."""
        return [self.tar_path(self.tar_of[item.key])]

    def write(self, item: ImageItem, results: list[tuple[Path, np.ndarray, dict]]) -> list[Sample]:
        """Worker: encode the composites; the main process puts them in their tar."""
        samples = []
        for path, array, row in results:
            ext = path.suffix.lstrip(".").lower()
            samples.append(Sample(sample_key(row["output"]), ext, encode_image(array, ext, self.ctx.options.quality), self.class_index[item.cls], row))
        return samples

    def collect(self, item: ImageItem, samples: list[Sample]) -> None:
        """Spool the samples for their tar (and the preview); write the tar once its last image is in."""
        number = self.tar_of[item.key]
        spool = self.pending.get(number)
        if spool is None:
            spool = self.pending[number] = TarSpool(self.ctx.out_dir)
        for sample in samples:
            spool.add(sample)
        self._keep_for_preview(samples)
        self.arrived[number] = self.arrived.get(number, 0) + 1
        if self.arrived[number] == self.tar_images[number]:
            self._write(number)

    def _keep_for_preview(self, samples: list[Sample]) -> None:
        ctx = self.ctx
        if ctx.preview and len(self.preview_tiles) < ctx.preview_count:
            for sample in samples[: ctx.preview_count - len(self.preview_tiles)]:
                bgr = cv2.imdecode(np.frombuffer(sample.image, np.uint8), cv2.IMREAD_COLOR)
                self.preview_tiles.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

    def _write(self, number: int) -> None:
        spool = self.pending.pop(number)
        self.written[self.tar_path(number).name] = spool.write(self.tar_path(number))
        self.samples += len(spool)

    def finish(self, report: RunReport, items: Sequence[ImageItem]) -> None:
        """Write the tars some of whose images failed (with the samples that were made), then the index of every
        tar of this shard on disk."""
        ctx = self.ctx
        for number in sorted(self.pending):
            self._write(number)
        index_path = ctx.out_dir / f"index{report.shard.file_suffix}.json"
        known = read_index(index_path)
        entries = []
        for number in sorted(set(self.tar_of.values())):
            name = self.tar_path(number).name
            if name in self.written:
                entries.append(self.written[name])
            elif self.tar_path(number).exists():
                entries.append(known.get(name) or describe_tar(self.tar_path(number)))
        write_index(index_path, entries, name=ctx.out_dir.name)
        self.samples_total = sum(e["nsamples"] for e in entries)
        if ctx.preview and self.preview_tiles:
            write_image_atomic(Path(ctx.preview), preview_grid(self.preview_tiles))
            console.print(f"preview: {ctx.preview}")

    def recorded_results(self) -> dict:
        """Samples in this shard's tars, and how many of them this run wrote."""
        return {"samples": self.samples_total, "samples_this_run": self.samples}


# --output-layout NAME -> (writer class, help)
OUTPUT_LAYOUTS = {
    "imagefolder": (ImageFiles, "image files under OUT/<class>/ and manifest.csv"),
    "webdataset": (TarShards, "tar shards OUT/shard-000000.tar (about --shard-size samples each) and index.json, for millions of images"),
}
