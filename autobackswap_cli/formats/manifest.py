"""compose's ``manifest.csv``, streamed: rows go to a spool file as items finish, and the sorted manifest is made
from it with an external merge sort, so no run holds the manifest in memory (a million images make ~3 million
rows). The manifest is sorted by output path, whatever order the items finished in.
"""

from __future__ import annotations

import csv
import heapq
import os
import tempfile
from contextlib import ExitStack
from itertools import islice
from pathlib import Path
from typing import Iterator, Sequence

from ..engine.errors import StepError
from ..images import TEMP_PREFIX, TEXT, atomic_file

SORT_CHUNK_ROWS = 200_000  # rows sorted in memory at a time (~100 MB)


class ManifestSpool:
    """Rows of one run, appended to a temporary file in the output folder (removed with other leftovers)."""

    def __init__(self, folder: Path, fields: Sequence[str]):
        self.folder, self.fields = Path(folder), list(fields)
        self.path: Path | None = None
        self._file = None
        self._writer = None

    def __getstate__(self) -> dict:  # the step travels to workers; its open file stays here
        return {**self.__dict__, "_file": None, "_writer": None}

    def add(self, rows: Sequence[dict]) -> None:
        if self._file is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX + "manifest-", suffix=".csv", dir=self.folder)
            self.path, self._file = Path(name), os.fdopen(fd, "w", newline="", **TEXT)
            self._writer = csv.writer(self._file, lineterminator="\n")
        self._writer.writerows([row[f] for f in self.fields] for row in rows)

    def add_raw(self, rows: Sequence[Sequence[str]]) -> None:
        """Rows already in field order (a journal's)."""
        self.add([dict(zip(self.fields, row)) for row in rows])

    def write_sorted(self, manifest: Path) -> int:
        """Write ``manifest`` (header, then every row sorted by its first field) atomically; the number of rows."""
        if self._file is not None:
            self._file.close()
            self._file = None
        count = 0
        with atomic_file(manifest, "w", newline="", **TEXT) as out, ExitStack() as stack:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(self.fields)
            for row in _merge_sorted(self.path, self.folder, stack) if self.path else ():
                writer.writerow(row)
                count += 1
        self.discard()
        return count

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


def _merge_sorted(spool: Path, folder: Path, stack: ExitStack) -> Iterator[list[str]]:
    """The spool's rows sorted by their first field: sorted runs of ``SORT_CHUNK_ROWS`` in temporary files,
    merged."""
    runs: list[Path] = []
    with open(spool, newline="", **TEXT) as f:
        reader = csv.reader(f)
        while chunk := list(islice(reader, SORT_CHUNK_ROWS)):
            chunk.sort(key=lambda row: row[0])
            fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX + "manifest-run-", suffix=".csv", dir=folder)
            with os.fdopen(fd, "w", newline="", **TEXT) as run:
                csv.writer(run, lineterminator="\n").writerows(chunk)
            runs.append(Path(name))
    for run in runs:
        stack.callback(run.unlink, missing_ok=True)
    readers = [csv.reader(stack.enter_context(open(run, newline="", **TEXT))) for run in runs]
    yield from heapq.merge(*readers, key=lambda row: row[0])


class Journal:
    """compose's journal of finished items: a line per item as it finishes (its key, then its manifest rows),
    appended and flushed. A rerun with the same plan (``fingerprint``: the options that name and place the
    composites) reads it to skip finished items without planning them, O(1) per item, and takes their manifest
    rows from it. A line cut short by a kill is ignored (that item is simply redone)."""

    PREFIX = ".autobackswap-journal-"

    def __init__(self, folder: Path, fields: Sequence[str], fingerprint: str, suffix: str = ""):
        self.path = Path(folder) / f"{self.PREFIX}{fingerprint}{suffix}.csv"
        self.width = len(fields)
        self._file = None
        self._writer = None
        self.lines_before = 0  # lines earlier runs wrote
        self.ignored = 0  # lines ``finished`` did not accept
        self._refuse_odd_file()

    def _refuse_odd_file(self) -> None:
        """A journal that is a symlink is removed (never followed: it would be read from, and appended to, a file
        outside OUT); one that is not a regular file is a ``StepError``."""
        if self.path.is_symlink():
            self.path.unlink()
        elif self.path.exists() and not self.path.is_file():
            raise StepError(f"the journal {self.path} is not a file; remove it (the run rebuilds it)")

    def __getstate__(self) -> dict:  # the step travels to workers; its open file stays here
        return {**self.__dict__, "_file": None, "_writer": None}

    def lines(self) -> Iterator[tuple[int, str, list[list[str]]]]:
        """(line number, key, rows) of every whole line."""
        try:
            fh = open(self.path, newline="", **TEXT)
        except FileNotFoundError:
            return
        with fh:
            reader = csv.reader(fh)
            number = 0
            while True:
                try:
                    line = next(reader)
                except StopIteration:
                    return
                except csv.Error:  # a line cut inside a quoted field
                    continue
                number += 1
                if len(line) >= 2 and line[1].isdigit() and len(line) == 2 + int(line[1]) * self.width:
                    yield number, line[0], [line[2 + i * self.width : 2 + (i + 1) * self.width] for i in range(int(line[1]))]

    def finished(self, folder: Path, exists, fits) -> set[str]:
        """Keys whose journal line ``fits`` (``fits(key, rows)``: the rows are what that item would have) and lists
        outputs that all exist (``exists(path)``); ``ignored`` counts the lines that do not fit."""
        done: set[str] = set()
        for number, key, rows in self.lines():
            self.lines_before = number
            if not fits(key, rows):
                self.ignored += 1
            elif all(exists(os.path.join(folder, row[0])) for row in rows):
                done.add(key)
        return done

    def add(self, key: str, rows: Sequence[dict], fields: Sequence[str]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._refuse_odd_file()
            self._file = open(self.path, "a", newline="", opener=_no_follow, **TEXT)
            if self._file.tell() and not _ends_with_newline(self.path):
                self._file.write("\n")  # end a line a killed run cut short
            self._writer = csv.writer(self._file, lineterminator="\n")
        self._writer.writerow([key, len(rows), *(row[f] for row in rows for f in fields)])
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _no_follow(path: str, flags: int) -> int:
    """``open``'s opener that never follows a symlink (a link put there after the check fails to open)."""
    return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), 0o666)


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"
