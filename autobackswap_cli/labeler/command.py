"""``autobackswap label``: import patch labels, serve the labelling page, export a masks.csv: one library call."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..engine import CommonOptions, RunReport, StepError, console, prepare_items
from ..labels import ImportRequest, export_csv, import_labels, read_labels_info, reference_names
from .server import serve
from .store import LabelStore


@dataclass
class LabelRequest:
    """What ``label`` was asked: at most one importer (``from_masks``, ``from_csv``, ``from_coco``: without one,
    the labelling page), which images (``count``) on which grid, the importers' ``threshold``, a masks.csv to
    export, and for the page its pre-filling segmenter and its address."""

    from_masks: Path | None = None
    from_csv: Path | None = None
    from_coco: Path | None = None
    count: int | None = None
    grid: int | None = None
    threshold: float = 0.25
    export_csv: Path | None = None
    segmenter: Path | None = None
    host: str = "127.0.0.1"
    port: int | None = None
    open_browser: bool = True

    def importer(self) -> tuple[str, Path] | None:
        """The one importer asked for, as (kind, path); None for none. Two or more are a StepError."""
        chosen = [(kind, path) for kind, path in (("masks", self.from_masks), ("csv", self.from_csv), ("coco", self.from_coco))
                  if path is not None]
        if len(chosen) > 1:
            raise StepError("use one of --from-masks, --from-csv, --from-coco")
        return chosen[0] if chosen else None


def make_labels(data: Path, out: Path, request: LabelRequest, common: CommonOptions | None = None) -> RunReport | None:
    """Make LABELS for DATA: import them (through the engine, with ``common``'s workers, overwrite, fail-fast,
    progress and seed), or — without an importer and without an export — serve the labelling page until Ctrl-C;
    then write ``request.export_csv`` when asked. Returns the import's run report (None without an import)."""
    common = common or CommonOptions()
    importer = request.importer()
    items, warnings = prepare_items(data, out, other_inputs=[request.from_masks, request.from_csv, request.from_coco, request.segmenter],
                                    output_files=[("--export-csv", request.export_csv)])
    report = None
    if importer:
        chosen = ImportRequest(*importer, grid=request.grid, threshold=request.threshold, count=request.count, seed=common.seed)
        report = import_labels(data, out, items, chosen, common, warnings)
    elif not request.export_csv:
        store = LabelStore(data, out, items, count=request.count, seed=common.seed, grid=request.grid, segmenter=request.segmenter)
        serve(store, host=request.host, port=request.port, open_browser=request.open_browser)
        return None
    if request.export_csv:
        rows, unlabelled = export_csv(out, items, request.export_csv, read_labels_info(out).grid, reference_names(out, data))
        console.print(f"exported {rows} labelled image(s) to {request.export_csv}"
                      + (f" ({unlabelled} unlabelled patches written as 0)" if unlabelled else ""))
    return report
