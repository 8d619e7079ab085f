"""The ``autobackswap`` command line: one thin function per subcommand, options -> one library call -> exit code.

Every option that more than one command takes is declared once, here: the shared options of the item steps
(``_SHARED``, handed to a command as one ``engine.CommonOptions``), the data-layout options (``_LAYOUT``, one
``engine.DatasetLayout``), and the step options ``run`` repeats (the ``Annotated`` aliases below). Choices and
their help come from the registries (``choices.py``), ranges from ``choices.RANGES``.

Exit codes: 0 all items done (images left out with no foreground are listed, not
failed), 1 some items failed (listed at the end and in the run record), 2 the run
could not start or had to stop (bad arguments, missing inputs, an output that cannot
be written), 130 interrupted by Ctrl-C, 143 by SIGTERM (128 + the signal).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import operator
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, Sequence

import typer

from . import __version__
from .choices import (Backbone, BackgroundsFrom, Executor, InpaintMethod, OutputFormat, OutputLayout, Pick, Place, Precision, PreviewOrder, Refine, choice_help,
                      value_range)
from .engine import (CommonOptions, Dataset, DatasetLayout, FailFast, StepError, as_interrupted, console, print_summary,
                     resolve_shard, stop_on_signals)
from .engine.progress import log_json_to
from .images import encode_format_help
from .parsing import plain
from .segmenter.backbones import DEFAULT_BACKBONE, backbone_help, default_help

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


def _range(name: str, where: str = "") -> dict:
    """Typer's min/max for option ``name`` (``choices.RANGES``)."""
    low, high = value_range(name, where) or (None, None)
    return {"min": low, "max": high}


_FROM_CLASS = object()  # an option's default is its options class's


@dataclasses.dataclass(frozen=True)
class _Declared:
    """One option, declared once: the type Typer parses, its ``typer.Option``, its default on the command line
    (default: the options class's), and the field of the options class it fills (``param`` is the command's
    parameter when it differs from the field) through ``convert`` (default: an Enum's value, a path's text)."""

    kind: Any
    option: Any
    default: Any = _FROM_CLASS
    param: Optional[str] = None
    convert: Optional[Callable[[Any], Any]] = None


# ----------------------------------------------------------------- shared options (declared once)
# field of engine.CommonOptions -> its option; a command picks those it takes by name (_command(shared=...))
_SHARED: dict[str, _Declared] = {
    "device": _Declared(str, typer.Option("--device", help=("auto, cpu, cuda, cuda:N, cuda:0,1,... or mps. A step with a model runs one copy per GPU "
                                                            "of cuda (segment --gpus N: the first N); under torchrun / a multi-task SLURM step, the "
                                                            "GPU of the local rank. A device that is not there is an error."))),
    "precision": _Declared(Precision, typer.Option("--precision", help=choice_help(Precision, "Model arithmetic: ")), default=Precision.auto),
    "seed": _Declared(int, typer.Option("--seed", help="Random seed; the same inputs and seed give identical outputs.")),
    "workers": _Declared(int, typer.Option("--workers", "-j", help="Worker processes for decoding/encoding (0 = in the main process).", **_range("workers"))),
    "batch_size": _Declared(int, typer.Option("--batch-size", "-b", help="Images per model batch.", **_range("batch_size"))),
    "shard": _Declared(Optional[str], typer.Option("--shard", help=("Process only shard K of N (0-based, e.g. 0/4). Default: from torchrun "
                                                                    "RANK/WORLD_SIZE or a SLURM array, else all.")),
                       default=None, convert=resolve_shard),
    "files_from": _Declared(Optional[Path], typer.Option("--files-from", dir_okay=False, help=("Take the images from this list (one path per line, "
                                                                                               "relative to DATA) instead of scanning DATA: for "
                                                                                               "datasets too big to scan."))),
    "executor": _Declared(Executor, typer.Option("--executor", help=choice_help(Executor, "How the items run: ") + (" Needs the ray extra: pip install "
                                                                                                                    "'autobackswap-cli\\[ray]'.")),
                                                                                                                    default=Executor.local),
    "ray_address": _Declared(Optional[str], typer.Option("--ray-address", help=("--executor ray: the cluster to join (e.g. ray://head:10001 or auto); "
                                                                                "default: start a local Ray instance."))),
    "gpus_per_worker": _Declared(float, typer.Option("--gpus-per-worker", help="--executor ray: GPUs each model actor asks for (e.g. 1; 0 = CPU).",
                                                     **_range("gpus_per_worker"))),
    "overwrite": _Declared(bool, typer.Option("--overwrite", help="Redo items whose outputs already exist (default: skip them).")),
    "fail_fast": _Declared(bool, typer.Option("--fail-fast", help="Stop at the first failed item instead of listing failures at the end.")),
    "preview": _Declared(Optional[Path], typer.Option("--preview", dir_okay=False, help=("Write a PNG grid of results to look at. Not onto an input, "
                                                                                         "nor inside the output folder but at its top "
                                                                                         "(OUT/preview.png)."))),
    "progress": _Declared(bool, typer.Option("--no-progress", help="Hide progress bars."), default=False, param="no_progress", convert=operator.not_),
}
# the subsets the commands take (run takes them all)
_ENGINE = ("workers", "shard", "files_from", "executor", "ray_address", "gpus_per_worker", "overwrite", "fail_fast", "preview", "progress")
_MODEL_STEP = ("device", "precision", "batch_size", *_ENGINE)
_TRAINER = ("device", "seed", "batch_size", "progress")

LAYOUT_PANEL = "Where the class comes from (DATA not an ImageFolder)"
# field of engine.DatasetLayout -> its option: added to every command that reads DATA, handed to it as data_layout
_LAYOUT: dict[str, _Declared] = {name: _Declared(kind, typer.Option(flag, rich_help_panel=LAYOUT_PANEL, help=text, **extra)) for name, kind, flag, text,
                                 extra in (
    ("class_level", int, "--class-level", ("The K-th folder under DATA names the class (1: DATA/<class>/...; Spawrious with DATA = m2m: 3, "
                                           "<env>/<location>/<breed>/)."), _range("class_level")),
    ("metadata", Optional[Path], "--metadata", ("A CSV (UTF-8) naming each image by its path under DATA, with its class and optionally group and "
                                                "split (e.g. Waterbirds' metadata.csv). Images without a row are left out. Class and group values "
                                                "become folder names: no /, ., .. or control characters."), {"dir_okay": False}),
    ("split", Optional[str], "--split", "--metadata: keep only the rows of this split (its value, or train/val/test for a table numbered 0/1/2).", {}),
    ("class_names", Optional[str], "--class-names", "--metadata: names for the class values 0,1,... (e.g. landbird,waterbird); default: the values.", {}),
    ("group_names", Optional[str], "--group-names", "--metadata: names for the group values 0,1,... (e.g. land,water).", {}),
    ("path_column", Optional[str], "--path-column", "--metadata: the path column (default: img_filename, path, filename, file or image).", {}),
    ("class_column", Optional[str], "--class-column", "--metadata: the class column (default: y, label, class or target).", {}),
    ("group_column", Optional[str], "--group-column", "--metadata: the group (spurious attribute) column (default: place or group).", {}),
    ("split_column", Optional[str], "--split-column", "--metadata: the split column (default: split).", {}),
    ("id_column", Optional[str], "--id-column", "--metadata: the image id column that label --from-csv rows may name (default: img_id or id).", {}),
)}

# renamed options: new spelling -> the old one, which still works (hidden) and prints a one-line note
_RENAMED = {"--encode-format": "--format", "--output-layout": "--output-format"}

# ----------------------------------------------------------------- step options that `run` repeats (declared once)
BackboneOpt = Annotated[Backbone, typer.Option("--backbone", help=backbone_help())]
Pretrained = Annotated[bool, typer.Option("--pretrained", help="Segmenter: start from torchvision's ImageNet weights (its cache, or a download).")]
SegmenterEpochs = Annotated[Optional[int], typer.Option("--epochs", help=(f"Most segmenter training epochs (early stopping may end sooner). Default: "
                                                                          f"the backbone's ({default_help('epochs')})."), show_default=False,
                                                                          **_range("epochs"))]
RefineOpt = Annotated[Refine, typer.Option("--refine", help=choice_help(Refine, "segment: snap mask edges to the image: "))]
MethodOpt = Annotated[InpaintMethod, typer.Option("--method", help=choice_help(InpaintMethod, "inpaint: "))]
InpaintModel = Annotated[Optional[str], typer.Option("--model", help=("inpaint: diffusers hub id or local pipeline folder; torchscript: model file "
                                                                      "(e.g. big-lama.pt)."))]
Loose = Annotated[Optional[float], typer.Option("--loose", help=("inpaint: fill where P(foreground) is at least this (the loose mask). Default: the "
                                                                 "threshold the segmenter chose on its validation labels (recorded in MASKS), else "
                                                                 "0.1."), show_default=False, **_range("loose"))]
Tight = Annotated[Optional[float], typer.Option("--tight", help=("compose: the foreground is where P(fg) is at least this (the tight mask). Default: "
                                                                 "the threshold the segmenter chose on its validation labels (recorded in MASKS), "
                                                                 "else 0.5."), show_default=False, **_range("tight"))]
MinConfidence = Annotated[Optional[float], typer.Option("--min-confidence", help=("compose: leave out images whose mask is probably wrong: their "
                                                                                  "confidence in MASKS/mask_quality.csv (written by segment) is below "
                                                                                  "this. They are counted and listed (not failures), and their "
                                                                                  "backgrounds stay out of the pool, as the object may still be in "
                                                                                  "them. 0 keeps every image. Default: what segment recorded in "
                                                                                  "MASKS, else 0.6."), show_default=False, **_range("min_confidence"))]
PerImage = Annotated[int, typer.Option("--per-image", "-k", help="compose: composites per foreground image.", **_range("per_image"))]
BgFrom = Annotated[BackgroundsFrom, typer.Option("--bg-from", help=choice_help(BackgroundsFrom, "compose: backgrounds from "))]
EncodeFormat = Annotated[OutputFormat, typer.Option("--encode-format", help=encode_format_help())]
Quality = Annotated[int, typer.Option("--quality", help="JPEG/WEBP quality.", **_range("quality"))]
LayoutOpt = Annotated[OutputLayout, typer.Option("--output-layout", help=choice_help(OutputLayout, "compose: "))]
ShardSize = Annotated[int, typer.Option("--shard-size", help=("compose --output-layout webdataset: samples per tar (an image's composites stay in one "
                                                              "tar)."), **_range("shard_size"))]


def _field_default(cls: type, name: str) -> Any:
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def _add_options(fn, table: dict[str, _Declared], names: Sequence[str], build: type, param: str, defaults: dict | None = None):
    """Give command ``fn`` the options ``names`` of ``table`` (``defaults`` overrides their defaults, also of those
    it does not take) and hand it the ``build`` object they make as its parameter ``param``."""
    signature = inspect.signature(fn, eval_str=True)
    params = {field: d.param or field for field, d in table.items()}
    default = {field: (d.default if d.default is not _FROM_CLASS else _field_default(build, field)) for field, d in table.items()}
    default.update(defaults or {})
    added = [inspect.Parameter(params[f], inspect.Parameter.KEYWORD_ONLY, default=default[f], annotation=Annotated[table[f].kind, table[f].option])
             for f in table if f in names]
    kept = [p for name, p in signature.parameters.items() if name != param]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        values = {f: kwargs.pop(params[f]) if f in names else default[f] for f in table}
        made = build(**{f: (table[f].convert or plain)(value) for f, value in values.items()})
        return fn(*args, **{param: made}, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=kept + added)
    wrapper.__annotations__ = {p.name: p.annotation for p in kept + added}
    return wrapper


def _old_spellings(fn):
    """Keep the old spelling of each renamed option (``_RENAMED``) of ``fn`` working: a hidden option that, when
    given, prints a one-line note to stderr and sets the new one as if given so (unless that is given too)."""
    signature = inspect.signature(fn, eval_str=True)
    renamed = {}
    for p in signature.parameters.values():
        info = next((m for m in getattr(p.annotation, "__metadata__", ()) if isinstance(m, typer.models.OptionInfo)), None)
        new = next((d for d in (info.default, *info.param_decls) if d in _RENAMED), None) if info else None
        if new:
            renamed[p.name] = (f"{p.name}_old_spelling", new, p.annotation.__origin__)
    if not renamed:
        return fn
    added = [inspect.Parameter(old, inspect.Parameter.KEYWORD_ONLY, default=None,
                               annotation=Annotated[Optional[kind], typer.Option(_RENAMED[new], hidden=True, help=f"Deprecated: {new}.")])
             for old, new, kind in renamed.values()]
    own_ctx = next((name for name, p in signature.parameters.items() if p.annotation is typer.Context), None)
    if own_ctx is None:  # Typer hands a command its context through a parameter of that type
        added.append(inspect.Parameter("spelling_ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = kwargs[own_ctx] if own_ctx else kwargs.pop("spelling_ctx")
        for name, (old, new, _) in renamed.items():
            value = kwargs.pop(old)
            if value is not None:
                typer.echo(f"note: {_RENAMED[new]} is deprecated; use {new}", err=True)
                source = ctx.get_parameter_source(name)
                if source.name != "COMMANDLINE":  # as if given with the new spelling
                    kwargs[name] = ctx.params[name] = value
                    ctx.set_parameter_source(name, type(source).COMMANDLINE)
        return fn(*args, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *added])
    wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}
    return wrapper


def _given(ctx: typer.Context) -> set[str]:
    """The options this command line gave (not defaults), by the field they set."""
    fields = {d.param or f: f for f, d in _SHARED.items()}
    return {fields.get(name, name) for name in ctx.params if getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"}


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
            raise typer.Exit(2) from None
        except FailFast as exc:
            console.print(f"[red]stopped (--fail-fast):[/] {exc}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt as exc:
            _STOPPED_RUN = True
            stop = as_interrupted(exc)
            if getattr(stop, "report", None) is not None:
                print_summary(stop.report)
            console.print(f"[yellow]interrupted[/] ({stop.args[0]}): {stop.hint}")
            raise typer.Exit(stop.exit_code) from None

    return wrapper


def _command(name: str, shared: Sequence[str] = (), layout: bool = True, **defaults):
    """Register command ``name``: the shared options ``shared`` (fields of ``_SHARED``; ``defaults`` sets their
    defaults for this command) handed to it as ``common``, the layout options (``layout``) as ``data_layout``,
    old option spellings kept, library errors turned into exit codes."""

    def register(fn):
        if shared:
            fn = _add_options(fn, _SHARED, shared, CommonOptions, "common", defaults)
        if layout:
            fn = _add_options(fn, _LAYOUT, tuple(_LAYOUT), DatasetLayout, "data_layout")
        return app.command(name)(_handles_errors(_old_spellings(fn)))

    return register


def _dataset(data: Path, layout: DatasetLayout, common: CommonOptions | None) -> Dataset:
    """DATA as the command line describes it: its folder, its class rule (``--class-level`` / ``--metadata``) and
    the list of its images (``--files-from``) where the command takes one."""
    return Dataset(data, layout, common.files_from if common is not None else None)


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
                                                     help=("Append progress as JSON lines to this file (start, every 30 s, end), for dashboards. Give "
                                                           "it before the subcommand."))] = None,
) -> None:
    """On a terminal progress is a live bar; in a log (stderr not a terminal: SLURM, Ray, make) it is a plain line
    every 30 s (AUTOBACKSWAP_LOG_INTERVAL sets the seconds)."""
    log_json_to(log_json)


# ----------------------------------------------------------------- sample-data


@_command("sample-data", shared=("seed",), layout=False)
def sample_data_cmd(
    out: Annotated[Path, typer.Argument(help="Folder to write the sample dataset to.")],
    size: Annotated[int, typer.Option("--size", help="Shorter image side in pixels.", **_range("size"))] = 128,
    train_per_class: Annotated[int, typer.Option(help="Training images per class.", **_range("train_per_class"))] = 60,
    test_per_group: Annotated[int, typer.Option(help="Test images per (class, background) pair.", **_range("test_per_group"))] = 10,
    labelled: Annotated[int, typer.Option(help="Training images that get patch labels.", **_range("labelled"))] = 60,
    grid: Annotated[int, typer.Option("--grid", help="Patch grid size P (P x P patches per image).", **_range("grid"))] = 16,
    common: CommonOptions = None,
) -> None:
    """Write a small synthetic dataset whose classes are 100% tied to their backgrounds (with ground truth)."""
    from .sample_data import SampleSpec, generate

    summary = generate(out, SampleSpec(seed=common.seed, size=size, train_per_class=train_per_class, test_per_group=test_per_group, labelled=labelled,
                                       grid=grid))
    console.print(
        f"[green]sample data[/]: {summary['train_images']} training and {summary['test_images']} test images, "
        f"{summary['labelled_images']} labelled -> {out}"
    )


# ----------------------------------------------------------------- label


@_command("label", shared=("seed", "device", "batch_size", "workers", "overwrite", "fail_fast", "progress"), batch_size=32)
def label_cmd(
    data: Annotated[Path, typer.Argument(help="Input ImageFolder (DATA/<class>/<image>), or any folder with --class-level / --metadata.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="LABELS folder to write P x P grids to (mirroring DATA's paths).")],
    from_masks: Annotated[Optional[Path], typer.Option("--from-masks", help="Import pixel masks mirroring DATA (DIR/<class>/<name>.png).")] = None,
    from_csv: Annotated[Optional[Path], typer.Option("--from-csv", help=("Import the reference implementation's masks.csv (info,mask): info is a path "
                                                                         "under DATA (a leading '/' is fine) or, with --metadata, an image id "
                                                                         "(img_id)."))] = None,
    from_coco: Annotated[Optional[Path], typer.Option("--from-coco", help="Import a COCO instances JSON (polygons and RLE).")] = None,
    count: Annotated[Optional[int], typer.Option("--count", help=("Label only N images, stratified over classes. A larger N later adds images; those "
                                                                  "labelled already stay."), **_range("count"))] = None,
    pick: Annotated[Pick, typer.Option("--pick", help=choice_help(Pick, "Which images --count adds: "))] = Pick("random"),
    grid: Annotated[Optional[int], typer.Option("--grid", help="Patch grid size P (default 16; --from-csv infers it from the mask length).",
                                                **_range("grid"))] = None,
    threshold: Annotated[float, typer.Option("--threshold", help="A patch is foreground when its mean mask value is at least this.",
                                             **_range("threshold"))] = 0.25,
    export_csv: Annotated[Optional[Path], typer.Option("--export-csv", help=("Also write LABELS as the reference masks.csv, naming images as the "
                                                                             "imported file did (ids with --metadata, '/path', or path)."))] = None,
    segmenter: Annotated[Optional[Path], typer.Option("--segmenter", help=("Labelling page: pre-fill each grid with this segmenter's prediction "
                                                                           "(SEGMENTER.safetensors); --pick uncertain: the segmenter whose masks to "
                                                                           "check."), dir_okay=False)] = None,
    host: Annotated[str, typer.Option("--host", help="Labelling page: address to listen on (127.0.0.1 keeps it on this machine).")] = "127.0.0.1",
    port: Annotated[Optional[int], typer.Option("--port", help="Labelling page: port (default 8765, or a free one when taken; 0 = any free one).",
                                                **_range("port"))] = None,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Labelling page: do not open a browser.")] = False,
    common: CommonOptions = None,
    data_layout: DatasetLayout = None,
) -> None:
    """Make patch labels: paint them on a local web page, or import them from masks, a masks.csv or COCO."""
    from .labeler.command import LabelRequest, make_labels

    request = LabelRequest(from_masks=from_masks, from_csv=from_csv, from_coco=from_coco, count=count, grid=grid, threshold=threshold,
                           export_csv=export_csv, segmenter=segmenter, pick=pick.value, host=host, port=port, open_browser=not no_browser)
    report = make_labels(_dataset(data, data_layout, common), out, request, common)
    if report is not None:
        _finish(report)


# ----------------------------------------------------------------- train-segmenter


@_command("train-segmenter", shared=_TRAINER, batch_size=16)
def train_segmenter_cmd(
    data: Annotated[Path, typer.Argument(help="Input folder: an ImageFolder (DATA/<class>/<image>), or any layout with --class-level / --metadata.")],
    labels: Annotated[Path, typer.Argument(help="LABELS folder (from `autobackswap label`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint file to write, e.g. segmenter.safetensors.", dir_okay=False)],
    backbone: BackboneOpt = Backbone(DEFAULT_BACKBONE),
    pretrained: Pretrained = False,
    weights: Annotated[Optional[Path], typer.Option("--weights", help="Start from a local torchvision state dict file.", dir_okay=False)] = None,
    epochs: SegmenterEpochs = None,
    patience: Annotated[Optional[int], typer.Option("--patience", help=(f"Stop after this many epochs without a better validation IoU. Default: the "
                                                                        f"backbone's ({default_help('patience')})."), show_default=False,
                                                                        **_range("patience"))] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help=(f"Peak learning rate (one-cycle schedule). Default: the backbone's "
                                                              f"({default_help('lr')})."), show_default=False, **_range("lr"))] = None,
    image_size: Annotated[Optional[int], typer.Option("--image-size", help=("Network input side (default: backbone stride x grid: u2netp 160, "
                                                                            "small-cnn 128 for the 16-grid)."), **_range("image_size"))] = None,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of labelled images held out for validation.", **_range("val_fraction"))] = 0.2,
    vflip: Annotated[bool, typer.Option("--vflip", help="Also augment with vertical flips (for top-down imagery).")] = False,
    common: CommonOptions = None,
    data_layout: DatasetLayout = None,
) -> None:
    """Train the secondary network (the segmenter) from patch labels."""
    from .segmenter.train import TrainOptions, thresholds_line, train_segmenter

    opts = common.into(TrainOptions, backbone=backbone.value, pretrained=pretrained, weights=str(weights) if weights else None, image_size=image_size,
                       epochs=epochs, lr=lr, val_fraction=val_fraction, patience=patience, vflip=vflip)
    result = train_segmenter(_dataset(data, data_layout, common), labels, out, opts, progress=common.progress)
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


@_command("segment", shared=_MODEL_STEP, batch_size=32)
def segment_cmd(
    data: Annotated[Path, typer.Argument(help="Input folder: an ImageFolder (DATA/<class>/<image>), or any layout with --class-level / --metadata.")],
    segmenter: Annotated[Path, typer.Option("--segmenter", "--model", "-m", help="Segmenter checkpoint from train-segmenter.", dir_okay=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="MASKS folder: <class>/<name>.png, value = P(foreground) * 255.")],
    refine: RefineOpt = Refine.grabcut,
    truth: Annotated[Optional[Path], typer.Option("--truth", help="Ground-truth masks mirroring DATA: print and record the IoU against them.")] = None,
    gpus: Annotated[Optional[int], typer.Option("--gpus", help="With --device cuda: use the first N GPUs (default: all visible).", **_range("gpus"))] = None,
    preview_order: Annotated[PreviewOrder, typer.Option("--preview-order", help=choice_help(PreviewOrder,
                                                                                            "--preview shows: "))] = PreviewOrder("least-confident"),
    common: CommonOptions = None,
    data_layout: DatasetLayout = None,
) -> None:
    """Segment every image: soft foreground masks at full resolution, and how likely each is right
    (MASKS/mask_quality.csv: compose leaves out the masks probably wrong; --preview shows them first)."""
    from .engine import run_on_folder
    from .segmenter.predict import SegmentOptions, SegmentStep

    options = common.into(SegmentOptions, gpus=gpus, refine=refine.value, truth=str(truth) if truth else None, preview_order=preview_order.value)
    _finish(run_on_folder(_dataset(data, data_layout, common), out, lambda: SegmentStep(segmenter, out, options), common, other_inputs=[truth, segmenter]))


# ----------------------------------------------------------------- inpaint


@_command("inpaint", shared=("seed", *_MODEL_STEP), batch_size=4)
def inpaint_cmd(
    data: Annotated[Path, typer.Argument(help="Input folder: an ImageFolder (DATA/<class>/<image>), or any layout with --class-level / --metadata.")],
    masks: Annotated[Path, typer.Argument(help="MASKS folder from `autobackswap segment` (or your own masks, 0..255).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="BACKGROUNDS folder: each image with its foreground filled in.")],
    method: MethodOpt = InpaintMethod.texture,
    model: InpaintModel = None,
    loose: Loose = None,
    dilate: Annotated[int, typer.Option("--dilate", help="Grow the fill region by this many pixels, so no halo survives.", **_range("dilate"))] = 4,
    texture: Annotated[str, typer.Option("--texture", help=("pyramid: restore texture from the known background: off, auto (as much as it predicts), "
                                                            "or a strength such as 0.5. Slower."))] = "off",
    radius: Annotated[int, typer.Option("--radius", help="telea / ns: neighbourhood radius in pixels.", **_range("radius"))] = 3,
    prompt: Annotated[Optional[str], typer.Option("--prompt", help="diffusers: what to paint into the hole.")] = None,
    negative_prompt: Annotated[Optional[str], typer.Option("--negative-prompt", help="diffusers: what not to paint.")] = None,
    steps: Annotated[int, typer.Option("--steps", help="diffusers: denoising steps.", **_range("steps"))] = 25,
    guidance: Annotated[float, typer.Option("--guidance", help="diffusers: classifier-free guidance scale.")] = 7.5,
    resolution: Annotated[int, typer.Option("--resolution", help="diffusers: side of the square crop the model sees (multiple of 8).",
                                            **_range("resolution"))] = 512,
    out_format: EncodeFormat = OutputFormat.same,
    quality: Quality = 95,
    common: CommonOptions = None,
    data_layout: DatasetLayout = None,
) -> None:
    """Remove the foreground and fill the hole: a clean background per image."""
    from .inpaint import inpaint_folder, inpaint_options
    from .inpaint.step import FillRegion

    options = inpaint_options(common, method=method.value, model=model, prompt=prompt, negative_prompt=negative_prompt, steps=steps,
                              guidance=guidance, resolution=resolution, radius=radius, texture=texture)
    region = FillRegion(loose=loose, dilate=dilate)
    _finish(inpaint_folder(_dataset(data, data_layout, common), masks, out, options, region, common, out_format=out_format.value, quality=quality))


# ----------------------------------------------------------------- compose


@_command("compose", shared=("seed", *_ENGINE), batch_size=1)
def compose_cmd(
    data: Annotated[Path, typer.Argument(help="Input folder (the foregrounds): an ImageFolder, or any layout with --class-level / --metadata.")],
    masks: Annotated[Path, typer.Argument(help="MASKS folder from `autobackswap segment`.")],
    backgrounds: Annotated[Path, typer.Argument(help="BACKGROUNDS folder from `autobackswap inpaint`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help=("OUT folder: an ImageFolder <class>/<path under DATA>__<bg-class>__<bg-name>.<ext> (the "
                                                           "class by --class-level / --metadata) and manifest.csv (source, class and group of each "
                                                           "composite); with --output-layout webdataset, tar shards and index.json instead."))],
    per_image: PerImage = 1,
    bg_from: BgFrom = BackgroundsFrom.any,
    only_fg: Annotated[bool, typer.Option("--only-fg", help="Write each foreground on a flat fill instead (IN-9 Only-FG).")] = False,
    only_bg: Annotated[bool, typer.Option("--only-bg", help="Write each image's own clean background instead (IN-9 Only-BG).")] = False,
    include_originals: Annotated[bool, typer.Option("--include-originals", help="Also copy the original images into OUT.")] = False,
    tight: Tight = None,
    min_confidence: MinConfidence = None,
    place: Annotated[Place, typer.Option("--place", help=choice_help(Place, "Where the foreground goes on its new background: "))] = Place("own"),
    feather: Annotated[float, typer.Option("--feather", help="Soft edge of the foreground, in pixels.", **_range("feather"))] = 2.0,
    scale: Annotated[str, typer.Option("--scale", help="Random foreground scale range a,b (e.g. 0.8,1.2).")] = "1,1",
    rotate: Annotated[float, typer.Option("--rotate", help="Random rotation up to this many degrees either way.", **_range("rotate"))] = 0.0,
    translate: Annotated[int, typer.Option("--translate", help="Random shift up to this many pixels on each axis (kept inside the frame).",
                                           **_range("translate"))] = 0,
    fill: Annotated[str, typer.Option("--fill", help="--only-fg: the flat fill colour as R,G,B.")] = "0,0,0",
    out_format: EncodeFormat = OutputFormat.same,
    quality: Quality = 95,
    layout: LayoutOpt = OutputLayout.imagefolder,
    shard_size: ShardSize = 1000,
    common: CommonOptions = None,
    data_layout: DatasetLayout = None,
) -> None:
    """Put every foreground onto backgrounds of other images and classes: the augmented dataset."""
    from .compose import ComposeOptions, compose_step
    from .engine import run_on_folder
    from .parsing import floats, one_of

    variant = one_of({"--only-fg": only_fg, "--only-bg": only_bg}, default="swap")
    options = common.into(  # --scale / --fill read here until the compose package reads them
        ComposeOptions, per_image=per_image, bg_from=bg_from.value, variant=variant, tight=tight, min_confidence=min_confidence,
        place=place.value, feather=feather,
        scale=floats(scale, "--scale", 2),
        rotate=rotate, translate=translate, fill=tuple(int(v) for v in floats(fill, "--fill", 3)), include_originals=include_originals,
        out_format=out_format.value, quality=quality, layout=layout.value, shard_size=shard_size,
    )
    step = functools.partial(compose_step, masks, backgrounds, out, options, preview=common.preview, layout=data_layout)
    _finish(run_on_folder(_dataset(data, data_layout, common), out, step, common, other_inputs=[masks, backgrounds]))


# ----------------------------------------------------------------- train-classifier


@_command("train-classifier", shared=_TRAINER, batch_size=32)
def train_classifier_cmd(
    data: Annotated[Path, typer.Argument(help=("Training ImageFolder, e.g. compose's OUT (its manifest.csv is ignored), or any folder with "
                                               "--class-level / --metadata."))],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model file to write, e.g. model.safetensors (+ model.safetensors.json: the run record).",
                                      dir_okay=False)],
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs.", **_range("epochs"))] = 50,
    image_size: Annotated[int, typer.Option("--image-size", help="Network input side; images are resized (squashed) to it.", **_range("image_size",
                                                                                                                                      "classifier"))] = 64,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (one-cycle schedule).", **_range("lr"))] = 1e-2,
    common: CommonOptions = None,
    data_layout: DatasetLayout = None,
) -> None:
    """Train a small CNN classifier (minutes on a CPU) to check what a dataset teaches; writes one safetensors file."""
    from .classifier import ClassifierOptions, train_classifier

    options = common.into(ClassifierOptions, epochs=epochs, image_size=image_size, lr=lr)
    result = train_classifier(_dataset(data, data_layout, common), out, options, progress=common.progress)
    console.print(
        f"[green]classifier[/]: {result.images} images of {len(result.classes)} classes ({', '.join(result.classes)}), "
        f"final train accuracy {result.train_accuracy:.3f} -> {out}"
    )
    if result.failures:
        console.print(f"[red]{len(result.failures)} image(s) could not be read[/] (listed above)")
        raise typer.Exit(1)


# ----------------------------------------------------------------- evaluate


@_command("evaluate", shared=(*_TRAINER, "preview"), batch_size=32)
def evaluate_cmd(
    test: Annotated[Path, typer.Argument(help="Test ImageFolder (or any folder with --class-level / --metadata ... --split test).")],
    masks: Annotated[Path, typer.Option("--masks", help="MASKS of the test images (from `autobackswap segment`, or ground truth).")],
    backgrounds: Annotated[Path, typer.Option("--backgrounds", help="BACKGROUNDS of the test images (from `autobackswap inpaint`).")],
    model: Annotated[Optional[list[Path]], typer.Option("--model", "-m", help="Classifier file written by train-classifier; repeat to compare models.",
                                                        dir_okay=False)] = None,
    arch: Annotated[Optional[str], typer.Option("--arch", help="Or a torchvision model name (e.g. resnet18) ...")] = None,
    weights: Annotated[Optional[Path], typer.Option("--weights", help=("... with its state dict file: safetensors or torch.save, loaded without "
                                                                       "running code (never downloaded)."), dir_okay=False)] = None,
    torchscript: Annotated[Optional[list[Path]], typer.Option("--torchscript", help=("Or a TorchScript model from another tool (opt-in: TorchScript "
                                                                                     "is deprecated and its files carry code); repeatable."),
                                                                                     dir_okay=False)] = None,
    mix_from: Annotated[Optional[Path], typer.Option("--mix-from", help=("Backgrounds for the mixed-* variants, by class (default: --backgrounds). On "
                                                                         "a test set whose backgrounds do not follow its classes, give the training "
                                                                         "set's."))] = None,
    groups: Annotated[Optional[Path], typer.Option("--groups", help=("CSV with image,background columns (image relative to TEST): per-group and "
                                                                     "worst-group accuracy. With --metadata, its group column (e.g. Waterbirds' "
                                                                     "place) gives the groups instead."), dir_okay=False)] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the report as JSON.", dir_okay=False)] = None,
    chart: Annotated[Optional[Path], typer.Option("--chart", help="Write a bar chart PNG of the accuracies.", dir_okay=False)] = None,
    image_size: Annotated[Optional[int], typer.Option("--image-size", help="Model input side (default: from the model file, else 224).",
                                                      **_range("image_size"))] = None,
    common: CommonOptions = None,
    data_layout: DatasetLayout = None,
) -> None:
    """How much a classifier relies on backgrounds: IN-9 variants, BG-Gap, per-group and worst-group accuracy."""
    from .evaluate import EvaluateOptions, ModelSource, evaluate, print_report

    sources = [ModelSource(path=p) for p in model or []] + [ModelSource(path=p, torchscript=True) for p in torchscript or []]
    sources += [ModelSource(arch=arch, weights=weights)] if arch or weights else []
    options = common.into(EvaluateOptions, masks=masks, backgrounds=backgrounds, mix_from=mix_from, groups=groups, image_size=image_size,
                          json_path=json_out, chart=chart)
    evaluation = evaluate(_dataset(test, data_layout, common), sources, options, progress=common.progress)
    print_report(evaluation)
    if evaluation.failures:
        raise typer.Exit(1)


@_command("convert-model", layout=False)
def convert_model_cmd(
    source: Annotated[Path, typer.Argument(help=("An old-style model file: a segmenter saved with torch.save or a TorchScript classifier, from "
                                                 "autobackswap before 0.2."), dir_okay=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="The safetensors file to write (default: SOURCE with the suffix .safetensors).",
                                                dir_okay=False)] = None,
) -> None:
    """Rewrite an old model file as safetensors weights with a JSON description (read without pickle)."""
    from .convert import convert_model

    target, kind = convert_model(source, out)
    console.print(f"[green]convert-model[/]: {kind} {source} -> {target}")


# ----------------------------------------------------------------- run


@_command("run", shared=tuple(_SHARED), batch_size=32)
def run_cmd(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="Input folder: an ImageFolder (DATA/<class>/<image>), or any layout with --class-level / --metadata.")],
    labels: Annotated[Path, typer.Option("--labels", "-l", help="LABELS folder (from `autobackswap label`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help=("WORK folder: segmenter.safetensors, masks/, backgrounds/, composites/ and "
                                                           "autobackswap.json (every step's options)."))],
    config: Annotated[Optional[Path], typer.Option("--config", help=("Replay the options of an earlier run: its WORK/autobackswap.json. Options given "
                                                                     "here override it."), dir_okay=False, exists=True)] = None,
    backbone: BackboneOpt = Backbone(DEFAULT_BACKBONE),
    pretrained: Pretrained = False,
    epochs: SegmenterEpochs = None,
    refine: RefineOpt = Refine.grabcut,
    method: MethodOpt = InpaintMethod.texture,
    model: InpaintModel = None,
    loose: Loose = None,
    tight: Tight = None,
    min_confidence: MinConfidence = None,
    per_image: PerImage = 1,
    bg_from: BgFrom = BackgroundsFrom.any,
    out_format: EncodeFormat = OutputFormat.same,
    quality: Quality = 95,
    layout: LayoutOpt = OutputLayout.imagefolder,
    shard_size: ShardSize = 1000,
    common: CommonOptions = None,
    data_layout: DatasetLayout = None,
) -> None:
    """The whole chain: train-segmenter, segment, inpaint, compose (resumable step by step)."""
    from .pipeline import run_options, run_pipeline

    options = run_options(common, data_layout, ctx.params, config=config, given=_given(ctx))
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
    killed can leave the process pool's thread waiting forever, and Python would wait for that thread at exit.
    Nothing is left behind: the temporary folder of the worker processes goes too."""
    from .engine.workers import remove_process_temp_dir

    remove_process_temp_dir()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
