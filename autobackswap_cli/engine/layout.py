"""Where an item's class (and group) comes from: ``DatasetLayout``, the one class rule every scan applies.

* by default the first folder under DATA names the class (an ImageFolder);
* ``class_level=K``: the K-th folder does (Spawrious, DATA = ``m2m``: ``<env>/<location>/<breed>/`` is level 3);
* ``metadata=FILE.csv``: a table names each image by its path under DATA, with its class and optionally its group
  (the spurious attribute) and split (Waterbirds' ``metadata.csv``). The table is read once, as a stream, into a
  dict keyed by the image's path without extension (so BACKGROUNDS, which mirror DATA in another format, match).

A command line builds it once, into the ``Dataset`` (engine/scan.py) it passes to everything that reads DATA; every
run record holds it (``options.layout``), so ``run --config`` replays it.
"""

from __future__ import annotations

import posixpath
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..images import FolderScan, ImageItem, path_key
from .errors import StepError
from .names import check_name
from .tables import table_rows

# role -> the column names recognised for it, in order of preference (compared without case)
COLUMN_NAMES = {
    "path": ("img_filename", "path", "filename", "file", "image", "img_path"),
    "class": ("y", "label", "class", "target"),
    "group": ("place", "group"),
    "split": ("split",),
    "id": ("img_id", "id"),
}
# --split train|val|test in a table whose split column holds numbers (Waterbirds: 0 train, 1 val, 2 test)
SPLIT_NUMBERS = {"train": "0", "val": "1", "valid": "1", "validation": "1", "test": "2"}
SHOWN = 5  # rows named in a warning


@dataclass(frozen=True)
class DatasetLayout:
    """The class rule: a folder level, or a metadata table (with its columns, a split to keep, names for the
    classes' and groups' values). The default is an ImageFolder (level 1)."""

    class_level: int = 1
    metadata: str | None = None
    split: str | None = None
    class_names: str | None = None  # "landbird,waterbird": class value i is named by the i-th name
    group_names: str | None = None  # "land,water": the same for the group column
    path_column: str | None = None
    class_column: str | None = None
    group_column: str | None = None
    split_column: str | None = None
    id_column: str | None = None

    def __post_init__(self):
        if self.class_level < 1:
            raise StepError(f"--class-level must be at least 1; got {self.class_level}")
        if self.metadata is None:
            given = [f"--{f.name.replace('_', '-')}" for f in fields(self) if f.name not in ("class_level", "metadata") and getattr(self, f.name)]
            if given:
                raise StepError(f"{', '.join(given)} describe a metadata table: give it with --metadata FILE.csv")
        elif self.class_level != 1:
            raise StepError("use either --class-level (the class is a folder) or --metadata (the class is in a table), not both")

    @property
    def is_default(self) -> bool:
        return self == DatasetLayout()

    def recorded(self) -> dict:
        """The layout as the run record holds it (what ``DatasetLayout(**recorded)`` rebuilds)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_record(cls, values: dict | None) -> "DatasetLayout":
        unknown = set(values or {}) - {f.name for f in fields(cls)}
        if unknown:
            raise StepError(f"unknown layout option(s) in the record: {', '.join(sorted(unknown))}")
        return cls(**(values or {}))


# --------------------------------------------------------------------------- the metadata table


@dataclass
class MetadataTable:
    """A metadata table read once: ``rows`` maps an image's key (its path under DATA without extension) to
    (class, group, line) for the rows kept, and to the line number alone for rows another split left out;
    ``ids`` maps the id column's values to paths (when asked for)."""

    path: Path
    columns: dict[str, str]  # role -> column name
    split: frozenset[str] | None  # the split column's values kept
    rows: dict[str, tuple | int] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)  # key -> the row's id, with ids only
    kept: int = 0  # rows of the split kept

    def where(self, line: int) -> str:
        return f"{self.path.name} line {line}"


_CACHE: dict[tuple, MetadataTable] = {}


def metadata_table(layout: DatasetLayout, root: Path, ids: bool = False) -> MetadataTable:
    """The layout's table for DATA ``root`` (read once per file and root; ``ids``: also map the id column)."""
    path = Path(layout.metadata)
    try:
        stat = path.stat()
    except OSError:
        raise StepError(f"--metadata: file not found: {path}") from None
    if not path.is_file():
        raise StepError(f"--metadata: {path} is not a file")
    key = (layout, str(Path(root).resolve()), stat.st_mtime_ns, stat.st_size)
    cached = _CACHE.get(key)
    if cached is None or (ids and not cached.ids and "id" in cached.columns):
        _CACHE.clear()
        cached = _CACHE[key] = _read_table(layout, path, Path(root), ids)
    return cached


def _columns(layout: DatasetLayout, header: list[str], path: Path) -> dict[str, int]:
    """role -> column index, from the options or the usual names; a missing path or class column is an error."""
    names = [h.strip() for h in header]
    lowered = {n.lower(): i for i, n in reversed(list(enumerate(names)))}
    given = {"path": layout.path_column, "class": layout.class_column, "group": layout.group_column,
             "split": layout.split_column, "id": layout.id_column}
    found: dict[str, int] = {}
    for role, wanted in given.items():
        if wanted is not None:
            if wanted.lower() not in lowered:
                raise StepError(f"--metadata {path} line 1: no column {wanted!r} (--{role}-column); the columns are {', '.join(names)}")
            found[role] = lowered[wanted.lower()]
            continue
        for candidate in COLUMN_NAMES[role]:
            if candidate in lowered:
                found[role] = lowered[candidate]
                break
    for role in ("path", "class"):
        if role not in found:
            raise StepError(f"--metadata {path} line 1: no {role} column (looked for {', '.join(COLUMN_NAMES[role])}; name it with "
                            f"--{role}-column); the columns are {', '.join(names) or 'none'}")
    if layout.split is not None and "split" not in found:
        raise StepError(f"--split {layout.split}: {path} has no split column (name it with --split-column)")
    return found


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",")] if text else None


class _Values:
    """Turns a column's values into class or group names (``--class-names``: value i -> i-th name), interned."""

    def __init__(self, names: list[str] | None, option: str, role: str):
        self.names, self.option, self.role, self.seen = names, option, role, {}

    def __call__(self, value: str, where) -> str:
        """``value``'s name (checked: ``names.check_name``); ``where()`` says where it was, for an error."""
        name = self.seen.get(value)
        if name is None:
            if self.names is None:
                name = value
            else:
                try:
                    name = self.names[int(value)]
                except (ValueError, IndexError):
                    raise StepError(f"--metadata {where()}: value {value!r} is not an index 0..{len(self.names) - 1} into {self.option}") from None
            check_name(name, f"--metadata {where()}" if self.names is None else f"{self.option} (for the value {value!r} on {where()})", self.role)
            name = self.seen[value] = name
        return name


def _read_table(layout: DatasetLayout, path: Path, root: Path, ids: bool) -> MetadataTable:
    """Stream the table: O(1) per row. Bad rows (a path outside DATA, a duplicate, no class, too few fields) are
    a ``StepError`` naming the file and line."""
    prefix = str(root.resolve()).rstrip("/") + "/"
    reader = table_rows(path, "--metadata")
    _, header = next(reader, (1, None))
    if header is None or not any(h.strip() for h in header):
        raise StepError(f"--metadata {path}: empty file (no header row)")
    cols = _columns(layout, header, path)
    table = MetadataTable(path, {role: header[i].strip() for role, i in cols.items()}, _split_values(layout))
    path_i, class_i, group_i, split_i = cols["path"], cols["class"], cols.get("group"), cols.get("split")
    id_i = cols.get("id") if ids else None
    classes = _Values(_names(layout.class_names), "--class-names", "class")
    groups = _Values(_names(layout.group_names), "--group-names", "group")
    width, rows = max(cols.values()) + 1, table.rows
    for line, row in reader:
        if len(row) < width:
            if not any(c.strip() for c in row):
                continue
            raise StepError(f"--metadata {table.where(line)}: {len(row)} field(s), the header has {len(header)}")
        rel = _relative(row[path_i], prefix, table, line)
        key = path_key(rel)
        if key in rows:
            first = rows[key] if isinstance(rows[key], int) else rows[key][2]
            raise StepError(f"--metadata {table.where(line)}: {rel} again (first on line {first}); one row per image")
        if id_i is not None:
            _add_id(table, row[id_i].strip(), rel, line)
        if split_i is not None and table.split is not None and row[split_i].strip() not in table.split:
            rows[key] = line
            continue
        value = row[class_i].strip()
        if not value:
            raise StepError(f"--metadata {table.where(line)}: no class for {rel}")
        where = lambda line=line: table.where(line)  # noqa: E731 (only formatted for an error)
        rows[key] = (classes(value, where), groups(row[group_i].strip(), where) if group_i is not None else None, line)
        table.kept += 1
    if not rows:
        raise StepError(f"--metadata {path}: no rows (only a header)")
    return table


def _split_values(layout: DatasetLayout) -> frozenset[str] | None:
    """The split column's values to keep: ``--split`` as given, and for train/val/test also its number (a table
    of numbered splits: Waterbirds' 0/1/2)."""
    if layout.split is None:
        return None
    wanted = layout.split.strip()
    return frozenset({wanted, SPLIT_NUMBERS[wanted.lower()]} if wanted.lower() in SPLIT_NUMBERS else {wanted})


def _relative(name: str, prefix: str, table: MetadataTable, line: int) -> str:
    """A row's path as a path under DATA ('a/b.jpg'); absolute inside DATA is allowed, outside is an error."""
    name = name.strip().replace("\\", "/")
    if not name:
        raise StepError(f"--metadata {table.where(line)}: no path")
    if name.startswith("/"):
        if not name.startswith(prefix):
            raise StepError(f"--metadata {table.where(line)}: {name} is outside DATA ({prefix.rstrip('/')})")
        name = name[len(prefix):]
    rel = posixpath.normpath(name) if (name.startswith(".") or "/." in name or "//" in name) else name
    if rel == ".." or rel.startswith("../") or rel in ("", "."):
        raise StepError(f"--metadata {table.where(line)}: {name} is outside DATA")
    return rel


def _add_id(table: MetadataTable, value: str, rel: str, line: int) -> None:
    if value in table.ids:
        raise StepError(f"--metadata {table.where(line)}: id {value} again (ids name one image each)")
    table.ids[value] = rel
    table.paths[path_key(rel)] = value


# --------------------------------------------------------------------------- applying the rule to a scan


def apply_layout(scan: FolderScan, layout: DatasetLayout, root: Path, what: str = "DATA") -> tuple[FolderScan, list[str]]:
    """``scan``'s items with their class (and group) by ``layout``; the warnings (items the rule cannot place,
    table rows that name no scanned file). The default layout returns the scan as it is. Every class name is
    checked (``names.check_name``): a folder's here, a table's as it is read."""
    if layout.is_default:
        for cls in {it.rel.parts[0] for it in scan.items}:
            check_name(cls, f"{what} folder {Path(root) / cls}")
        return scan, []
    if layout.metadata is None:
        items, warnings = _by_level(scan.items, layout.class_level, what)
    else:
        items, warnings = _by_table(scan.items, metadata_table(layout, root), what)
    classes = sorted({it.label for it in items})
    return FolderScan(items=items, classes=classes, empty_classes=scan.empty_classes, skipped_files=scan.skipped_files), warnings


def _by_level(items: list[ImageItem], level: int, what: str) -> tuple[list[ImageItem], list[str]]:
    placed, shallow, checked = [], [], set()
    for it in items:
        parts = it.rel.parts
        if len(parts) <= level:
            shallow.append(str(it.rel))
        else:
            if parts[level - 1] not in checked:
                checked.add(check_name(parts[level - 1], f"{what} folder {'/'.join(parts[:level])} (--class-level {level})"))
            placed.append(ImageItem(it.rel, it.root, parts[level - 1], None, level))
    warnings = [f"{len(shallow)} image(s) of {what} lie less than {level} folder(s) deep, so no folder names their class "
                f"(--class-level {level}); left out: {_shown(shallow)}"] if shallow else []
    return placed, warnings


def _by_table(items: list[ImageItem], table: MetadataTable, what: str) -> tuple[list[ImageItem], list[str]]:
    placed, no_row = [], []
    rows, tuple_ = table.rows, tuple
    for it in items:
        rel = str(it.rel)
        entry = rows.get(path_key(rel))
        if entry is None:
            no_row.append(rel)
        elif entry.__class__ is tuple_:
            placed.append(ImageItem(it.rel, it.root, entry[0], entry[1], 0))
    warnings = []
    if no_row:
        warnings.append(f"{len(no_row)} image(s) of {what} have no row in {table.path.name}; left out: {_shown(no_row)}")
    if len(placed) < table.kept and what == "DATA":  # some rows found no image: name them (a second pass, only then)
        matched = {it.key for it in placed}
        missing = [f"line {v[2]} ({k})" for k, v in rows.items() if v.__class__ is tuple and k not in matched]
        if missing:
            warnings.append(f"{len(missing)} row(s) of {table.path.name} name no image file in {what}: {_shown(missing)}")
    return placed, warnings


def _shown(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (f" ... ({len(names) - SHOWN} more)" if len(names) > SHOWN else "")
