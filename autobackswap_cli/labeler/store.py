"""What the labelling page reads and writes: the selection, the grids, progress.

The selection (``--count N`` images, stratified over classes, seeded) is kept in
LABELS/labeler.json, so a second run resumes with the same images; a larger
``--count`` later adds images, a skipped image is replaced by another of its class.

Saving is a three-way merge per image, under one lock: a request carries the grid
it started from (``base``) and the grid it wants; only the cells it changed are
written over what is on disk now. Two tabs painting the same image therefore both
keep their strokes (where both painted the same cell, the later save wins), and a
save never touches another image's file. A request without ``base`` replaces the
whole grid (last write wins for that image). Every write goes through a temporary
file and an atomic rename.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..engine import DatasetLayout, StepError, build_record
from ..images import ImageError, ImageItem, encode_image, is_inside, read_image, write_bytes_atomic
from ..formats.label_format import (BACKGROUND, DEFAULT_GRID, FOREGROUND, LABELS_INFO, UNLABELLED, LabelsInfo, label_path, read_grid, read_labels_info,
                            select_stratified, write_labels_info)

SESSION_FILE = "labeler.json"
VALID_VALUES = (BACKGROUND, UNLABELLED, FOREGROUND)


class RequestError(Exception):
    """A request the store refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Session:
    """The persisted part of a labelling session (LABELS/labeler.json)."""

    count: int
    seed: int
    images: list[str]  # item rel paths ('class/name.jpg'), in labelling order
    skipped: list[str] = field(default_factory=list)


def interleave_classes(keys: list[str], class_of=None) -> list[str]:
    """Order keys class by class in turn (a, b, c, a, b, c, ...), so any prefix of the work is balanced; a key's
    class is ``class_of(key)`` (default: its first folder)."""
    by_class: dict[str, list[str]] = {}
    for key in sorted(keys):
        by_class.setdefault(class_of(key) if class_of else key.split("/")[0], []).append(key)
    queues = list(by_class.values())
    return [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]


class GridPredictor:
    """Thresholded segmenter predictions (255 / 0 per patch), through the same code path as ``segment``."""

    def __init__(self, checkpoint: Path):
        from ..segmenter.predict import PatchPredictor

        self.checkpoint = Path(checkpoint)
        self._predictor = PatchPredictor(self.checkpoint, device="cpu")
        self.grid = self._predictor.grid
        self._lock = threading.Lock()

    def __call__(self, item: ImageItem) -> np.ndarray:
        with self._lock:
            probs = self._predictor([self._predictor.model_input(read_image(item.path))])[0]
        return np.where(probs >= 0.5, FOREGROUND, BACKGROUND).astype(np.uint8)


def resolve_grid(labels_dir: Path, grid: int | None, predictor_grid: int | None) -> int:
    """The grid size: LABELS' own, else ``--grid``, else the segmenter's, else the default; they must agree."""
    existing = read_labels_info(labels_dir).grid if (Path(labels_dir) / LABELS_INFO).exists() else None
    if existing and grid and existing != grid:
        raise StepError(f"{labels_dir} already holds {existing}x{existing} labels; --grid {grid} differs (use another folder)")
    chosen = existing or grid or predictor_grid or DEFAULT_GRID
    if predictor_grid and predictor_grid != chosen:
        raise StepError(f"the segmenter predicts {predictor_grid}x{predictor_grid} grids, the labels are {chosen}x{chosen}")
    return chosen


class LabelStore:
    """The images to label, their grids on disk, and the session; safe to use from many threads."""

    def __init__(self, data_dir: Path, labels_dir: Path, items: list[ImageItem], count: int | None = None, seed: int = 0, grid: int | None = None,
                 segmenter: Path | None = None, first: list[str] | None = None, layout: DatasetLayout | None = None):
        self.data_dir = Path(data_dir)
        self.layout = layout or DatasetLayout()  # DATA's class rule, for the run record
        self.labels_dir = Path(labels_dir)
        self.predictor = GridPredictor(segmenter) if segmenter else None
        self.grid = resolve_grid(self.labels_dir, grid, self.predictor.grid if self.predictor else None)
        self.items = {str(it.rel): it for it in items}
        self.notes: list[str] = []
        self._lock = threading.RLock()
        self._predicted: dict[str, np.ndarray] = {}
        self.labels_dir.mkdir(parents=True, exist_ok=True)
        self.session = self._open_session(count, seed) if first is None else self._open_picked(first, seed)
        self.state = {rel: self._state_on_disk(rel) for rel in self.session.images}
        self.labelled = {rel for rel in self.items if label_path(self.labels_dir, rel).exists()}
        self._info = self._open_info()

    # ------------------------------------------------------------------ session

    def _class_of(self, rel: str) -> str:
        return self.items[rel].cls

    def _open_session(self, count: int | None, seed: int) -> Session:
        path = self.labels_dir / SESSION_FILE
        keys = list(self.items)
        if not path.exists():
            wanted = len(keys) if count is None else count
            session = Session(count=wanted, seed=seed, images=interleave_classes(select_stratified(keys, wanted, seed, self._class_of), self._class_of))
            self._write_session(session)
            return session
        try:
            saved = json.loads(path.read_text())
            session = Session(count=int(saved["count"]), seed=int(saved["seed"]), images=list(saved["images"]), skipped=list(saved.get("skipped", [])))
        except (ValueError, KeyError, TypeError) as exc:
            raise StepError(f"{path} is damaged ({exc}); delete it to choose the images anew (the labels stay)") from exc
        wanted = session.count if count is None else count
        if seed != session.seed:
            self.notes.append(f"resuming the saved selection (seed {session.seed}); --seed {seed} is not used")
        if wanted > session.count:
            taken = set(session.images)
            added = interleave_classes([k for k in select_stratified(keys, wanted, session.seed, self._class_of) if k not in taken][: wanted - session.count],
                                       self._class_of)
            session.images += added
            session.count = wanted
            self.notes.append(f"--count {wanted}: {len(added)} image(s) added to the saved selection")
        elif wanted < session.count:
            self.notes.append(f"resuming the saved selection of {session.count} images; --count {wanted} is not used")
        missing = [k for k in session.images if k not in self.items]
        if missing:
            self.notes.append(f"{len(missing)} image(s) of the saved selection are no longer in DATA: {', '.join(missing[:5])}")
            session.images = [k for k in session.images if k in self.items]
            session.skipped = [k for k in session.skipped if k in self.items]
        self._write_session(session)
        return session

    def _open_picked(self, picked: list[str], seed: int) -> Session:
        """``--pick uncertain``: the saved selection (or the images labelled so far) with ``picked`` served next,
        before any other image still to label."""
        path = self.labels_dir / SESSION_FILE
        session = self._open_session(None, seed) if path.exists() else Session(count=0, seed=seed, images=[])
        labelled = [rel for rel in self.items if label_path(self.labels_dir, rel).exists() and rel not in session.images]
        images = [rel for rel in session.images + sorted(labelled) if rel not in picked]
        started = [rel for rel in images if label_path(self.labels_dir, rel).exists()]
        rest = [rel for rel in images if rel not in started]
        session.images = started + list(picked) + rest
        session.count = len(session.images)
        if picked:
            self.notes.append(f"--pick uncertain: {len(picked)} image(s) the segmenter is least sure of come next")
        self._write_session(session)
        return session

    def _write_session(self, session: Session) -> None:
        payload = {"count": session.count, "seed": session.seed, "images": session.images, "skipped": session.skipped}
        write_bytes_atomic(self.labels_dir / SESSION_FILE, (json.dumps(payload, indent=1) + "\n").encode())

    def _open_info(self) -> LabelsInfo:
        if (self.labels_dir / LABELS_INFO).exists():
            info = read_labels_info(self.labels_dir)
        else:
            info = LabelsInfo(grid=self.grid, source=str(self.data_dir), method="interactive")
        info.count = len(self.labelled)
        write_labels_info(self.labels_dir, info)
        return info

    # ------------------------------------------------------------------ paths

    def item(self, rel: str) -> ImageItem:
        """The selected item named by ``rel``; traversal and unknown names are refused."""
        parts = rel.split("/")
        if not rel or "\\" in rel or "\x00" in rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise RequestError(400, f"bad image path: {rel!r}")
        if rel not in self.state:
            raise RequestError(404, f"not an image of this labelling session: {rel!r}")
        return self.items[rel]

    def image_path(self, rel: str) -> Path:
        path = self.item(rel).path
        if not is_inside(path, self.data_dir):
            raise RequestError(403, f"{rel} points outside {self.data_dir}")
        return path

    def _label_file(self, rel: str) -> Path:
        path = label_path(self.labels_dir, self.items[rel])
        if not is_inside(path, self.labels_dir):
            raise RequestError(403, f"the label file of {rel} would lie outside {self.labels_dir}")
        return path

    # ------------------------------------------------------------------ grids

    def _state_on_disk(self, rel: str) -> str:
        path = label_path(self.labels_dir, self.items[rel])
        if not path.exists():
            return "todo"
        try:
            grid = read_grid(path, self.grid)
        except (ImageError, OSError) as exc:
            raise StepError(f"unreadable label file {path}: {exc}") from exc
        return "partial" if (grid == UNLABELLED).any() else "done"

    def _prediction(self, rel: str) -> np.ndarray:
        if rel not in self._predicted:
            self._predicted[rel] = self.predictor(self.items[rel])
        return self._predicted[rel].copy()

    def _start_grid(self, rel: str) -> tuple[np.ndarray, str]:
        """The grid an image starts from: its saved labels, else the model's prediction, else all unlabelled."""
        path = self._label_file(rel)
        if path.exists():
            return read_grid(path, self.grid), "saved"
        if self.predictor is None:
            return np.full((self.grid, self.grid), UNLABELLED, np.uint8), "empty"
        return self._prediction(rel), "model"

    def get_grid(self, rel: str) -> dict:
        self.item(rel)
        if self.predictor is not None:
            self._prediction(rel)  # outside the lock: saves go on while the model runs
        with self._lock:
            grid, source = self._start_grid(rel)
        return {"rel": rel, "grid": grid.tolist(), "source": source, "state": self._state(rel)}

    def put_grid(self, rel: str, body: object) -> dict:
        """Save a grid (merged onto the current one when ``base`` is given); returns the saved grid and progress."""
        self.item(rel)
        if not isinstance(body, dict) or "grid" not in body:
            raise RequestError(400, 'expected a JSON object {"grid": [[...], ...], "base": [[...], ...] (optional)}')
        wanted = self._parse_grid(body["grid"], "grid")
        base = self._parse_grid(body["base"], "base") if body.get("base") is not None else None
        with self._lock:
            current, _ = self._start_grid(rel)
            if base is None:
                current = wanted
            else:
                changed = wanted != base
                current[changed] = wanted[changed]
            self._write(rel, current)
            if rel in self.session.skipped:
                self.session.skipped.remove(rel)
                self._write_session(self.session)
            return {"rel": rel, "grid": current.tolist(), "state": self.state[rel], "progress": self._progress()}

    def _parse_grid(self, value: object, name: str) -> np.ndarray:
        p = self.grid
        if not (isinstance(value, list) and len(value) == p and all(isinstance(row, list) and len(row) == p for row in value)):
            raise RequestError(400, f"{name} must be {p} rows of {p} values")
        if not all(type(v) is int and v in VALID_VALUES for row in value for v in row):
            raise RequestError(400, f"{name} values must be 0 (background), 128 (not labelled) or 255 (foreground)")
        return np.asarray(value, np.uint8)

    def _write(self, rel: str, grid: np.ndarray) -> None:
        """Write (or, when nothing is labelled, remove) the label file; caller holds the lock."""
        path = self._label_file(rel)
        if (grid == UNLABELLED).all():
            path.unlink(missing_ok=True)
            self.labelled.discard(rel)
            self.state[rel] = "todo"
        else:
            write_bytes_atomic(path, encode_image(grid, ".png"))
            self.labelled.add(rel)
            self.state[rel] = "partial" if (grid == UNLABELLED).any() else "done"
        if self._info.count != len(self.labelled):
            self._info.count = len(self.labelled)
            write_labels_info(self.labels_dir, self._info)

    # ------------------------------------------------------------------ skipping and progress

    def skip(self, rel: str) -> dict:
        """Leave an image out (its labels, if any, stay on disk) and add an unused image of its class instead."""
        item = self.item(rel)
        with self._lock:
            if rel not in self.session.skipped:
                self.session.skipped.append(rel)
                unused = sorted(k for k, it in self.items.items() if it.cls == item.cls and k not in self.state)
                if unused:
                    extra = random.Random(f"{self.session.seed}/{rel}").choice(unused)
                    self.session.images.append(extra)
                    self.state[extra] = self._state_on_disk(extra)
                self._write_session(self.session)
            return self.summary()

    def _state(self, rel: str) -> str:
        return "skipped" if rel in self.session.skipped else self.state[rel]

    def _progress(self) -> dict:
        classes: dict[str, list[int]] = {}
        for rel in self.session.images:
            if rel in self.session.skipped:
                continue
            tally = classes.setdefault(self.items[rel].cls, [0, 0])
            tally[0] += self.state[rel] == "done"
            tally[1] += 1
        return {"done": sum(d for d, _ in classes.values()), "total": sum(t for _, t in classes.values()), "classes": classes}

    def summary(self) -> dict:
        """The session as the page sees it: images in order with their state, where to resume, progress."""
        with self._lock:
            images = [{"rel": rel, "cls": self.items[rel].cls, "state": self._state(rel)} for rel in self.session.images]
            resume = next((i for i, im in enumerate(images) if im["state"] in ("todo", "partial")), 0)
            return {"grid": self.grid, "assisted": self.predictor is not None, "images": images, "resume": resume, "progress": self._progress()}

    def run_record(self, started: float, interrupted: bool = False) -> dict:
        progress = self._progress()
        return build_record(
            "label", status="interrupted" if interrupted else "completed", wall_time_s=time.time() - started, method="interactive",
            options={"count": self.session.count, "seed": self.session.seed, "grid": self.grid,
                     "segmenter": str(self.predictor.checkpoint) if self.predictor else None, "layout": self.layout.recorded()},
            counts={"total": progress["total"], "done": progress["done"], "skipped": len(self.session.skipped), "labelled_in_folder": len(self.labelled)},
        )
