"""``run``: the whole chain — train-segmenter, segment, inpaint, compose — one sub-folder per step.

WORK/segmenter.safetensors, WORK/masks, WORK/backgrounds, WORK/composites. Each step resumes:
the segmenter is kept when it exists (unless ``overwrite``), the other steps skip
finished items through the engine, so rerunning after a crash continues where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from .compose import ComposeOptions, compose_step
from .descriptions import check_options
from .engine import (DatasetLayout, RunOptions, RunReport, StepError, build_record, console, prepare_items, print_summary, record_path,
                     run_step, status_of, using_layout, write_run_record)
from .inpaint import InpaintOptions
from .inpaint.step import FillRegion, InpaintStep
from .segmenter.predict import SegmentOptions, SegmentStep
from .segmenter.train import TrainOptions, thresholds_line, train_segmenter


# a `run` option -> the (section, field) pairs of PipelineOptions it sets
RUN_FLAGS: dict[str, tuple[tuple[str, str], ...]] = {
    "backbone": (("train", "backbone"),),
    "pretrained": (("train", "pretrained"),),
    "epochs": (("train", "epochs"),),
    "refine": (("segment", "refine"),),
    "precision": (("segment", "precision"), ("inpaint", "precision")),
    "method": (("inpaint", "method"),),
    "model": (("inpaint", "model"),),
    "loose": (("region", "loose"),),
    "tight": (("compose", "tight"),),
    "per_image": (("compose", "per_image"),),
    "bg_from": (("compose", "bg_from"),),
    "out_format": (("compose", "out_format"),),
    "quality": (("compose", "quality"),),
    "layout": (("compose", "layout"),),
    "shard_size": (("compose", "shard_size"),),
    "device": (("train", "device"), ("segment", "device"), ("inpaint", "device")),
    "seed": (("train", "seed"), ("inpaint", "seed"), ("compose", "seed")),
    "workers": (("run", "workers"),),
    "batch_size": (("run", "batch_size"),),
    "overwrite": (("run", "overwrite"),),
    "fail_fast": (("run", "fail_fast"),),
    **{name: (("layout", name),) for name in ("class_level", "metadata", "split", "class_names", "group_names", "path_column",
                                              "class_column", "group_column", "split_column", "id_column")},
}
SECTIONS = ("train", "segment", "inpaint", "region", "compose", "layout")  # replayed from a record; `run` (shard, ...) is not


@dataclass
class PipelineOptions:
    train: TrainOptions = field(default_factory=TrainOptions)
    segment: SegmentOptions = field(default_factory=SegmentOptions)
    inpaint: InpaintOptions = field(default_factory=InpaintOptions)
    region: FillRegion = field(default_factory=FillRegion)
    compose: ComposeOptions = field(default_factory=ComposeOptions)
    layout: DatasetLayout = field(default_factory=DatasetLayout)  # where each image's class comes from
    run: RunOptions = field(default_factory=RunOptions)
    preview: str | None = None  # a PNG grid of composites

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


def _choices() -> dict[str, dict[str, tuple]]:
    from .choices import BackgroundsFrom, InpaintMethod, OutputFormat, OutputLayout, Precision, Refine
    from .compose import VARIANTS
    from .segmenter.model import BACKBONES

    return {"train": {"backbone": tuple(BACKBONES)},
            "segment": {"refine": Refine.values(), "precision": Precision.values()},
            "inpaint": {"method": InpaintMethod.values(), "precision": Precision.values()},
            "compose": {"bg_from": BackgroundsFrom.values(), "out_format": OutputFormat.values(), "layout": OutputLayout.values(),
                        "variant": tuple(VARIANTS)}}


CONFIG_CHOICES = _choices()
# the ranges the command line's options declare, for the values a --config file gives
CONFIG_RANGES: dict[str, dict[str, tuple]] = {
    "train": {"epochs": (1, None), "batch_size": (1, None), "patience": (1, None), "image_size": (8, 4096), "val_fraction": (0.0, 0.9),
              "lr": (0.0, None), "max_shift": (0, None)},
    "inpaint": {"steps": (1, None), "resolution": (8, 4096), "margin": (0.0, None), "radius": (1, None)},
    "region": {"loose": (0.0, 1.0), "dilate": (0, None)},
    "compose": {"tight": (0.0, 1.0), "feather": (0.0, None), "per_image": (1, None), "quality": (1, 100), "shard_size": (1, None),
                "rotate": (0.0, None), "translate": (0, None)},
    "layout": {"class_level": (1, None)},
}


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
    counts it (``no_foreground``); only failures make the exit code 1. Every step places images in classes by
    ``options.layout``."""
    with using_layout(options.layout):
        return _run_steps(data, labels, work, options)


def _run_steps(data: Path, labels: Path, work: Path, options: PipelineOptions) -> list[RunReport]:
    t0 = time.perf_counter()
    paths = work_paths(work)
    items, warnings = prepare_items(data, Path(work), other_inputs=[labels], output_files=[("--preview", options.preview)])
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
    reports = []
    console.print("[bold]2/4 segment[/]")
    reports.append(run_step(SegmentStep(paths["segmenter"], paths["masks"], options.segment), items, options.run, warnings))
    print_summary(reports[-1])
    console.print("[bold]3/4 inpaint[/]")
    reports.append(run_step(InpaintStep(paths["masks"], paths["backgrounds"], options.inpaint, options.region), items, options.run, warnings))
    print_summary(reports[-1])
    console.print("[bold]4/4 compose[/]")
    compose = compose_step(paths["masks"], paths["backgrounds"], paths["composites"], options.compose, preview=options.preview)
    reports.append(run_step(compose, items, options.run, warnings))
    print_summary(reports[-1])
    failed = sum(r.failed for r in reports)
    counts = {r.step: {"done": r.done, "skipped": r.skipped, "failed": r.failed, "no_foreground": len(r.no_foreground)} for r in reports}
    write_run_record(record_path(Path(work), options.run.shard), build_record("run", status=status_of(failed), options=options.recorded(), counts=counts,
                                                           wall_time_s=time.perf_counter() - t0, data=str(data), labels=str(labels)))
    return reports
