"""Reading the input: a ``Dataset`` (DATA's folder, its class rule, an optional list of its images) scanned for a
step, and items read one by one, collecting the ones that fail."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..images import FolderScan, ImageError, ImageItem, is_inside, items_from_list, scan_image_folder
from .errors import NoForeground, StepError
from .layout import DatasetLayout, apply_layout
from .names import is_tool_file
from .progress import console, log_json_path, make_progress


@dataclass(frozen=True)
class Dataset:
    """What DATA is: its folder, where each image's class comes from (``layout``: ``--class-level`` /
    ``--metadata``; default an ImageFolder) and, optionally, a list of the images to take instead of scanning
    (``files_from``). Built once by the command line or the library caller and passed to everything that reads
    DATA; BACKGROUNDS, which mirror DATA, are read with ``for_folder``."""

    root: Path
    layout: DatasetLayout = field(default_factory=DatasetLayout)
    files_from: Path | None = None

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    def for_folder(self, folder: Path) -> "Dataset":
        """Another folder that mirrors this one (BACKGROUNDS): the same class rule, scanned whole."""
        return replace(self, root=Path(folder), files_from=None)

    def scan(self, exclude: Sequence[Path | None] = (), what: str = "DATA") -> tuple[FolderScan, list[str]]:
        """The images (scanned, or those ``files_from`` lists) with their class and group by the layout, and the
        layout's warnings. The one way a dataset is read: steps, trainers, the backgrounds pool."""
        if self.files_from is not None:
            if not Path(self.files_from).is_file():
                raise StepError(f"--files-from: list not found: {self.files_from}")
            scan = items_from_list(self.root, self.files_from)
        else:
            scan = scan_image_folder(self.root, exclude=[p for p in exclude if p is not None])
        return apply_layout(scan, self.layout, self.root, what)


def as_dataset(data: Dataset | Path | str) -> Dataset:
    """``data`` as a ``Dataset``: a folder alone is an ImageFolder, scanned whole."""
    return data if isinstance(data, Dataset) else Dataset(Path(data))


def prepare_items(data: Dataset | Path, out_dir: Path | None = None, other_inputs: Sequence[Path] = (),
                  output_files: Sequence[tuple[str, Path | None]] = ()) -> tuple[list[ImageItem], list[str]]:
    """Scan DATA for a step (or take the images its ``files_from`` lists, unscanned), each item's class by its
    layout; returns its items and warnings for the run record.

    The step's output folder may not be, hold or lie inside any of its inputs (DATA and ``other_inputs`` such as
    MASKS, BACKGROUNDS, LABELS; symlinks resolved): inputs are never modified. Only an output inside DATA is
    allowed, and left out of the scan (and said so), as are other inputs kept inside DATA. ``other_inputs`` may
    name files read too (model files), and ``output_files`` the step's single-file outputs (``(flag, path)``):
    none may be or lie inside an input (``check_outputs``).
    """
    dataset = as_dataset(data)
    data_dir, files_from, metadata = dataset.root, dataset.files_from, dataset.layout.metadata
    if not data_dir.is_dir():
        raise StepError(f"input folder not found: {data_dir}")
    inputs = [Path(p) for p in other_inputs if p is not None]
    warnings = check_outputs([*inputs, files_from, Path(metadata) if metadata else None], out_dir, output_files, data_dir)
    scan, layout_warnings = dataset.scan([out_dir, *(p for p in inputs if not p.is_file())])
    for cls in scan.empty_classes:
        warnings.append(f"class folder '{cls}' has no images; it is skipped")
    if scan.skipped_files:
        shown = ", ".join(scan.skipped_files[:5]) + (" ..." if len(scan.skipped_files) > 5 else "")
        what = "line(s) of the list that are not DATA/<class>/<image>" if files_from is not None else "file(s) without an image extension"
        warnings.append(f"{len(scan.skipped_files)} {what} were ignored: {shown}")
    warnings += layout_warnings
    _refuse_shared_names(scan.items)
    if not scan.items:
        raise StepError(f"no images found in {data_dir} (expected DATA/<class>/<image>.jpg|png|...)" if not layout_warnings
                        else f"no images of {data_dir} are placed in a class: {layout_warnings[-1]}")
    for w in warnings:
        console.print(f"[yellow]warning:[/] {w}")
    return scan.items, warnings


def _refuse_shared_names(items: Sequence[ImageItem]) -> None:
    """Two images whose paths differ only in the extension (``a.jpg``, ``a.png``) would share every derived file
    (``MASKS/c/a.png``, their backgrounds, composite names and tar keys): refused before any work, naming them."""
    keys = [item.key for item in items]
    if len(set(keys)) == len(keys):
        return
    seen: set[str] = set()
    shared = {key for key in keys if key in seen or seen.add(key)}
    if shared:
        pairs = sorted(str(it.rel) for it in items if it.key in shared)
        shown = ", ".join(pairs[:6]) + (" ..." if len(pairs) > 6 else "")
        raise StepError(f"{len(shared)} name(s) of DATA are taken by two images that differ only in the extension, so they "
                        f"would share one mask, background and composite name: {shown}; rename or move one of each")


def check_outputs(inputs: Sequence[Path | None], out_dir: Path | None = None,
                  files: Sequence[tuple[str, Path | None]] = (), data_dir: Path | None = None) -> list[str]:
    """THE check that no output lands on or inside an input; every command runs it before any work.

    ``inputs`` is everything the command reads, folders and files (DATA, MASKS, LABELS, model files, tables);
    ``out_dir`` its output folder, ``files`` its single-file outputs as ``(flag, path)`` (``-o``, ``--preview``,
    ``--json``, ...; ``--log-json`` is added here). An output folder may not be, hold or lie inside an input folder
    (only one inside ``data_dir`` is allowed: it is left out of the scan; the warning is returned). An output
    file may not be an input file nor lie inside an input folder; inside ``out_dir`` it goes at the top, and not
    onto a file the tool writes there. No input file may lie inside ``out_dir``, where the run could write over it.
    Symlinks are resolved. A refusal is a ``StepError`` naming both paths (exit 2)."""
    given = [Path(p) for p in inputs if p is not None]
    data = Path(data_dir) if data_dir is not None else None
    folders = [p for p in given if not p.is_file() and p != data]
    warnings = _check_folder(data, Path(out_dir), folders) if out_dir is not None else []
    for source in given:
        if out_dir is not None and source.is_file() and is_inside(source, Path(out_dir)):
            raise StepError(f"the input {source} lies inside the output folder {out_dir}, where the run could write over it; "
                            f"move it out of {out_dir} or write somewhere else (inputs are never modified)")
    written = [(flag, Path(path)) for flag, path in [*files, ("--log-json", log_json_path())] if path is not None]
    for flag, path in written:
        if out_dir is not None and is_inside(path, Path(out_dir)) and path.resolve() != Path(out_dir).resolve():
            _check_file_inside_output(flag, path, Path(out_dir))
            continue
        for source in given + ([data] if data is not None else []):
            if path.resolve() == source.resolve() or (not source.is_file() and is_inside(path, source)):
                relation = "is the input" if path.resolve() == source.resolve() else "lies inside the input folder"
                raise StepError(f"{flag} {path} {relation} {source}; choose another path (inputs are never modified)")
    return warnings


def _check_file_inside_output(flag: str, path: Path, out: Path) -> None:
    """A single-file output inside the output folder goes at its top, beside the class folders, and is no file the
    tool writes there (``names.is_tool_file``): below the top lie the run's own outputs (masks, composites), which
    it would replace."""
    if path.resolve().parent != out.resolve() or is_tool_file(path.name):
        raise StepError(f"{flag} {path} would land on the run's own outputs in {out} (its class folders or "
                        f"{'its file ' + path.name if is_tool_file(path.name) else 'a sub-folder'}); put it beside them, e.g. "
                        f"{out / ('preview.png' if flag == '--preview' else 'log.jsonl')}, or outside {out}")


def _check_folder(data_dir: Path | None, out: Path, inputs: list[Path]) -> list[str]:
    """Refuse an output folder that is, holds or lies inside an input (but DATA); the warning for one inside DATA."""
    if data_dir is not None and out.resolve() == data_dir.resolve():
        raise StepError(f"output {out} is the input folder itself; choose another folder (inputs are never modified)")
    for folder in inputs:
        if is_inside(out, folder) or is_inside(folder, out):
            relation = "is" if out.resolve() == folder.resolve() else ("lies inside" if is_inside(out, folder) else "holds")
            raise StepError(f"output {out} {relation} the input folder {folder}; choose another folder (inputs are never modified)")
    if data_dir is not None and is_inside(out, data_dir):
        return [f"output folder {out} is inside the input folder {data_dir}; it is left out of the input"]
    return []


def read_items(items: Sequence[ImageItem], read: Callable[[ImageItem], Any], failures: list[dict], *,
               description: str = "reading images", progress: bool = True,
               no_foreground: list[str] | None = None) -> Iterator[tuple[ImageItem, Any]]:
    """Yield ``(item, read(item))`` under a progress bar; an item whose reading raises ``ImageError`` is said,
    appended to ``failures`` as ``{"item", "reason"}`` (the run record's form) and left out. With a
    ``no_foreground`` list, an item whose reading raises ``NoForeground`` is left out into it (its path), not
    into ``failures``. For the steps that read all of their items in the main process (trainers, evaluate)."""
    with make_progress(transient=True, enabled=progress) as bar:
        task = bar.add_task(description, total=len(items), status="")
        for item in items:
            try:
                value = read(item)
            except ImageError as exc:
                if isinstance(exc, NoForeground) and no_foreground is not None:
                    no_foreground.append(str(item.rel))
                    bar.console.print(f"[yellow]left out[/] {item.rel}: {exc}")
                else:
                    failures.append({"item": str(item.rel), "reason": str(exc)})
                    bar.console.print(f"[red]skipped[/] {item.rel}: {exc}")
            else:
                yield item, value
            bar.update(task, advance=1, status=f"[red]failed {len(failures)}[/]" if failures else "")
