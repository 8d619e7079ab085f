"""``label``'s importers and the reference ``masks.csv`` exporter; the LABELS format itself is ``label_format``.

Importers turn other annotations into LABELS grids:

* ``--from-masks DIR``  pixel masks mirroring DATA (a patch is foreground when the
  mean of its pixels is at least ``threshold``);
* ``--from-csv FILE``   the reference implementation's ``info,mask`` rows (mask: P*P
  characters '0'/'1', row-major, '1' = foreground);
* ``--from-coco FILE``  COCO instances JSON (polygons, uncompressed and compressed RLE);
  all annotations of an image together form its foreground.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np
from PIL import Image

from .engine import Dataset, Step, StepError, console, metadata_table, run_step
from .engine.tables import table_rows
from .images import IMAGE_EXTENSIONS, ImageError, ImageItem, image_size, write_bytes_atomic
from .formats.label_format import (BACKGROUND, DEFAULT_GRID, FOREGROUND, LABELS_INFO, UNLABELLED, LabelsInfo, grid_from_mask, grid_from_string, grid_to_string,
                           label_path, labelled_items, read_grid, read_labels_info, select_stratified, write_grid, write_labels_info)

__all__ = [  # the format's names too, for callers from before label_format
    "BACKGROUND", "DEFAULT_GRID", "FOREGROUND", "LABELS_INFO", "UNLABELLED", "LabelsInfo", "grid_from_mask", "grid_from_string", "grid_to_string",
    "label_path", "labelled_items", "read_grid", "read_labels_info", "select_stratified", "write_grid", "write_labels_info",
    "ImportRequest", "LabelImportStep", "LabelSource", "coco_mask", "decode_coco_rle", "export_csv", "import_labels", "reference_names",
    "source_from_coco", "source_from_csv", "source_from_masks",
]


# --------------------------------------------------------------------------- COCO


def decode_coco_rle(counts: str | list[int], h: int, w: int) -> np.ndarray:
    """COCO RLE (compressed string or list of run lengths, column-major) -> HxW uint8 0/1."""
    if isinstance(counts, (bytes, str)):
        s = counts.encode() if isinstance(counts, str) else counts
        runs: list[int] = []
        p = 0
        while p < len(s):
            x, k, more = 0, 0, True
            while more:
                c = s[p] - 48
                x |= (c & 0x1F) << (5 * k)
                more = bool(c & 0x20)
                p += 1
                k += 1
                if not more and (c & 0x10):
                    x |= -1 << (5 * k)
            if len(runs) > 2:
                x += runs[-2]
            runs.append(x)
    else:
        runs = [int(v) for v in counts]
    if sum(runs) != h * w:
        raise ValueError(f"RLE covers {sum(runs)} pixels, the image has {h * w}")
    flat = np.zeros(h * w, np.uint8)
    pos, value = 0, 0
    for run in runs:
        if value:
            flat[pos : pos + run] = 1
        pos += run
        value ^= 1
    return flat.reshape(w, h).T.copy()


def coco_mask(annotations: Iterable[dict], h: int, w: int) -> np.ndarray:
    """Union of an image's COCO segmentations -> HxW float mask in {0, 1}."""
    mask = np.zeros((h, w), np.uint8)
    for ann in annotations:
        seg = ann.get("segmentation")
        if isinstance(seg, list):
            for poly in seg:
                pts = np.asarray(poly, np.float64).reshape(-1, 2)
                if len(pts) >= 3:
                    cv2.fillPoly(mask, [np.rint(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
        elif isinstance(seg, dict) and "counts" in seg:
            rh, rw = seg.get("size", [h, w])
            part = decode_coco_rle(seg["counts"], int(rh), int(rw))
            if part.shape != (h, w):
                raise ValueError(f"RLE size {rw}x{rh} differs from the image entry {w}x{h}")
            mask |= part
    return mask.astype(np.float32)


# --------------------------------------------------------------------------- sources


class _Matcher:
    """Maps names found in annotation files to DATA items: a path under DATA ('cls/name.jpg', with or without the
    extension or a leading '/'), or any unambiguous tail of one ('0/snow/labrador/x.png' under DATA = spawrious224,
    'name.jpg', 'name')."""

    def __init__(self, items: Sequence[ImageItem]):
        self.by_key: dict[str, ImageItem] = {}
        ambiguous: set[str] = set()
        for it in items:
            for k in (str(it.rel), it.key):
                self.by_key[k.lower()] = it
            for path in (str(it.rel).lower(), it.key.lower()):
                parts = path.split("/")
                for n in range(1, len(parts)):
                    k = "/".join(parts[n:])
                    if k in self.by_key and self.by_key[k] is not it:
                        ambiguous.add(k)
                    self.by_key.setdefault(k, it)
        for it in items:  # a whole path always names its own item
            for k in (str(it.rel), it.key):
                ambiguous.discard(k.lower())
                self.by_key[k.lower()] = it
        for k in ambiguous:
            self.by_key.pop(k, None)

    def find(self, name: str) -> ImageItem | None:
        name = str(name).replace("\\", "/").strip().lstrip("./").lower()
        hit = self.by_key.get(name)
        if hit is None and "/" in name:  # absolute or longer paths: try the tail
            parts = name.split("/")
            for n in range(len(parts) - 1, 0, -1):
                hit = self.by_key.get("/".join(parts[-n:]))
                if hit is not None:
                    break
        return hit


@dataclass
class LabelSource:
    """Where grids come from: one of the importers. ``available`` lists the items it can label."""

    method: str
    source: str
    grid: int
    threshold: float = 0.25
    masks_dir: Path | None = None
    rows: dict[str, str] = field(default_factory=dict)  # item rel -> '0'/'1' string (csv)
    coco: dict[str, tuple[int, int, list]] = field(default_factory=dict)  # item rel -> (h, w, annotations)
    available: list[ImageItem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    info_form: str = "path"  # csv: how its rows named images: path, /path (a leading '/') or id

    def grid_for(self, item: ImageItem) -> np.ndarray:
        if self.method == "from-masks":
            path = _find_mask_file(self.masks_dir, item)
            with Image.open(path) as img:
                raw = np.asarray(img.convert("L"), dtype=np.float32)
            mask = raw if raw.max(initial=0) <= 1 else raw / 255.0
            w, h = image_size(item.path)
            if mask.shape != (h, w):
                raise ImageError(f"mask {path.name} is {mask.shape[1]}x{mask.shape[0]}, image is {w}x{h}")
            return grid_from_mask(mask, self.grid, self.threshold)
        if self.method == "from-csv":
            return grid_from_string(self.rows[str(item.rel)], self.grid)
        if self.method == "from-coco":
            h, w, anns = self.coco[str(item.rel)]
            iw, ih = image_size(item.path)
            if (ih, iw) != (h, w):
                raise ImageError(f"COCO says {w}x{h}, the image is {iw}x{ih}")
            return grid_from_mask(coco_mask(anns, h, w), self.grid, self.threshold)
        raise ValueError(self.method)


def _find_mask_file(masks_dir: Path, item: ImageItem) -> Path | None:
    for ext in (".png", *sorted(IMAGE_EXTENSIONS - {".png"})):
        for cand in (Path(masks_dir) / f"{item.key}{ext}", Path(masks_dir) / f"{item.key}{ext.upper()}"):
            if cand.exists():
                return cand
    return None


def source_from_masks(masks_dir: Path, items: Sequence[ImageItem], grid: int, threshold: float) -> LabelSource:
    masks_dir = Path(masks_dir)
    if not masks_dir.is_dir():
        raise StepError(f"--from-masks: folder not found: {masks_dir}")
    src = LabelSource("from-masks", str(masks_dir), grid, threshold, masks_dir=masks_dir)
    src.available = [it for it in items if _find_mask_file(masks_dir, it) is not None]
    return src


def source_from_csv(csv_path: Path, items: Sequence[ImageItem], grid: int | None, ids: dict[str, str] | None = None) -> LabelSource:
    """The reference ``info,mask`` rows. ``info`` is a path (under DATA, or a tail of one, e.g. Spawrious'
    '/0/snow/labrador/x.png') or, with ``ids`` (a metadata table's id -> path), an image id (Waterbirds' img_id).
    Rows that name no image, and a second row for an image, are warnings naming their lines."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise StepError(f"--from-csv: file not found: {csv_path}")
    matcher = _Matcher(items)
    table = table_rows(csv_path, "--from-csv")
    _, header = next(table, (1, []))
    names = [h.strip() for h in header]
    if not {"info", "mask"} <= set(names):
        raise StepError(f"--from-csv: {csv_path} needs the columns 'info,mask' (found {header})")
    rows = [(line, {k: v.strip() for k, v in zip(names, row) if k}) for line, row in table if any(v.strip() for v in row)]
    for line, r in rows:
        if "info" not in r or "mask" not in r:
            raise StepError(f"--from-csv: {csv_path} line {line}: {len(r)} field(s), the header has {len(header)}")
    if not rows:
        raise StepError(f"--from-csv: {csv_path} has no rows")
    p = grid or int(round(math.sqrt(max(len(r["mask"]) for _, r in rows))))
    src = LabelSource("from-csv", str(csv_path), p)
    unmatched, repeated, by_id, first = [], [], 0, {}
    for line, r in rows:
        name = r["info"]
        if ids is not None and name in ids:
            name, by_id = ids[name], by_id + 1
        item = matcher.find(name)
        if item is None:
            unmatched.append(f"line {line} ({r['info']}{', not an id of the metadata' if ids is not None and r['info'].isdigit() else ''})")
        elif str(item.rel) in src.rows:
            repeated.append(f"line {line} ({r['info']}: {item.rel} again, first on line {first[str(item.rel)]})")
        else:
            src.rows[str(item.rel)], first[str(item.rel)] = r["mask"], line
            src.available.append(item)
    src.info_form = "id" if by_id else ("/path" if all(r["info"].startswith("/") for _, r in rows) else "path")
    if unmatched:
        src.warnings.append(f"{len(unmatched)} row(s) of {csv_path.name} name no image in DATA: {_listed(unmatched)}")
    if repeated:
        src.warnings.append(f"{len(repeated)} row(s) of {csv_path.name} label an image a second time (the first row is kept): {_listed(repeated)}")
    return src


def _listed(names: Sequence[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f" ... ({len(names) - shown} more)" if len(names) > shown else "")


def source_from_coco(json_path: Path, items: Sequence[ImageItem], grid: int, threshold: float) -> LabelSource:
    json_path = Path(json_path)
    if not json_path.is_file():
        raise StepError(f"--from-coco: file not found: {json_path}")
    try:
        data = json.loads(json_path.read_text())
        images = {im["id"]: im for im in data["images"]}
        anns: dict = {}
        for a in data.get("annotations", []):
            anns.setdefault(a["image_id"], []).append(a)
    except (ValueError, KeyError, TypeError) as exc:
        raise StepError(f"--from-coco: {json_path} is not a COCO instances file: {exc}") from exc
    matcher = _Matcher(items)
    src = LabelSource("from-coco", str(json_path), grid, threshold)
    unmatched = []
    for image_id, im in images.items():
        item = matcher.find(im["file_name"])
        if item is None:
            unmatched.append(im["file_name"])
            continue
        src.coco[str(item.rel)] = (int(im["height"]), int(im["width"]), anns.get(image_id, []))
        src.available.append(item)
    if unmatched:
        src.warnings.append(f"{len(unmatched)} image(s) of {json_path.name} are not in DATA: {', '.join(unmatched[:5])}")
    return src


# --------------------------------------------------------------------------- the import step


class LabelImportStep(Step):
    """Writes LABELS/<class>/<name>.png for each item the source can label."""

    name = "label"

    def __init__(self, source: LabelSource, out_dir: Path):
        self.source = source
        self.out_dir = Path(out_dir)

    def outputs(self, item: ImageItem) -> list[Path]:
        return [label_path(self.out_dir, item)]

    def process(self, item: ImageItem) -> np.ndarray:
        return self.source.grid_for(item)

    def write(self, item: ImageItem, grid: np.ndarray) -> None:
        write_grid(label_path(self.out_dir, item), grid)

    def recorded_options(self) -> dict:
        return {"method": self.source.method, "source": self.source.source, "grid": self.source.grid, "threshold": self.source.threshold}


def _id_table(data: Dataset):
    """DATA's metadata table (``--metadata``) when it has an image id column, else None."""
    if data.layout.metadata is None:
        return None
    table = metadata_table(data.layout, data.root, ids=True)
    return table if "id" in table.columns else None


def reference_names(labels_dir: Path, data: Dataset) -> Callable[[ImageItem], str]:
    """How an exported row names its image, as the reference implementation reads it back: the metadata's image
    id (Waterbirds; labels imported by id, or made here, with ``--metadata`` that has ids), a path with a leading
    '/' (labels imported from such rows: Spawrious), else the path under DATA."""
    form = read_labels_info(labels_dir).extra.get("csv_info")
    table = _id_table(data) if form in (None, "id") else None
    if table is not None:
        return lambda item: table.paths.get(item.key, str(item.rel))
    if form == "/path":
        return lambda item: "/" + str(item.rel)
    return lambda item: str(item.rel)


def export_csv(labels_dir: Path, items: Sequence[ImageItem], csv_path: Path, grid: int | None = None,
               name_of: Callable[[ImageItem], str] = lambda item: str(item.rel)) -> tuple[int, int]:
    """Write the reference ``info,mask`` CSV for every labelled item, ``info`` = ``name_of(item)`` (see
    ``reference_names``); returns (rows, unlabelled patches written as 0)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["info", "mask"])
    rows = unlabelled = 0
    for item in items:
        path = label_path(labels_dir, item)
        if not path.exists():
            continue
        g = read_grid(path, grid)
        unlabelled += int((g == UNLABELLED).sum())
        writer.writerow([name_of(item), grid_to_string(g)])
        rows += 1
    write_bytes_atomic(Path(csv_path), buf.getvalue().encode())
    return rows, unlabelled


@dataclass
class ImportRequest:
    """What ``label --from-*`` asked for: one source (``kind`` masks|csv|coco and its path) and the selection."""

    kind: str
    path: Path
    grid: int | None = None
    threshold: float = 0.25
    count: int | None = None
    seed: int = 0
    choose: Callable[[Sequence[ImageItem]], set[str]] | None = None  # which available items to import (rel); None: ``count``


def import_labels(data: Dataset, out_dir: Path, items: Sequence[ImageItem], request: ImportRequest, options, warnings: Sequence[str] = ()):
    """Turn masks / a masks.csv / COCO into LABELS through the engine, then write labels.json; returns the run
    report. ``count`` picks that many labelled images, stratified over classes; ``choose`` (``--pick uncertain``)
    picks them instead, from the images the source labels."""
    if request.kind == "masks":
        source = source_from_masks(request.path, items, request.grid or DEFAULT_GRID, request.threshold)
    elif request.kind == "csv":
        table = _id_table(data)
        source = source_from_csv(request.path, items, request.grid, table.ids if table else None)
    else:
        source = source_from_coco(request.path, items, request.grid or DEFAULT_GRID, request.threshold)
    for w in source.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    targets = source.available
    if request.choose is not None:
        keep = request.choose(targets)
        targets = [it for it in targets if str(it.rel) in keep]
    elif request.count is not None:
        class_of = {str(it.rel): it.cls for it in targets}
        keep = set(select_stratified(list(class_of), request.count, request.seed, class_of.get))
        targets = [it for it in targets if str(it.rel) in keep]
    if not targets:
        raise StepError(f"{source.source} labels none of the images in {data.root}")
    existing = read_labels_info(out_dir) if (Path(out_dir) / LABELS_INFO).exists() else None
    if existing and existing.grid != source.grid:
        raise StepError(f"{out_dir} already holds {existing.grid}x{existing.grid} labels; this import makes {source.grid}x{source.grid} (use another folder)")
    report = run_step(LabelImportStep(source, out_dir), targets, options, [*warnings, *source.warnings], layout=data.layout)
    labelled = sum(1 for it in items if label_path(out_dir, it).exists())
    write_labels_info(out_dir, LabelsInfo(grid=source.grid, source=source.source, method=source.method,
                                          threshold=source.threshold if source.method != "from-csv" else None, count=labelled,
                                          extra={"csv_info": source.info_form} if source.method == "from-csv" else {}))
    return report
