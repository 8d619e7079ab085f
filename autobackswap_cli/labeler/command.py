"""``autobackswap label``: import patch labels, serve the labelling page, export a masks.csv: one library call."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..engine import CommonOptions, Dataset, RunReport, StepError, as_dataset, console, prepare_items
from ..images import ImageItem
from ..formats.label_format import label_path, select_uncertain
from ..labels import ImportRequest, export_csv, import_labels, read_labels_info, reference_names
from .server import serve
from .store import LabelStore


@dataclass
class LabelRequest:
    """What ``label`` was asked: at most one importer (``from_masks``, ``from_csv``, ``from_coco``: without one,
    the labelling page), which images (``count``, chosen by ``pick``: random, stratified over classes, or the
    images whose masks ``segmenter`` is least sure of) on which grid, the importers' ``threshold``, a masks.csv to
    export, and for the page its pre-filling segmenter and its address."""

    from_masks: Path | None = None
    from_csv: Path | None = None
    from_coco: Path | None = None
    count: int | None = None
    grid: int | None = None
    threshold: float = 0.25
    export_csv: Path | None = None
    segmenter: Path | None = None
    pick: str = "random"  # random | uncertain
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

    def check_pick(self) -> None:
        """``--pick uncertain`` needs the segmenter to ask and how many images LABELS should hold."""
        if self.pick not in ("random", "uncertain"):
            raise StepError(f"--pick must be random or uncertain; got {self.pick!r}")
        if self.pick == "uncertain" and (self.segmenter is None or self.count is None):
            raise StepError("--pick uncertain needs --segmenter SEGMENTER.safetensors (whose masks to check) and --count N "
                            "(how many images LABELS should hold; those labelled already stay)")


def make_labels(data: Dataset | Path, out: Path, request: LabelRequest, common: CommonOptions | None = None) -> RunReport | None:
    """Make LABELS for DATA (a folder, or a ``Dataset`` with its class rule): import them (through the engine, with ``common``'s workers, overwrite, fail-fast,
    progress and seed), or — without an importer and without an export — serve the labelling page until Ctrl-C;
    then write ``request.export_csv`` when asked. Returns the import's run report (None without an import)."""
    common = common or CommonOptions()
    data = as_dataset(data)
    importer = request.importer()
    request.check_pick()
    items, warnings = prepare_items(data, out, other_inputs=[request.from_masks, request.from_csv, request.from_coco, request.segmenter],
                                    output_files=[("--export-csv", request.export_csv)])
    report = None
    if importer:
        choose = (lambda available: set(pick_uncertain(available, out, request, common))) if request.pick == "uncertain" else None
        chosen = ImportRequest(*importer, grid=request.grid, threshold=request.threshold, count=request.count, seed=common.seed, choose=choose)
        report = import_labels(data, out, items, chosen, common, warnings)
    elif not request.export_csv:
        first = pick_uncertain(items, out, request, common) if request.pick == "uncertain" else None
        store = LabelStore(data.root, out, items, count=request.count, seed=common.seed, grid=request.grid, segmenter=request.segmenter, first=first,
                           layout=data.layout)
        serve(store, host=request.host, port=request.port, open_browser=request.open_browser)
        return None
    if request.export_csv:
        rows, unlabelled = export_csv(out, items, request.export_csv, read_labels_info(out).grid, reference_names(out, data))
        console.print(f"exported {rows} labelled image(s) to {request.export_csv}"
                      + (f" ({unlabelled} unlabelled patches written as 0)" if unlabelled else ""))
    return report


def pick_uncertain(candidates: list[ImageItem], labels_dir: Path, request: LabelRequest, common: CommonOptions) -> list[str]:
    """``--pick uncertain``: the images (rel) to label next so that LABELS holds ``request.count``: the candidates
    not labelled yet whose masks ``request.segmenter`` is least confident of (scored as ``segment`` scores them,
    MASKS/mask_quality.csv's confidence), spread over classes; least confident first."""
    from ..segmenter.predict import score_masks

    labelled = {str(it.rel) for it in candidates if label_path(labels_dir, it).exists()}
    unlabelled = [it for it in candidates if str(it.rel) not in labelled]
    if len(labelled) >= request.count or not unlabelled:
        return []
    console.print(f"--pick uncertain: scoring the masks of {len(unlabelled)} unlabelled image(s) with {request.segmenter}")
    confidence = score_masks(request.segmenter, unlabelled, common)
    classes = {str(it.rel): it.cls for it in candidates}
    picked = select_uncertain(list(classes), request.count, confidence, labelled, classes.get)
    if picked:
        shown = ", ".join(f"{rel} ({confidence[rel]:.2f})" for rel in picked[:5])
        console.print(f"--pick uncertain: {len(picked)} image(s) picked, least confident first: {shown}{' ...' if len(picked) > 5 else ''}")
    return picked
