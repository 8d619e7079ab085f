"""Reading a table a user gives (``--metadata``, ``label --from-csv``): CSV in UTF-8 (a BOM allowed), any field
length a real table can have; a file in another encoding, or not CSV, is one ``StepError`` naming the file and
the line, never a traceback."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Iterator

from .errors import StepError

_WIDE_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16"}


def table_rows(path: Path, what: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every row of the CSV file ``path``, the header first; ``what`` names the option in
    an error (``--metadata``)."""
    path = Path(path)
    with open(path, "rb") as raw:
        start = raw.read(4)
    for bom, encoding in _WIDE_BOMS.items():
        if start.startswith(bom):
            raise StepError(f"{what} {path}: the file is {encoding}; save it as UTF-8 (most spreadsheet programs offer "
                            f"'CSV UTF-8')")
    csv.field_size_limit(sys.maxsize)  # a path or a label string may be long; there is no reason to cap a field
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        try:
            for row in reader:
                yield reader.line_num, row
        except UnicodeDecodeError:
            raise StepError(f"{what} {path} line {_first_bad_line(path)}: not UTF-8 text; save the table as UTF-8") from None
        except csv.Error as exc:
            raise StepError(f"{what} {path} line {reader.line_num}: not a valid CSV row ({exc})") from None


def _first_bad_line(path: Path) -> int:
    """The number of the first line of ``path`` that is not UTF-8."""
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 1
