"""The ``autobackswap`` command line: one thin function per subcommand, options -> one library call.

Exit codes: 0 all items done (images left out with no foreground are listed, not
failed), 1 some items failed (listed at the end and in the run record), 2 the run
could not start or had to stop (bad arguments, missing inputs, an output that cannot
be written), 130 interrupted by Ctrl-C, 143 by SIGTERM (128 + the signal).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import sys
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from .choices import BackgroundsFrom, Executor, InpaintMethod, OutputFormat, OutputLayout, Precision, Refine
from .engine import (FailFast, RunOptions, StepError, as_interrupted, console, default_workers, print_summary, resolve_shard,
                     stop_on_signals)
from .engine.progress import log_json_to

app = typer.Typer(
    name="autobackswap",
    help=(
        "Background swapping for ImageFolder datasets (AutoBackSwap). Label a few hundred images' patches, "
        "train a small segmenter, segment everything, inpaint clean backgrounds, compose foregrounds onto "
        "other backgrounds. Every step reads and writes folders; reruns skip finished items."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# ----------------------------------------------------------------- shared options (defined once)
Workers = Annotated[int, typer.Option("--workers", "-j", help="Worker processes for decoding/encoding (0 = in the main process).", min=0)]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", help="Images per model batch.", min=1)]
ShardOpt = Annotated[
    Optional[str],
    typer.Option("--shard", help="Process only shard K of N (0-based, e.g. 0/4). Default: from torchrun RANK/WORLD_SIZE or a SLURM array, else all."),
]
ExecutorOpt = Annotated[Executor, typer.Option("--executor", help="local (worker processes here) or ray (a Ray Data pipeline: a local Ray instance, or --ray-address). Needs the ray extra: pip install 'autobackswap-cli\\[ray]'.")]
RayAddress = Annotated[Optional[str], typer.Option("--ray-address", help="--executor ray: the cluster to join (e.g. ray://head:10001 or auto); default: start a local Ray instance.")]
GpusPerWorker = Annotated[float, typer.Option("--gpus-per-worker", help="--executor ray: GPUs each model actor asks for (e.g. 1; 0 = CPU).", min=0.0)]
FilesFrom = Annotated[Optional[Path], typer.Option("--files-from", help="Take the images from this list (one path per line, relative to DATA) instead of scanning DATA: for datasets too big to scan.", dir_okay=False)]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Redo items whose outputs already exist (default: skip them).")]
FailFastOpt = Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failed item instead of listing failures at the end.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps. A device that is not there is an error.")]
Preview = Annotated[Optional[Path], typer.Option("--preview", help="Write a PNG grid of results to look at.", dir_okay=False)]
Seed = Annotated[int, typer.Option("--seed", help="Random seed; the same inputs and seed give identical outputs.")]
Grid = Annotated[int, typer.Option("--grid", help="Patch grid size P (P x P patches per image).", min=2)]
NoProgress = Annotated[bool, typer.Option("--no-progress", help="Hide progress bars.")]
PrecisionOpt = Annotated[Precision, typer.Option("--precision", help="Model arithmetic: auto (fp16 on CUDA, else fp32), fp32, fp16, bf16.")]
FormatOpt = Annotated[OutputFormat, typer.Option("--format", help="Output format: same (as the input), png, jpg or webp.")]
Quality = Annotated[int, typer.Option("--quality", help="JPEG/WEBP quality.", min=1, max=100)]
RefineOpt = Annotated[Refine, typer.Option("--refine", help="segment: snap mask edges to the image: grabcut (default: seeded by the model's sure and unsure bands; sharpest, ~60-100 ms of CPU per 384-px image), guided (guided filter, fast; blurs a pixel model's outline) or none.")]
MethodOpt = Annotated[InpaintMethod, typer.Option("--method", help="inpaint: texture (default: offline, continues the background's texture), pyramid (smooth, fastest), telea, ns, diffusers, torchscript.")]
InpaintModel = Annotated[Optional[str], typer.Option("--model", help="inpaint: diffusers hub id or local pipeline folder; torchscript: model file (e.g. big-lama.pt).")]
BgFrom = Annotated[BackgroundsFrom, typer.Option("--bg-from", help="compose: backgrounds from any (class uniform, then image), other-class, same-class, next-class.")]
Loose = Annotated[Optional[float], typer.Option("--loose", help="inpaint: fill where P(foreground) is at least this (the loose mask). Default: the threshold the segmenter chose on its validation labels (recorded in MASKS), else 0.1.", min=0.0, max=1.0, show_default=False)]
Tight = Annotated[Optional[float], typer.Option("--tight", help="compose: the foreground is where P(fg) is at least this (the tight mask). Default: the threshold the segmenter chose on its validation labels (recorded in MASKS), else 0.5.", min=0.0, max=1.0, show_default=False)]


LAYOUT_PANEL = "Where the class comes from (DATA not an ImageFolder)"
# name -> (type, option, default): the data-layout options, declared once and added to every command that reads
# DATA by @_layout_options (see engine/layout.py); the command receives them as one ``layout``
_LAYOUT_OPTIONS = {
    "class_level": (int, typer.Option("--class-level", min=1, rich_help_panel=LAYOUT_PANEL, help="The K-th folder under DATA names the class (1: DATA/<class>/...; Spawrious with DATA = m2m: 3, <env>/<location>/<breed>/).")),
    "metadata": (Optional[Path], typer.Option("--metadata", dir_okay=False, rich_help_panel=LAYOUT_PANEL, help="A CSV naming each image by its path under DATA, with its class and optionally group and split (e.g. Waterbirds' metadata.csv). Images without a row are left out.")),
    "split": (Optional[str], typer.Option("--split", rich_help_panel=LAYOUT_PANEL, help="--metadata: keep only the rows of this split (its value, or train/val/test for a table numbered 0/1/2).")),
    "class_names": (Optional[str], typer.Option("--class-names", rich_help_panel=LAYOUT_PANEL, help="--metadata: names for the class values 0,1,... (e.g. landbird,waterbird); default: the values.")),
    "group_names": (Optional[str], typer.Option("--group-names", rich_help_panel=LAYOUT_PANEL, help="--metadata: names for the group values 0,1,... (e.g. land,water).")),
    "path_column": (Optional[str], typer.Option("--path-column", rich_help_panel=LAYOUT_PANEL, help="--metadata: the path column (default: img_filename, path, filename, file or image).")),
    "class_column": (Optional[str], typer.Option("--class-column", rich_help_panel=LAYOUT_PANEL, help="--metadata: the class column (default: y, label, class or target).")),
    "group_column": (Optional[str], typer.Option("--group-column", rich_help_panel=LAYOUT_PANEL, help="--metadata: the group (spurious attribute) column (default: place or group).")),
    "split_column": (Optional[str], typer.Option("--split-column", rich_help_panel=LAYOUT_PANEL, help="--metadata: the split column (default: split).")),
    "id_column": (Optional[str], typer.Option("--id-column", rich_help_panel=LAYOUT_PANEL, help="--metadata: the image id column that label --from-csv rows may name (default: img_id or id).")),
}


def _layout_options(fn):
    """Give a command the data-layout options (declared once, above) and hand it the ``DatasetLayout`` they make
    as ``data_layout``, active while it runs (every scan, pool and run record of the command follows it)."""
    from .engine import DatasetLayout, using_layout

    signature = inspect.signature(fn, eval_str=True)
    defaults = {f.name: f.default for f in dataclasses.fields(DatasetLayout)}
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=defaults[name], annotation=Annotated[kind, option])
             for name, (kind, option) in _LAYOUT_OPTIONS.items()]
    kept = [p for name, p in signature.parameters.items() if name != "data_layout"]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        values = {name: kwargs.pop(name, defaults[name]) for name in _LAYOUT_OPTIONS}
        values["metadata"] = str(values["metadata"]) if values["metadata"] is not None else None
        layout = DatasetLayout(**values)
        with using_layout(layout):
            return fn(*args, data_layout=layout, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=kept + added)
    wrapper.__annotations__ = {p.name: p.annotation for p in kept + added}
    return wrapper


def _run_options(workers: int, batch_size: int, shard: Optional[str], overwrite: bool, fail_fast: bool, no_progress: bool,
                 executor: Executor = Executor.local, ray_address: Optional[str] = None, gpus_per_worker: float = 0.0) -> RunOptions:
    return RunOptions(workers=workers, batch_size=batch_size, shard=resolve_shard(shard), overwrite=overwrite, fail_fast=fail_fast,
                      progress=not no_progress, executor=executor.value, ray_address=ray_address, gpus_per_worker=gpus_per_worker)


_STOPPED_RUN = False  # set when a command ended on a signal or a stopped run: main() then exits without waiting


def _handles_errors(fn):
    """Turn library exceptions into one clear line and an exit code; Ctrl-C, SIGTERM and SIGHUP stop the command
    cleanly (see engine.signals)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        global _STOPPED_RUN
        try:
            with stop_on_signals():
                return fn(*args, **kwargs)
        except StepError as exc:
            if getattr(exc, "report", None) is not None:  # the run started: what it did before it stopped
                print_summary(exc.report)
                _STOPPED_RUN = True
            console.print(f"[red]error:[/] {exc}")
            raise typer.Exit(2)
        except FailFast as exc:
            console.print(f"[red]stopped (--fail-fast):[/] {exc}")
            raise typer.Exit(1)
        except KeyboardInterrupt as exc:
            _STOPPED_RUN = True
            stop = as_interrupted(exc)
            if getattr(stop, "report", None) is not None:
                print_summary(stop.report)
            console.print(f"[yellow]interrupted[/] ({stop.args[0]}): {stop.hint}")
            raise typer.Exit(stop.exit_code)

    return wrapper


def _finish(report) -> None:
    print_summary(report)
    if report.failures:
        raise typer.Exit(1)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"autobackswap {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
    log_json: Annotated[Optional[Path], typer.Option("--log-json", dir_okay=False, envvar="AUTOBACKSWAP_LOG_JSON",
                                                     help="Append progress as JSON lines to this file (start, every 30 s, end), for dashboards. Give it before the subcommand.")] = None,
) -> None:
    """On a terminal progress is a live bar; in a log (stderr not a terminal: SLURM, Ray, make) it is a plain line
    every 30 s (AUTOBACKSWAP_LOG_INTERVAL sets the seconds)."""
    log_json_to(log_json)


# ----------------------------------------------------------------- sample-data


@app.command("sample-data")
@_handles_errors
def sample_data_cmd(
    out: Annotated[Path, typer.Argument(help="Folder to write the sample dataset to.")],
    seed: Seed = 0,
    size: Annotated[int, typer.Option("--size", help="Shorter image side in pixels.", min=32)] = 128,
    train_per_class: Annotated[int, typer.Option(help="Training images per class.", min=1)] = 60,
    test_per_group: Annotated[int, typer.Option(help="Test images per (class, background) pair.", min=1)] = 10,
    labelled: Annotated[int, typer.Option(help="Training images that get patch labels.", min=0)] = 60,
    grid: Grid = 16,
) -> None:
    """Write a small synthetic dataset whose classes are 100% tied to their backgrounds (with ground truth)."""
    from .sample_data import SampleSpec, generate

    summary = generate(out, SampleSpec(seed=seed, size=size, train_per_class=train_per_class, test_per_group=test_per_group, labelled=labelled, grid=grid))
    console.print(
        f"[green]sample data[/]: {summary['train_images']} training and {summary['test_images']} test images, "
        f"{summary['labelled_images']} labelled -> {out}"
    )


# ----------------------------------------------------------------- label


@app.command("label")
@_handles_errors
@_layout_options
def label_cmd(
    data: Annotated[Path, typer.Argument(help="Input ImageFolder (DATA/<class>/<image>), or any folder with --class-level / --metadata.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="LABELS folder to write P x P grids to (mirroring DATA's paths).")],
    from_masks: Annotated[Optional[Path], typer.Option("--from-masks", help="Import pixel masks mirroring DATA (DIR/<class>/<name>.png).")] = None,
    from_csv: Annotated[Optional[Path], typer.Option("--from-csv", help="Import the reference implementation's masks.csv (info,mask): info is a path under DATA (a leading '/' is fine) or, with --metadata, an image id (img_id).")] = None,
    from_coco: Annotated[Optional[Path], typer.Option("--from-coco", help="Import a COCO instances JSON (polygons and RLE).")] = None,
    count: Annotated[Optional[int], typer.Option("--count", help="Label only N images, stratified over classes.", min=1)] = None,
    grid: Annotated[Optional[int], typer.Option("--grid", help="Patch grid size P (default 16; --from-csv infers it from the mask length).", min=2)] = None,
    threshold: Annotated[float, typer.Option("--threshold", help="A patch is foreground when its mean mask value is at least this.", min=0.0, max=1.0)] = 0.25,
    export_csv: Annotated[Optional[Path], typer.Option("--export-csv", help="Also write LABELS as the reference masks.csv, naming images as the imported file did (ids with --metadata, '/path', or path).")] = None,
    segmenter: Annotated[Optional[Path], typer.Option("--segmenter", help="Labelling page: pre-fill each grid with this segmenter's prediction (SEGMENTER.safetensors).", dir_okay=False)] = None,
    host: Annotated[str, typer.Option("--host", help="Labelling page: address to listen on (127.0.0.1 keeps it on this machine).")] = "127.0.0.1",
    port: Annotated[Optional[int], typer.Option("--port", help="Labelling page: port (default 8765, or a free one when taken; 0 = any free one).", min=0, max=65535)] = None,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Labelling page: do not open a browser.")] = False,
    seed: Seed = 0,
    workers: Workers = default_workers(),
    overwrite: Overwrite = False,
    fail_fast: FailFastOpt = False,
    no_progress: NoProgress = False,
    data_layout=None,
) -> None:
    """Make patch labels: paint them on a local web page, or import them from masks, a masks.csv or COCO."""
    from .engine import prepare_items
    from .labels import ImportRequest, export_csv as write_csv, import_labels, read_labels_info, reference_names

    chosen = [(kind, path) for kind, path in (("masks", from_masks), ("csv", from_csv), ("coco", from_coco)) if path is not None]
    if len(chosen) > 1:
        raise StepError("use one of --from-masks, --from-csv, --from-coco")
    items, warnings = prepare_items(data, out, other_inputs=[from_masks, from_csv, from_coco, segmenter],
                                    output_files=[("--export-csv", export_csv)])
    if chosen:
        request = ImportRequest(*chosen[0], grid=grid, threshold=threshold, count=count, seed=seed)
        report = import_labels(data, out, items, request, _run_options(workers, 16, None, overwrite, fail_fast, no_progress), warnings)
    elif not export_csv:
        from .labeler import LabelStore, serve

        serve(LabelStore(data, out, items, count=count, seed=seed, grid=grid, segmenter=segmenter), host=host, port=port, open_browser=not no_browser)
        return
    if export_csv:
        rows, unlabelled = write_csv(out, items, export_csv, read_labels_info(out).grid, reference_names(out, data))
        console.print(f"exported {rows} labelled image(s) to {export_csv}" + (f" ({unlabelled} unlabelled patches written as 0)" if unlabelled else ""))
    if chosen:
        _finish(report)


# ----------------------------------------------------------------- train-segmenter


@app.command("train-segmenter")
@_handles_errors
@_layout_options
def train_segmenter_cmd(
    data: Annotated[Path, typer.Argument(help="Input folder: an ImageFolder (DATA/<class>/<image>), or any layout with --class-level / --metadata.")],
    labels: Annotated[Path, typer.Argument(help="LABELS folder (from `autobackswap label`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint file to write, e.g. segmenter.safetensors.", dir_okay=False)],
    backbone: Annotated[str, typer.Option("--backbone", help="u2netp (default: pixel-accurate, its pretrained weights ship with the package), small-cnn (patch resolution, from scratch), efficientnet_b0, resnet18, resnet50, mobilenet_v3_large.")] = "u2netp",
    pretrained: Annotated[bool, typer.Option("--pretrained", help="Start from torchvision's ImageNet weights (its cache, or a download).")] = False,
    weights: Annotated[Optional[Path], typer.Option("--weights", help="Start from a local torchvision state dict file.", dir_okay=False)] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Most epochs to train (early stopping may end sooner). Default: the backbone's (u2netp 80, others 40).", min=1, show_default=False)] = None,
    patience: Annotated[Optional[int], typer.Option("--patience", help="Stop after this many epochs without a better validation IoU. Default: the backbone's (u2netp 20, others 10).", min=1, show_default=False)] = None,
    batch_size: BatchSize = 16,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate (one-cycle schedule). Default: the backbone's (u2netp 0.004, others 0.002).", show_default=False)] = None,
    image_size: Annotated[Optional[int], typer.Option("--image-size", help="Network input side (default: backbone stride x grid: u2netp 160, small-cnn 128 for the 16-grid).")] = None,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of labelled images held out for validation.", min=0.0, max=0.9)] = 0.2,
    vflip: Annotated[bool, typer.Option("--vflip", help="Also augment with vertical flips (for top-down imagery).")] = False,
    device: Device = "auto",
    seed: Seed = 0,
    no_progress: NoProgress = False,
    data_layout=None,
) -> None:
    """Train the secondary network (the segmenter) from patch labels."""
    from .segmenter.train import TrainOptions, thresholds_line, train_segmenter

    if pretrained and weights:
        raise StepError("use either --pretrained or --weights FILE, not both")
    opts = TrainOptions(
        backbone=backbone, pretrained=pretrained, weights=str(weights) if weights else None, image_size=image_size,
        epochs=epochs, batch_size=batch_size, lr=lr, val_fraction=val_fraction, patience=patience, seed=seed,
        device=device, vflip=vflip,
    )
    result = train_segmenter(data, labels, out, opts, progress=not no_progress)
    m = result.metrics
    iou = f"{m['val_patch_iou']:.3f}" if m["val_patch_iou"] is not None else "n/a"
    console.print(
        f"[green]segmenter[/]: best epoch {m['best_epoch']} of {m['epochs_run']}, validation patch IoU {iou} "
        f"({m['train_images']} train / {m['val_images']} val images) -> {out}"
    )
    console.print(thresholds_line(result.thresholds))
    if result.failures:
        console.print(f"[red]{len(result.failures)} labelled image(s) could not be read[/] (listed above)")
        raise typer.Exit(1)


# ----------------------------------------------------------------- segment


@app.command("segment")
@_handles_errors
@_layout_options
def segment_cmd(
    data: Annotated[Path, typer.Argument(help="Input folder: an ImageFolder (DATA/<class>/<image>), or any layout with --class-level / --metadata.")],
    segmenter: Annotated[Path, typer.Option("--segmenter", "--model", "-m", help="Segmenter checkpoint from train-segmenter.", dir_okay=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="MASKS folder: <class>/<name>.png, value = P(foreground) * 255.")],
    refine: RefineOpt = Refine.grabcut,
    truth: Annotated[Optional[Path], typer.Option("--truth", help="Ground-truth masks mirroring DATA: print and record the IoU against them.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda (every visible GPU, one model each), cuda:N, cuda:0,1,... or mps. Under torchrun / a multi-task SLURM step: the GPU of the local rank.")] = "auto",
    gpus: Annotated[Optional[int], typer.Option("--gpus", help="With --device cuda: use the first N GPUs (default: all visible).", min=1)] = None,
    precision: PrecisionOpt = Precision.auto,
    workers: Workers = default_workers(),
    batch_size: BatchSize = 32,
    shard: ShardOpt = None,
    files_from: FilesFrom = None,
    executor: ExecutorOpt = Executor.local,
    ray_address: RayAddress = None,
    gpus_per_worker: GpusPerWorker = 0.0,
    overwrite: Overwrite = False,
    fail_fast: FailFastOpt = False,
    preview: Preview = None,
    no_progress: NoProgress = False,
    data_layout=None,
) -> None:
    """Segment every image: soft foreground masks at full resolution."""
    from .engine import prepare_items, run_step
    from .segmenter.predict import SegmentOptions, SegmentStep

    items, warnings = prepare_items(data, out, other_inputs=[truth, segmenter], files_from=files_from, output_files=[("--preview", preview)])
    step = SegmentStep(segmenter, out, SegmentOptions(device=device, gpus=gpus, refine=refine.value, precision=precision.value,
                                                      preview=str(preview) if preview else None, truth=str(truth) if truth else None))
    _finish(run_step(step, items, _run_options(workers, batch_size, shard, overwrite, fail_fast, no_progress, executor, ray_address, gpus_per_worker), warnings))


# ----------------------------------------------------------------- inpaint


@app.command("inpaint")
@_handles_errors
@_layout_options
def inpaint_cmd(
    data: Annotated[Path, typer.Argument(help="Input folder: an ImageFolder (DATA/<class>/<image>), or any layout with --class-level / --metadata.")],
    masks: Annotated[Path, typer.Argument(help="MASKS folder from `autobackswap segment` (or your own masks, 0..255).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="BACKGROUNDS folder: each image with its foreground filled in.")],
    method: MethodOpt = InpaintMethod.texture,
    model: InpaintModel = None,
    loose: Loose = None,
    dilate: Annotated[int, typer.Option("--dilate", help="Grow the fill region by this many pixels, so no halo survives.", min=0)] = 4,
    texture: Annotated[str, typer.Option("--texture", help="pyramid: restore texture from the known background: off, auto (as much as it predicts), or a strength such as 0.5. Slower.")] = "off",
    radius: Annotated[int, typer.Option("--radius", help="telea / ns: neighbourhood radius in pixels.", min=1)] = 3,
    prompt: Annotated[Optional[str], typer.Option("--prompt", help="diffusers: what to paint into the hole.")] = None,
    negative_prompt: Annotated[Optional[str], typer.Option("--negative-prompt", help="diffusers: what not to paint.")] = None,
    steps: Annotated[int, typer.Option("--steps", help="diffusers: denoising steps.", min=1)] = 25,
    guidance: Annotated[float, typer.Option("--guidance", help="diffusers: classifier-free guidance scale.")] = 7.5,
    resolution: Annotated[int, typer.Option("--resolution", help="diffusers: side of the square crop the model sees (multiple of 8).", min=8)] = 512,
    out_format: FormatOpt = OutputFormat.same,
    quality: Quality = 95,
    device: Device = "auto",
    precision: PrecisionOpt = Precision.auto,
    seed: Seed = 0,
    workers: Workers = default_workers(),
    batch_size: BatchSize = 4,
    shard: ShardOpt = None,
    files_from: FilesFrom = None,
    executor: ExecutorOpt = Executor.local,
    ray_address: RayAddress = None,
    gpus_per_worker: GpusPerWorker = 0.0,
    overwrite: Overwrite = False,
    fail_fast: FailFastOpt = False,
    preview: Preview = None,
    no_progress: NoProgress = False,
    data_layout=None,
) -> None:
    """Remove the foreground and fill the hole: a clean background per image."""
    from .engine import prepare_items, run_step
    from .inpaint import InpaintOptions, texture_strength
    from .inpaint.step import FillRegion, InpaintStep

    defaults = InpaintOptions()
    options = InpaintOptions(
        method=method.value, model=model, prompt=prompt or defaults.prompt, negative_prompt=negative_prompt if negative_prompt is not None else defaults.negative_prompt,
        steps=steps, guidance=guidance, resolution=resolution, radius=radius, texture=texture_strength(texture), seed=seed, device=device, precision=precision.value,
    )
    model_path = Path(model) if model and Path(model).exists() else None
    items, warnings = prepare_items(data, out, other_inputs=[masks, model_path], files_from=files_from, output_files=[("--preview", preview)])
    step = InpaintStep(masks, out, options, FillRegion(loose=loose, dilate=dilate), out_format=out_format.value, quality=quality, preview=str(preview) if preview else None)
    _finish(run_step(step, items, _run_options(workers, batch_size, shard, overwrite, fail_fast, no_progress, executor, ray_address, gpus_per_worker), warnings))


# ----------------------------------------------------------------- compose


def _floats(text: str, name: str, count: int) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count:
        raise StepError(f"{name} wants {count} comma-separated numbers; got {text!r}")
    return values


@app.command("compose")
@_handles_errors
@_layout_options
def compose_cmd(
    data: Annotated[Path, typer.Argument(help="Input folder (the foregrounds): an ImageFolder, or any layout with --class-level / --metadata.")],
    masks: Annotated[Path, typer.Argument(help="MASKS folder from `autobackswap segment`.")],
    backgrounds: Annotated[Path, typer.Argument(help="BACKGROUNDS folder from `autobackswap inpaint`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="OUT folder, always an ImageFolder: <class>/<path under DATA>__<bg-class>__<bg-name>.<ext> (the class by --class-level / --metadata), and manifest.csv (source, class and group of each composite).")],
    per_image: Annotated[int, typer.Option("--per-image", "-k", help="Composites per foreground image.", min=1)] = 1,
    bg_from: BgFrom = BackgroundsFrom.any,
    only_fg: Annotated[bool, typer.Option("--only-fg", help="Write each foreground on a flat fill instead (IN-9 Only-FG).")] = False,
    only_bg: Annotated[bool, typer.Option("--only-bg", help="Write each image's own clean background instead (IN-9 Only-BG).")] = False,
    include_originals: Annotated[bool, typer.Option("--include-originals", help="Also copy the original images into OUT.")] = False,
    tight: Tight = None,
    feather: Annotated[float, typer.Option("--feather", help="Soft edge of the foreground, in pixels.", min=0.0)] = 2.0,
    scale: Annotated[str, typer.Option("--scale", help="Random foreground scale range a,b (e.g. 0.8,1.2).")] = "1,1",
    rotate: Annotated[float, typer.Option("--rotate", help="Random rotation up to this many degrees either way.", min=0.0)] = 0.0,
    translate: Annotated[int, typer.Option("--translate", help="Random shift up to this many pixels on each axis (kept inside the frame).", min=0)] = 0,
    fill: Annotated[str, typer.Option("--fill", help="--only-fg: the flat fill colour as R,G,B.")] = "0,0,0",
    out_format: FormatOpt = OutputFormat.same,
    quality: Quality = 95,
    layout: Annotated[OutputLayout, typer.Option("--output-format", help="imagefolder (files, manifest.csv) or webdataset (tar shards OUT/shard-000000.tar + index.json, for millions of images).")] = OutputLayout.imagefolder,
    shard_size: Annotated[int, typer.Option("--shard-size", help="webdataset: samples per tar (an image's composites stay in one tar).", min=1)] = 1000,
    seed: Seed = 0,
    workers: Workers = default_workers(),
    shard: ShardOpt = None,
    files_from: FilesFrom = None,
    executor: ExecutorOpt = Executor.local,
    ray_address: RayAddress = None,
    gpus_per_worker: GpusPerWorker = 0.0,
    overwrite: Overwrite = False,
    fail_fast: FailFastOpt = False,
    preview: Preview = None,
    no_progress: NoProgress = False,
    data_layout=None,
) -> None:
    """Put every foreground onto backgrounds of other images and classes: the augmented dataset."""
    from .compose import ComposeOptions, compose_step
    from .engine import prepare_items, run_step

    if only_fg and only_bg:
        raise StepError("use either --only-fg or --only-bg")
    lo, hi = _floats(scale, "--scale", 2)
    options = ComposeOptions(
        per_image=per_image, bg_from=bg_from.value, variant="only-fg" if only_fg else ("only-bg" if only_bg else "swap"), tight=tight,
        feather=feather, scale=(lo, hi), rotate=rotate, translate=translate, fill=tuple(int(v) for v in _floats(fill, "--fill", 3)),
        include_originals=include_originals, out_format=out_format.value, quality=quality, seed=seed, layout=layout.value, shard_size=shard_size,
    )
    run_options = _run_options(workers, 1, shard, overwrite, fail_fast, no_progress, executor, ray_address, gpus_per_worker)
    items, warnings = prepare_items(data, out, other_inputs=[masks, backgrounds], files_from=files_from, output_files=[("--preview", preview)])
    step = compose_step(masks, backgrounds, out, options, preview=str(preview) if preview else None)
    _finish(run_step(step, items, run_options, warnings))


# ----------------------------------------------------------------- train-classifier


@app.command("train-classifier")
@_handles_errors
@_layout_options
def train_classifier_cmd(
    data: Annotated[Path, typer.Argument(help="Training ImageFolder, e.g. compose's OUT (its manifest.csv is ignored), or any folder with --class-level / --metadata.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model file to write, e.g. model.safetensors (+ model.safetensors.json: the run record).", dir_okay=False)],
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs.", min=1)] = 50,
    image_size: Annotated[int, typer.Option("--image-size", help="Network input side; images are resized (squashed) to it.", min=16)] = 64,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (one-cycle schedule).")] = 1e-2,
    batch_size: BatchSize = 32,
    device: Device = "auto",
    seed: Seed = 0,
    no_progress: NoProgress = False,
    data_layout=None,
) -> None:
    """Train a small CNN classifier (minutes on a CPU) to check what a dataset teaches; writes one safetensors file."""
    from .classifier import ClassifierOptions, train_classifier

    opts = ClassifierOptions(epochs=epochs, image_size=image_size, lr=lr, batch_size=batch_size, device=device, seed=seed)
    result = train_classifier(data, out, opts, progress=not no_progress)
    console.print(
        f"[green]classifier[/]: {result.images} images of {len(result.classes)} classes ({', '.join(result.classes)}), "
        f"final train accuracy {result.train_accuracy:.3f} -> {out}"
    )
    if result.failures:
        console.print(f"[red]{len(result.failures)} image(s) could not be read[/] (listed above)")
        raise typer.Exit(1)


# ----------------------------------------------------------------- evaluate


@app.command("evaluate")
@_handles_errors
@_layout_options
def evaluate_cmd(
    test: Annotated[Path, typer.Argument(help="Test ImageFolder (or any folder with --class-level / --metadata ... --split test).")],
    masks: Annotated[Path, typer.Option("--masks", help="MASKS of the test images (from `autobackswap segment`, or ground truth).")],
    backgrounds: Annotated[Path, typer.Option("--backgrounds", help="BACKGROUNDS of the test images (from `autobackswap inpaint`).")],
    model: Annotated[Optional[list[Path]], typer.Option("--model", "-m", help="Classifier file written by train-classifier; repeat to compare models.", dir_okay=False)] = None,
    arch: Annotated[Optional[str], typer.Option("--arch", help="Or a torchvision model name (e.g. resnet18) ...")] = None,
    weights: Annotated[Optional[Path], typer.Option("--weights", help="... with its state dict file: safetensors or torch.save, loaded without running code (never downloaded).", dir_okay=False)] = None,
    torchscript: Annotated[Optional[list[Path]], typer.Option("--torchscript", help="Or a TorchScript model from another tool (opt-in: TorchScript is deprecated and its files carry code); repeatable.", dir_okay=False)] = None,
    mix_from: Annotated[Optional[Path], typer.Option("--mix-from", help="Backgrounds for the mixed-* variants, by class (default: --backgrounds). On a test set whose backgrounds do not follow its classes, give the training set's.")] = None,
    groups: Annotated[Optional[Path], typer.Option("--groups", help="CSV with image,background columns (image relative to TEST): per-group and worst-group accuracy. With --metadata, its group column (e.g. Waterbirds' place) gives the groups instead.", dir_okay=False)] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the report as JSON.", dir_okay=False)] = None,
    chart: Annotated[Optional[Path], typer.Option("--chart", help="Write a bar chart PNG of the accuracies.", dir_okay=False)] = None,
    image_size: Annotated[Optional[int], typer.Option("--image-size", help="Model input side (default: from the model file, else 224).", min=8)] = None,
    device: Device = "auto",
    batch_size: BatchSize = 32,
    seed: Seed = 0,
    preview: Preview = None,
    no_progress: NoProgress = False,
    data_layout=None,
) -> None:
    """How much a classifier relies on backgrounds: IN-9 variants, BG-Gap, per-group and worst-group accuracy."""
    from .evaluate import EvaluateOptions, ModelSource, evaluate, print_report

    sources = [ModelSource(path=p) for p in model or []] + [ModelSource(path=p, torchscript=True) for p in torchscript or []]
    sources += [ModelSource(arch=arch, weights=weights)] if arch or weights else []
    options = EvaluateOptions(masks=masks, backgrounds=backgrounds, mix_from=mix_from, groups=groups, image_size=image_size, device=device,
                              batch_size=batch_size, seed=seed, json_path=json_out, chart=chart, preview=preview)
    evaluation = evaluate(test, sources, options, progress=not no_progress)
    print_report(evaluation)
    if evaluation.failures:
        raise typer.Exit(1)


@app.command("convert-model")
@_handles_errors
def convert_model_cmd(
    source: Annotated[Path, typer.Argument(help="An old-style model file: a segmenter saved with torch.save or a TorchScript classifier, from autobackswap before 0.2.", dir_okay=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="The safetensors file to write (default: SOURCE with the suffix .safetensors).", dir_okay=False)] = None,
) -> None:
    """Rewrite an old model file as safetensors weights with a JSON description (read without pickle)."""
    from .model_files import convert_model

    target, kind = convert_model(source, out)
    console.print(f"[green]convert-model[/]: {kind} {source} -> {target}")


# ----------------------------------------------------------------- run


@app.command("run")
@_handles_errors
@_layout_options
def run_cmd(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="Input folder: an ImageFolder (DATA/<class>/<image>), or any layout with --class-level / --metadata.")],
    labels: Annotated[Path, typer.Option("--labels", "-l", help="LABELS folder (from `autobackswap label`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="WORK folder: segmenter.safetensors, masks/, backgrounds/, composites/ and autobackswap.json (every step's options).")],
    config: Annotated[Optional[Path], typer.Option("--config", help="Replay the options of an earlier run: its WORK/autobackswap.json. Options given here override it.", dir_okay=False, exists=True)] = None,
    backbone: Annotated[str, typer.Option("--backbone", help="Segmenter backbone (see train-segmenter).")] = "u2netp",
    pretrained: Annotated[bool, typer.Option("--pretrained", help="Segmenter starts from torchvision's ImageNet weights.")] = False,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Most segmenter training epochs. Default: the backbone's (u2netp 80, others 40).", min=1, show_default=False)] = None,
    refine: RefineOpt = Refine.grabcut,
    method: MethodOpt = InpaintMethod.texture,
    model: InpaintModel = None,
    loose: Loose = None,
    tight: Tight = None,
    per_image: Annotated[int, typer.Option("--per-image", "-k", help="compose: composites per image.", min=1)] = 1,
    bg_from: BgFrom = BackgroundsFrom.any,
    out_format: FormatOpt = OutputFormat.same,
    quality: Quality = 95,
    layout: Annotated[OutputLayout, typer.Option("--output-format", help="compose: imagefolder or webdataset (tar shards).")] = OutputLayout.imagefolder,
    shard_size: Annotated[int, typer.Option("--shard-size", help="compose --output-format webdataset: samples per tar.", min=1)] = 1000,
    device: Device = "auto",
    precision: PrecisionOpt = Precision.auto,
    seed: Seed = 0,
    workers: Workers = default_workers(),
    batch_size: BatchSize = 32,
    shard: ShardOpt = None,
    overwrite: Overwrite = False,
    fail_fast: FailFastOpt = False,
    preview: Preview = None,
    no_progress: NoProgress = False,
    data_layout=None,
) -> None:
    """The whole chain: train-segmenter, segment, inpaint, compose (resumable step by step)."""
    from .pipeline import RUN_FLAGS, PipelineOptions, run_pipeline

    flags = {name: ctx.params[name] for name in RUN_FLAGS}
    flags = {k: v.value if isinstance(v, Enum) else (str(v) if isinstance(v, Path) else v) for k, v in flags.items()}
    if config is not None:  # the record's options, then what this command line says
        flags = {k: v for k, v in flags.items() if getattr(ctx.get_parameter_source(k), "name", "") == "COMMANDLINE"}
    base = PipelineOptions.from_record(config) if config else PipelineOptions()
    options = base.with_flags(flags)
    options.run = replace(options.run, shard=resolve_shard(shard), progress=not no_progress)
    options.preview = str(preview) if preview else None
    reports = run_pipeline(data, labels, out, options)
    console.print(f"[green]done[/]: composites in {out / 'composites'} (manifest.csv lists each one)")
    if any(r.failures for r in reports):
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    try:
        app(prog_name="autobackswap")
    except SystemExit as exc:
        if _STOPPED_RUN:
            _exit_without_waiting(exc.code)
        raise


def _exit_without_waiting(code) -> None:
    """End a stopped command now. Its record is written and its workers are stopped, but a worker that had to be
    killed can leave the process pool's thread waiting forever, and Python would wait for that thread at exit."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
