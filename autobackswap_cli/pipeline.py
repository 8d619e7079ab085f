"""``run``: the whole chain — train-segmenter, segment, inpaint, compose — one sub-folder per step.

WORK/segmenter.pt, WORK/masks, WORK/backgrounds, WORK/composites. Each step resumes:
the segmenter is kept when it exists (unless ``overwrite``), the other steps skip
finished items through the engine, so rerunning after a crash continues where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .compose import ComposeOptions, ComposeStep
from .engine import RunOptions, RunReport, StepError, console, prepare_items, print_summary, run_step
from .inpaint import InpaintOptions
from .inpaint.step import FillRegion, InpaintStep
from .segmenter.predict import SegmentOptions, SegmentStep
from .segmenter.train import TrainOptions, thresholds_line, train_segmenter


@dataclass
class PipelineOptions:
    train: TrainOptions = field(default_factory=TrainOptions)
    segment: SegmentOptions = field(default_factory=SegmentOptions)
    inpaint: InpaintOptions = field(default_factory=InpaintOptions)
    region: FillRegion = field(default_factory=FillRegion)
    compose: ComposeOptions = field(default_factory=ComposeOptions)
    run: RunOptions = field(default_factory=RunOptions)
    preview: str | None = None  # a PNG grid of composites


def work_paths(work: Path) -> dict[str, Path]:
    work = Path(work)
    return {"segmenter": work / "segmenter.pt", "masks": work / "masks", "backgrounds": work / "backgrounds", "composites": work / "composites"}


def run_pipeline(data: Path, labels: Path, work: Path, options: PipelineOptions) -> list[RunReport]:
    """Run every step in order; returns the item steps' reports (failures do not stop later steps)."""
    paths = work_paths(work)
    Path(work).mkdir(parents=True, exist_ok=True)
    if options.run.shard.count > 1 and not paths["segmenter"].exists():
        raise StepError(
            f"with shards, train the segmenter once before starting them, or every shard trains its own: "
            f"autobackswap train-segmenter {data} {labels} -o {paths['segmenter']}"
        )
    if paths["segmenter"].exists() and (not options.run.overwrite or options.run.shard.count > 1):
        console.print(f"[bold]1/4 train-segmenter[/]: {paths['segmenter']} exists, kept (use --overwrite to retrain)")
    else:
        console.print("[bold]1/4 train-segmenter[/]")
        result = train_segmenter(data, labels, paths["segmenter"], options.train, progress=options.run.progress)
        console.print(f"segmenter: validation patch IoU {result.metrics['val_patch_iou']} (best epoch {result.metrics['best_epoch']})")
        console.print(thresholds_line(result.thresholds, options.segment.refine))
    items, warnings = prepare_items(data, Path(work))
    reports = []
    console.print("[bold]2/4 segment[/]")
    reports.append(run_step(SegmentStep(paths["segmenter"], paths["masks"], options.segment), items, options.run, warnings))
    print_summary(reports[-1])
    console.print("[bold]3/4 inpaint[/]")
    reports.append(run_step(InpaintStep(paths["masks"], paths["backgrounds"], options.inpaint, options.region), items, options.run, warnings))
    print_summary(reports[-1])
    console.print("[bold]4/4 compose[/]")
    compose = ComposeStep(paths["masks"], paths["backgrounds"], paths["composites"], options.compose, shard=options.run.shard, preview=options.preview)
    reports.append(run_step(compose, items, options.run, warnings))
    print_summary(reports[-1])
    return reports
