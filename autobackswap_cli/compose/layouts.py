"""compose's output layouts: how the composites the step makes are written, and what marks them finished.

``OUTPUT_LAYOUTS`` (``--output-layout``) names each one: its writer class and a line of help. A writer is built by
the step with the step itself (``writer(step)``) and takes the step's output hooks: ``plan_items``,
``known_finished``, ``outputs``, ``write`` (in workers), ``collect`` and ``finish`` (main process) and
``recorded_results``.

* ``imagefolder`` (``ImageFiles``): one image file per composite under ``OUT/<class>/``, the step's ``manifest.csv``
  and its journal (fast resume);
* ``webdataset`` (``TarShards``): samples in tar shards of about ``shard_size`` samples (whole images: an image's
  composites share a tar). A tar is written, whole, when the last of its images is composed; an existing tar marks
  its images finished (resume at tar granularity). ``index.json`` lists the tars (wids' format, plus size and SHA-256).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np

from ..engine import RunReport, console
from ..images import TEXT, ImageError, ImageItem, encode_image, mirror_path, preview_grid, read_image, spread_sample, write_bytes_atomic, write_image_atomic
from ..tarshards import Sample, TarSpool, describe_tar, read_index, sample_key, write_index

if TYPE_CHECKING:
    from .step import ComposeStep

class ImageFiles:
    """``--output-layout imagefolder``: each composite an image file (and, with ``--include-originals``, the
    original beside them); the step's manifest and journal say what is finished."""

    def __init__(self, step: ComposeStep):
        self.step = step

    def plan_items(self, items: Sequence[ImageItem], mine: Sequence[ImageItem], shard) -> None:
        """Open this shard's journal (it names the items earlier runs finished)."""
        self.step.open_journal(shard, mine)

    def known_finished(self, mine: Sequence[ImageItem]) -> set[str] | None:
        """The keys the journal says are finished (None without one: the engine checks the files)."""
        return self.step.earlier

    def outputs(self, item: ImageItem) -> list[Path]:
        """The item's planned composites (and its copy with ``--include-originals``)."""
        step = self.step
        try:
            paths = [step.out_dir / Path(c.output) for c in step.plan(item)]
        except ImageError:
            return []  # no background to plan with: the item runs, and fails with the reason
        if step.options.include_originals:
            paths.append(mirror_path(step.out_dir, item.class_rel))
        return paths

    def write(self, item: ImageItem, results: list[tuple[Path, np.ndarray, dict]]) -> list[dict]:
        """Worker: the image files; their manifest rows go back to ``collect``."""
        for path, array, _ in results:
            write_image_atomic(path, array, quality=self.step.options.quality)
        if self.step.options.include_originals:
            write_bytes_atomic(mirror_path(self.step.out_dir, item.class_rel), item.path.read_bytes())
        return [row for _, _, row in results]

    def collect(self, item: ImageItem, rows: list[dict]) -> None:
        """The item's manifest rows, to the manifest's spool and the journal."""
        self.step.record_rows(item, rows)

    def finish(self, report: RunReport, items: Sequence[ImageItem]) -> None:
        """The manifest of every composite of this shard on disk, then the preview (composites spread over it)."""
        step = self.step
        manifest = step.write_manifest(report, items)
        if step.preview and step.manifest_count:
            tiles = [read_image(step.out_dir / output) for output in _spread_outputs(manifest, step.manifest_count, step.preview_count)]
            write_image_atomic(Path(step.preview), preview_grid(tiles))
            console.print(f"preview: {step.preview}")

    def recorded_results(self) -> dict:
        """How many composites the manifest lists."""
        return {"composites_in_manifest": self.step.manifest_count}


def _spread_outputs(manifest: Path, count: int, wanted: int) -> list[str]:
    """The outputs of ``wanted`` rows evenly spaced over a manifest of ``count`` rows (read as a stream)."""
    chosen = set(spread_sample(range(count), wanted))
    with open(manifest, newline="", **TEXT) as f:
        return [row["output"] for i, row in enumerate(csv.DictReader(f)) if i in chosen]


class TarShards:
    """``--output-layout webdataset``: the same composites, as samples in tar shards (see the module docstring)."""

    def __init__(self, step: ComposeStep):
        self.step = step
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
        """Group this shard's items into tars (in order, whole images) and number the classes."""
        per_tar = max(1, self.step.options.shard_size // self.step.options.per_image)
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
        return self.step.out_dir / f"{self.prefix}{number:06d}.tar"

    def outputs(self, item: ImageItem) -> list[Path]:
        """The item's tar: once it exists, the item is finished."""
        return [self.tar_path(self.tar_of[item.key])]

    def write(self, item: ImageItem, results: list[tuple[Path, np.ndarray, dict]]) -> list[Sample]:
        """Worker: encode the composites; the main process puts them in their tar."""
        samples = []
        for path, array, row in results:
            ext = path.suffix.lstrip(".").lower()
            samples.append(Sample(sample_key(row["output"]), ext, encode_image(array, ext, self.step.options.quality), self.class_index[item.cls], row))
        return samples

    def collect(self, item: ImageItem, samples: list[Sample]) -> None:
        """Spool the samples for their tar (and the preview); write the tar once its last image is in."""
        number = self.tar_of[item.key]
        spool = self.pending.get(number)
        if spool is None:
            spool = self.pending[number] = TarSpool(self.step.out_dir)
        for sample in samples:
            spool.add(sample)
        self._keep_for_preview(samples)
        self.arrived[number] = self.arrived.get(number, 0) + 1
        if self.arrived[number] == self.tar_images[number]:
            self._write(number)

    def _keep_for_preview(self, samples: list[Sample]) -> None:
        step = self.step
        if step.preview and len(self.preview_tiles) < step.preview_count:
            for sample in samples[: step.preview_count - len(self.preview_tiles)]:
                bgr = cv2.imdecode(np.frombuffer(sample.image, np.uint8), cv2.IMREAD_COLOR)
                self.preview_tiles.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

    def _write(self, number: int) -> None:
        spool = self.pending.pop(number)
        self.written[self.tar_path(number).name] = spool.write(self.tar_path(number))
        self.samples += len(spool)

    def finish(self, report: RunReport, items: Sequence[ImageItem]) -> None:
        """Write the tars some of whose images failed (with the samples that were made), then the index of every
        tar of this shard on disk."""
        step = self.step
        for number in sorted(self.pending):
            self._write(number)
        index_path = step.out_dir / f"index{report.shard.file_suffix}.json"
        known = read_index(index_path)
        entries = []
        for number in sorted(set(self.tar_of.values())):
            name = self.tar_path(number).name
            if name in self.written:
                entries.append(self.written[name])
            elif self.tar_path(number).exists():
                entries.append(known.get(name) or describe_tar(self.tar_path(number)))
        write_index(index_path, entries, name=step.out_dir.name)
        step.manifest_count = sum(e["nsamples"] for e in entries)
        if step.preview and self.preview_tiles:
            write_image_atomic(Path(step.preview), preview_grid(self.preview_tiles))
            console.print(f"preview: {step.preview}")

    def recorded_results(self) -> dict:
        """Samples in this shard's tars, and how many of them this run wrote."""
        return {"samples": self.step.manifest_count, "samples_this_run": self.samples}


# --output-layout NAME -> (writer class, help)
OUTPUT_LAYOUTS = {
    "imagefolder": (ImageFiles, "image files under OUT/<class>/ and manifest.csv"),
    "webdataset": (TarShards, "tar shards OUT/shard-000000.tar (about --shard-size samples each) and index.json, for millions of images"),
}
