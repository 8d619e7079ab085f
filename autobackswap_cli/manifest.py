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

from .images import TEMP_PREFIX, atomic_file

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
            self.path, self._file = Path(name), os.fdopen(fd, "w", newline="")
            self._writer = csv.writer(self._file, lineterminator="\n")
        self._writer.writerows([row[f] for f in self.fields] for row in rows)

    def write_sorted(self, manifest: Path) -> int:
        """Write ``manifest`` (header, then every row sorted by its first field) atomically; the number of rows."""
        if self._file is not None:
            self._file.close()
            self._file = None
        count = 0
        with atomic_file(manifest, "w", newline="") as out, ExitStack() as stack:
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
    with open(spool, newline="") as f:
        reader = csv.reader(f)
        while chunk := list(islice(reader, SORT_CHUNK_ROWS)):
            chunk.sort(key=lambda row: row[0])
            fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX + "manifest-run-", suffix=".csv", dir=folder)
            with os.fdopen(fd, "w", newline="") as run:
                csv.writer(run, lineterminator="\n").writerows(chunk)
            runs.append(Path(name))
    for run in runs:
        stack.callback(run.unlink, missing_ok=True)
    readers = [csv.reader(stack.enter_context(open(run, newline=""))) for run in runs]
    yield from heapq.merge(*readers, key=lambda row: row[0])
