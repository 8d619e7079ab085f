"""``run``: the whole chain — train-segmenter, segment, inpaint, compose — one sub-folder per step.

WORK/segmenter.safetensors, WORK/masks, WORK/backgrounds, WORK/composites. Each step resumes:
the segmenter is kept when it exists (unless ``overwrite``), the other steps skip
finished items through the engine, so rerunning after a crash continues where it stopped.
"""

from __future__ import annotations

import json
import time
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Collection, Mapping

from .compose import ComposeOptions, compose_step
from .formats.descriptions import check_options
from .engine import (CommonOptions, Dataset, DatasetLayout, RunReport, StepError, build_record, console, prepare_items, print_summary, record_path,
                     run_step, status_of, write_run_record)
from .inpaint import InpaintOptions
from .parsing import plain
from .inpaint.step import FillRegion, InpaintStep
from .segmenter.predict import SegmentOptions, SegmentStep
from .segmenter.train import TrainOptions, thresholds_line, train_segmenter


SECTIONS = ("train", "segment", "inpaint", "region", "compose", "layout")  # replayed from a record; `run` (shard, ...) is not
# the step options `run` offers besides the shared ones (engine.CommonOptions) and the layout's (engine.DatasetLayout)
RUN_STEP_OPTIONS = ("backbone", "pretrained", "epochs", "refine", "method", "model", "loose", "tight", "min_confidence", "per_image", "bg_from",
                    "out_format", "quality", "layout", "shard_size")
# fields that a `run` option of their name leaves alone: the segmenter trains at its own batch size (the shared
# --batch-size is the item steps'), and --preview is the composites' grid, not segment's
NOT_FROM_RUN = {("train", "batch_size"), ("segment", "preview")}
# the options a record never replays: this invocation's shard (from --shard or the launcher's environment)
NOT_REPLAYED = ("shard",)


@dataclass
class PipelineOptions:
    """Every option of ``run``, by section: each step's options, the data layout, and the shared options (``run``:
    the engine's for every item step, the preview of the composites, the list of images)."""

    train: TrainOptions = field(default_factory=TrainOptions)
    segment: SegmentOptions = field(default_factory=SegmentOptions)
    inpaint: InpaintOptions = field(default_factory=InpaintOptions)
    region: FillRegion = field(default_factory=FillRegion)
    compose: ComposeOptions = field(default_factory=ComposeOptions)
    layout: DatasetLayout = field(default_factory=DatasetLayout)  # where each image's class comes from
    run: CommonOptions = field(default_factory=CommonOptions)

    def with_flags(self, flags: Mapping[str, Any]) -> "PipelineOptions":
        """A copy with ``run``'s options (names of RUN_FLAGS) set where they are given."""
        sections = {name: getattr(self, name) for name in (*SECTIONS, "run")}
        for flag, value in flags.items():
            for section, name in RUN_FLAGS[flag]:
                sections[section] = replace(sections[section], **{name: value})
        return replace(self, **sections)

    def recorded(self) -> dict:
        """Every section's options, as the run record holds them (what ``run --config`` replays)."""
        return {name: asdict(getattr(self, name)) for name in SECTIONS}

    @classmethod
    def from_record(cls, path: Path) -> "PipelineOptions":
        """The options a `run` record (WORK/autobackswap.json) holds, every section checked before any step starts
        (types, choices, ranges: ``CONFIG_CHOICES``, ``CONFIG_RANGES``); a bad value is one error naming the key in
        the file. Unknown names are an error, missing ones keep their defaults."""
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, ValueError, RecursionError) as exc:
            raise StepError(f"--config {path}: not a run record of `autobackswap run` ({type(exc).__name__}: {exc})") from None
        if not isinstance(record, dict) or record.get("step") != "run":
            step = record.get("step") if isinstance(record, dict) else None
            raise StepError(f"--config {path}: not a run record of `autobackswap run`" + (f" (it is {step!r}'s record)" if step else ""))
        recorded = record.get("options")
        if not isinstance(recorded, dict):
            raise StepError(f"--config {path}: field 'options' must be an object; got {type(recorded).__name__}")
        unknown = sorted(set(recorded) - set(SECTIONS))
        if unknown:
            raise StepError(f"--config {path}: unknown section(s) in 'options': {', '.join(map(repr, unknown))}; the sections are "
                            f"{', '.join(SECTIONS)} (names are case-sensitive)")
        sections = {}
        for name in SECTIONS:
            cls_ = type(getattr(cls(), name))
            values = dict(check_options(recorded.get(name) or {}, cls_, f"--config {path}", name,
                                        CONFIG_CHOICES.get(name), CONFIG_RANGES.get(name)))
            for pair in ("scale", "fill"):
                if pair in values:
                    values[pair] = tuple(values[pair])
            sections[name] = cls_(**values)
        sections["compose"].check()
        return cls(**sections)


def run_flags() -> dict[str, tuple[tuple[str, str], ...]]:
    """``run``'s options -> the (section, field) pairs of ``PipelineOptions`` each sets: every field of that name
    in every section (but ``NOT_FROM_RUN``). Derived from the options dataclasses, so a new shared option (a field of
    ``CommonOptions``) or a new step option of ``RUN_STEP_OPTIONS`` reaches every section that has it."""
    sections = typing.get_type_hints(PipelineOptions)
    names = [*(f.name for f in fields(CommonOptions)), *RUN_STEP_OPTIONS, *(f.name for f in fields(DatasetLayout))]
    return {name: tuple((section, name) for section, cls in sections.items()
                        if name in {f.name for f in fields(cls)} and (section, name) not in NOT_FROM_RUN) for name in names}


RUN_FLAGS = run_flags()


def run_options(common: CommonOptions, layout: DatasetLayout, values: Mapping[str, Any], config: Path | None = None,
                given: Collection[str] = ()) -> PipelineOptions:
    """``run``'s options: the shared ones (``common``), the layout and the steps' (``values``: by the names of
    ``RUN_STEP_OPTIONS``; Enums and paths as their values) set where ``RUN_FLAGS`` says, over the defaults, or, with
    ``config``, over the options that run record holds: then only the options in ``given`` (those the command
    line gave) and ``NOT_REPLAYED`` override it."""
    flags = {name: plain(values[name]) for name in RUN_STEP_OPTIONS if name in values}
    flags.update({f.name: getattr(common, f.name) for f in fields(CommonOptions)})
    flags.update({f.name: getattr(layout, f.name) for f in fields(DatasetLayout)})
    if config is None:
        return PipelineOptions().with_flags(flags)
    kept = {name: value for name, value in flags.items() if name in given or name in NOT_REPLAYED}
    return PipelineOptions.from_record(config).with_flags(kept)


def _choices() -> dict[str, dict[str, tuple]]:
    from .choices import Backbone, BackgroundsFrom, InpaintMethod, OutputFormat, OutputLayout, Place, Precision, PreviewOrder, Refine
    from .compose import VARIANTS

    return {"train": {"backbone": Backbone.values()},
            "segment": {"refine": Refine.values(), "precision": Precision.values(), "preview_order": PreviewOrder.values()},
            "inpaint": {"method": InpaintMethod.values(), "precision": Precision.values()},
            "compose": {"place": Place.values(), "bg_from": BackgroundsFrom.values(), "out_format": OutputFormat.values(), "layout": OutputLayout.values(),
                        "variant": tuple(VARIANTS)}}


CONFIG_CHOICES = _choices()


def _ranges() -> dict[str, dict[str, tuple]]:
    from .choices import value_range

    sections = typing.get_type_hints(PipelineOptions)
    ranges = {name: {f.name: value_range(f.name, name) for f in fields(sections[name])} for name in SECTIONS}
    return {name: {field: r for field, r in section.items() if r} for name, section in ranges.items()}


# the ranges the command line's options declare (choices.RANGES), for the values a --config file gives
CONFIG_RANGES: dict[str, dict[str, tuple]] = _ranges()


def work_paths(work: Path) -> dict[str, Path]:
    """Where ``run`` keeps each step's output in WORK. A WORK folder from before 0.2 keeps its ``segmenter.pt``."""
    work = Path(work)
    segmenter = work / "segmenter.safetensors"
    if not segmenter.exists() and (work / "segmenter.pt").exists():
        segmenter = work / "segmenter.pt"
    return {"segmenter": segmenter, "masks": work / "masks", "backgrounds": work / "backgrounds", "composites": work / "composites"}


def run_pipeline(data: Path, labels: Path, work: Path, options: PipelineOptions) -> list[RunReport]:
    """Run every step in order; returns the item steps' reports (failures do not stop later steps). WORK gets a
    run record with every step's options (``run --config`` replays it). An image with no foreground is no
    failure: segment writes its empty mask, inpaint keeps it as its own background, compose leaves it out and
    counts it (``no_foreground``), as it does an image whose mask is probably wrong (``low_confidence``); only
    failures make the exit code 1. Every step places images in classes by ``options.layout``."""
    t0 = time.perf_counter()
    paths = work_paths(work)
    dataset, layout = Dataset(Path(data), options.layout, options.run.files_from), options.layout
    items, warnings = prepare_items(dataset, Path(work), other_inputs=[labels], output_files=[("--preview", options.run.preview)])
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
        result = train_segmenter(Dataset(Path(data), layout), labels, paths["segmenter"], options.train, progress=options.run.progress)
        console.print(f"segmenter: validation patch IoU {result.metrics['val_patch_iou']} (best epoch {result.metrics['best_epoch']})")
        console.print(thresholds_line(result.thresholds, options.segment.refine))
    reports = []
    console.print("[bold]2/4 segment[/]")
    reports.append(run_step(SegmentStep(paths["segmenter"], paths["masks"], options.segment), items, options.run, warnings, layout))
    print_summary(reports[-1])
    console.print("[bold]3/4 inpaint[/]")
    reports.append(run_step(InpaintStep(paths["masks"], paths["backgrounds"], options.inpaint, options.region), items, options.run, warnings, layout))
    print_summary(reports[-1])
    console.print("[bold]4/4 compose[/]")
    compose = compose_step(paths["masks"], paths["backgrounds"], paths["composites"], options.compose, preview=options.run.preview, layout=layout)
    reports.append(run_step(compose, items, options.run, warnings, layout))
    print_summary(reports[-1])
    failed = sum(r.failed for r in reports)
    counts = {r.step: {"done": r.done, "skipped": r.skipped, "failed": r.failed, "no_foreground": len(r.no_foreground),
                       "low_confidence": len(r.low_confidence)} for r in reports}
    write_run_record(record_path(Path(work), options.run.shard), build_record("run", status=status_of(failed), options=options.recorded(), counts=counts,
                                                           wall_time_s=time.perf_counter() - t0, data=str(data), labels=str(labels)))
    return reports
