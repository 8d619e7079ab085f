"""MASKS/mask_quality.csv: how likely each mask is right, one row per segmented image.

``segment`` writes it (``image,confidence``: the image's path relative to DATA, as the masks mirror it, and a
confidence in [0, 1], higher = more likely right); ``compose`` leaves out the images below ``--min-confidence``,
``label --pick uncertain`` aims labels at the lowest, ``segment --preview`` shows them first.

Each mask also carries its own confidence in its PNG (a tEXt note, ``CONFIDENCE_NOTE``), written with it in one
atomic file, so a resumed run or a shard rebuilds the table from the masks without redoing them. Shards of one
MASKS folder each merge their rows into the one table under a lock (``update_mask_quality``): when every shard has
finished, the table holds every image.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

from ..engine.errors import StepError
from ..engine.record import RUN_RECORD
from ..images import TEXT, atomic_file

QUALITY_FILE = "mask_quality.csv"
QUALITY_FIELDS = ("image", "confidence")
CONFIDENCE_NOTE = "autobackswap:confidence"  # the key of a mask PNG's tEXt note holding its confidence
_LOCK = ".autobackswap-mask-quality.lock"
# compose leaves out images whose mask's confidence is below this (segment records it in MASKS' run record): the
# highest threshold that leaves out at most 5 % of the images of every tuning set (benchmarks/real_photos.py
# --data-seed 1; held-out objects beside distractors: 4.7 %, holding 16 of its 37 masks with IoU < 0.5, 5 of 413
# masks with IoU >= 0.5); docs/decisions.md
DEFAULT_MIN_CONFIDENCE = 0.6


def quality_path(masks_dir: Path | str) -> Path:
    """Where a MASKS folder's confidence table lies."""
    return Path(masks_dir) / QUALITY_FILE


def format_confidence(value: float) -> str:
    """A confidence as the table and the PNG note write it (4 decimals)."""
    return f"{float(value):.4f}"


def parse_confidence(text: str) -> float | None:
    """A confidence from its text; None for anything that is not a number in [0, 1]."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and 0.0 <= value <= 1.0 else None


def read_mask_quality(masks_dir: Path | str) -> dict[str, float] | None:
    """image -> confidence from ``MASKS/mask_quality.csv``; None when the folder holds no table (masks made before
    confidences existed). A malformed table is a ``StepError`` naming the file and the line."""
    path = quality_path(masks_dir)
    if not path.exists():
        return None
    if not path.is_file():
        raise StepError(f"{path} is not a file")
    csv.field_size_limit(sys.maxsize)  # an image's path may be long; the table is ours
    rows: dict[str, float] = {}
    try:
        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or [h.strip() for h in header] != list(QUALITY_FIELDS):
                raise StepError(f"{path}, line 1: the header must be '{','.join(QUALITY_FIELDS)}', got {','.join(header or [])!r}")
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                if len(row) != 2 or not row[0]:
                    raise StepError(f"{path}, line {line}: expected 2 fields (image,confidence), got {len(row)}")
                value = parse_confidence(row[1])
                if value is None:
                    raise StepError(f"{path}, line {line}: confidence must be a number in [0, 1], got {row[1][:40]!r}")
                rows[row[0]] = value
    except csv.Error as exc:
        raise StepError(f"{path}: not a valid CSV table ({exc})") from None
    except OSError as exc:
        raise StepError(f"cannot read {path}: {exc.strerror or exc}") from None
    return rows


def update_mask_quality(masks_dir: Path | str, rows: Mapping[str, float]) -> int:
    """Merge ``rows`` (image -> confidence) into ``MASKS/mask_quality.csv``: rows of other images stay (other shards',
    earlier runs'), these replace their own. One writer at a time (a lock beside the table); the table is written
    sorted, atomically. Returns how many rows it holds."""
    path = quality_path(masks_dir)
    with _table_lock(Path(masks_dir)):
        merged = {**(read_mask_quality(masks_dir) or {}), **rows}
        with atomic_file(path, "w", newline="", **TEXT) as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(QUALITY_FIELDS)
            writer.writerows((image, format_confidence(merged[image])) for image in sorted(merged))
    return len(merged)


@contextmanager
def _table_lock(masks_dir: Path) -> Iterator[None]:
    """Wait for, then hold, the table's lock (shards finishing together take turns)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: shards are not run side by side there
        yield
        return
    fd = os.open(masks_dir / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def recorded_min_confidence(masks_dir: Path | str) -> float | None:
    """The default ``--min-confidence`` that ``segment`` recorded for a MASKS folder (None: it recorded none)."""
    try:
        recorded = json.loads((Path(masks_dir) / RUN_RECORD).read_text())["options"].get("min_confidence")
        value = recorded.get("value") if isinstance(recorded, dict) else recorded
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None
    return None if value is None or isinstance(value, bool) else parse_confidence(value)


def confidence_threshold(masks_dir: Path | str, given: float | None = None) -> tuple[float, str]:
    """The ``--min-confidence`` to apply to a MASKS folder, and where it came from: ``given`` (an option), else what
    ``segment`` recorded there, else ``DEFAULT_MIN_CONFIDENCE``."""
    if given is not None:
        return float(given), "option"
    recorded = recorded_min_confidence(masks_dir)
    if recorded is not None:
        return recorded, "masks' segment run"
    return DEFAULT_MIN_CONFIDENCE, "default"
