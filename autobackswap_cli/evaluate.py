"""``evaluate``: how much a classifier relies on backgrounds, in numbers and a picture.

Every test image is shown to the model in six IN-9 style variants, built on the fly
from its mask and its clean background with the compose core's alpha, fitting, blending
and background choice (nothing is written to disk):

    original     the image as it is
    only-fg      the foreground on black
    only-bg      the image's own clean background, labelled with the image's class
    mixed-same   the foreground on the background of another image of the same class
    mixed-rand   ... of a random class (class uniform, then image uniform)
    mixed-next   ... of the next class (sorted order, wrapping around)

BG-Gap = acc(mixed-same) - acc(mixed-rand): how much a class-typical background
helps the model. The mixed variants draw backgrounds from ``mix_from`` (default:
the test set's own backgrounds); when the test set's backgrounds do not follow its
classes (a de-biased test set), point it at the training set's backgrounds.

With a groups CSV (``image,background`` columns; image relative to TEST), or a
metadata table with a group column (``--metadata``: Waterbirds' place), the original
images are also scored per (class, group), and the worst group is reported. Background choices come from (seed, image, variant), so a rerun gives
the same numbers and a byte-identical JSON. A test image whose mask has no foreground
has no only-fg or mixed variant: it is left out of every variant and counted apart
(``images.no_foreground``), not as a failure.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from rich.table import Table

from .classifier import Classifier, load_classifier
from .compose.core import Compositor, item_rng
from .engine import Dataset, DatasetLayout, RunReport, StepError, as_dataset, console, prepare_items, print_summary, read_items
from .images import ImageItem, preview_grid, read_image, spread_sample, write_bytes_atomic, write_image_atomic

VARIANTS = ("original", "only-fg", "only-bg", "mixed-same", "mixed-rand", "mixed-next")
MIXED = {"mixed-same": "same-class", "mixed-rand": "any", "mixed-next": "next-class"}  # variant -> compose --bg-from
PREVIEW_IMAGES = 4


@dataclass
class ModelSource:
    """A model file (``train-classifier``'s; with ``torchscript`` a foreign TorchScript file), or a torchvision
    architecture name with a local state dict."""

    path: Path | None = None
    arch: str | None = None
    weights: Path | None = None
    torchscript: bool = False


@dataclass
class EvaluateOptions:
    masks: Path
    backgrounds: Path
    mix_from: Path | None = None  # backgrounds for the mixed variants (default: ``backgrounds``)
    groups: Path | None = None
    image_size: int | None = None  # model input side (default: from the model file, else 224)
    device: str = "auto"
    batch_size: int = 32
    seed: int = 0
    json_path: Path | None = None
    chart: Path | None = None
    preview: Path | None = None  # a grid: a row per sampled test image, a column per variant


@dataclass
class Evaluation:
    """What ``evaluate`` found: ``report`` is the JSON; ``failures`` lists the test images that could not be used,
    ``no_foreground`` those left out because their mask has no foreground (no failure)."""

    report: dict
    failures: list[dict] = field(default_factory=list)
    wall_time_s: float = 0.0
    no_foreground: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- the variants


class VariantMaker:
    """Builds the six variants of a test image from its mask, its own background and a pool to mix from, through
    compose's core (the same cut-out and blend as ``compose``)."""

    def __init__(self, masks: Path, backgrounds: Path, mix_from: Path | None, seed: int, layout: DatasetLayout | None = None):
        self.own = Compositor(masks, backgrounds, layout=layout)
        self.mix = Compositor(masks, mix_from, layout=layout) if mix_from else self.own
        self.seed = seed

    def __call__(self, item: ImageItem) -> dict[str, np.ndarray]:
        image = read_image(item.path)
        h, w = image.shape[:2]
        alpha = self.own.alpha(item, (h, w))
        variants = {"original": image, "only-fg": self.own.paste(image, alpha, np.zeros_like(image))[0],
                    "only-bg": self.own.background(self.own.own_background(item), h, w)}
        for index, (variant, mode) in enumerate(MIXED.items()):
            chosen = self.mix.choose_background(item, item_rng(self.seed, item.key, index), mode)
            variants[variant] = self.mix.swap(image, alpha, chosen)[0]
        return variants


def read_groups(csv_path: Path, items: Sequence[ImageItem]) -> dict[str, str]:
    """Background group per test image key, from a CSV with ``image`` and ``background`` (or ``group``) columns."""
    if not Path(csv_path).is_file():
        raise StepError(f"groups CSV not found: {csv_path}")
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    columns = set(rows[0]) if rows else set()
    group_column = "background" if "background" in columns else "group"
    if "image" not in columns or group_column not in columns:
        raise StepError(f"{csv_path} needs the columns image and background (or group); found: {', '.join(sorted(columns)) or 'none'}")
    by_name = {str(PurePosixPath(r["image"]).with_suffix("")): r[group_column] for r in rows}
    groups = {it.key: by_name[it.key] for it in items if it.key in by_name}
    if len(groups) < len(items):
        console.print(f"[yellow]warning:[/] {len(items) - len(groups)} test image(s) are not in {csv_path}; they are left out of the per-group accuracy")
    return groups


def _groups(options: EvaluateOptions, items: Sequence[ImageItem], layout: DatasetLayout) -> tuple[dict[str, str] | None, str | None]:
    """Each test image's group, and where the groups came from: the ``--groups`` CSV, else the metadata table's
    group column (``--metadata``: Waterbirds' place), else none."""
    if options.groups:
        return read_groups(options.groups, items), f"csv {options.groups}"
    if any(it.group is not None for it in items):
        return {it.key: it.group for it in items if it.group is not None}, f"metadata {Path(layout.metadata).name if layout.metadata else ''}".strip()
    return None, None


# --------------------------------------------------------------------------- scoring


def _test_items(test: Dataset, sources: Sequence[ModelSource], options: EvaluateOptions) -> list[ImageItem]:
    """TEST's items, once no output (``--json``, ``--chart``, ``--preview``) is or lies inside what is read."""
    read = [options.masks, options.backgrounds, options.mix_from, options.groups, *(p for s in sources for p in (s.path, s.weights))]
    written = [("--json", options.json_path), ("--chart", options.chart), ("--preview", options.preview)]
    return prepare_items(test, other_inputs=read, output_files=written)[0]


def evaluate(test: Dataset | Path, sources: Sequence[ModelSource], options: EvaluateOptions, progress: bool = True) -> Evaluation:
    """Score every model on every variant of TEST; see the module docstring."""
    t0 = time.perf_counter()
    if not sources:
        raise StepError("give at least one model: --model FILE, or --arch NAME --weights FILE")
    test = as_dataset(test)
    test_dir = test.root
    items = _test_items(test, sources, options)
    make_variants = VariantMaker(options.masks, options.backgrounds, options.mix_from, options.seed, test.layout)
    groups, groups_from = _groups(options, items, test.layout)
    classes = sorted({it.cls for it in items})
    models = [load_classifier(s.path, s.arch, s.weights, len(classes), options.image_size, options.device, s.torchscript) for s in sources]
    _name_uniquely(models)
    scores = _score(items, make_variants, models, classes, options.batch_size, progress)
    report = {
        "test": str(test_dir),
        "masks": str(options.masks),
        "backgrounds": str(options.backgrounds),
        "mix_from": str(options.mix_from or options.backgrounds),
        "groups_csv": str(options.groups) if options.groups else None,
        "groups_from": groups_from,
        "seed": options.seed,
        "classes": classes,
        "images": {"total": len(items), "evaluated": len(items) - len(scores.failures) - len(scores.no_foreground), "failed": len(scores.failures),
                   "no_foreground": len(scores.no_foreground)},
        "variants": list(VARIANTS),
        "models": [_model_report(m, scores.correct[m.name], groups, items) for m in models],
        "failures": scores.failures,
        "no_foreground": sorted(scores.no_foreground),
    }
    evaluation = Evaluation(report, scores.failures, time.perf_counter() - t0, no_foreground=sorted(scores.no_foreground))
    _write_outputs(evaluation, options, scores.preview_tiles)
    return evaluation


@dataclass
class _Scores:
    """What scoring found: per model, variant and test image key whether the model was right; the images that
    could not be used and those without foreground; the preview's tiles."""

    correct: dict[str, dict[str, dict[str, bool]]]
    failures: list[dict] = field(default_factory=list)
    no_foreground: list[str] = field(default_factory=list)
    preview_tiles: list[np.ndarray] = field(default_factory=list)


def _score(items: Sequence[ImageItem], make_variants: VariantMaker, models: list[Classifier], classes: list[str], batch_size: int,
           progress: bool) -> _Scores:
    """Every model on every variant of every test image, ``batch_size`` images at a time."""
    label_names = {m.name: _label_names(m, classes) for m in models}
    scores = _Scores({m.name: {v: {} for v in VARIANTS} for m in models})
    preview_keys = {it.key for it in spread_sample(items, PREVIEW_IMAGES)}

    def score(built: list[tuple[ImageItem, dict]]) -> None:
        for model in models:
            for variant in VARIANTS:
                predicted = model.predict([v[variant] for _, v in built]) if built else []
                for (item, _), index in zip(built, predicted):
                    scores.correct[model.name][variant][item.key] = label_names[model.name][index] == item.cls

    built: list[tuple[ImageItem, dict]] = []
    for item, variants in read_items(items, make_variants, scores.failures, description="evaluate", progress=progress,
                                     no_foreground=scores.no_foreground):
        if item.key in preview_keys:
            scores.preview_tiles += [variants[v] for v in VARIANTS]
        built.append((item, variants))
        if len(built) == batch_size:
            score(built)
            built = []
    score(built)
    return scores


def _write_outputs(evaluation: Evaluation, options: EvaluateOptions, preview_tiles: list[np.ndarray]) -> None:
    """``--json``, ``--chart`` and ``--preview``, where asked for."""
    if options.json_path:
        write_bytes_atomic(options.json_path, (json.dumps(evaluation.report, indent=2) + "\n").encode())
    if options.chart:
        write_chart(evaluation, options.chart)
    if options.preview and preview_tiles:
        write_image_atomic(options.preview, preview_grid(preview_tiles, columns=len(VARIANTS)))


def _name_uniquely(models: list[Classifier]) -> None:
    """Models are named by their file stems, numbered when two are the same."""
    seen: set[str] = set()
    for m in models:
        name, n = m.name, 2
        while name in seen:
            name, n = f"{m.name}-{n}", n + 1
        m.name = name
        seen.add(name)


def _label_names(model: Classifier, test_classes: list[str]) -> list[str]:
    """The class name of each model output; a model that does not name them uses TEST's sorted classes (ImageFolder order)."""
    names = model.classes or test_classes
    width = model.output_width()
    if width != len(names):
        said = "its file names" if model.classes else "TEST has (the model names none)"
        raise StepError(f"model {model.source} scores {width} classes, but {said} {len(names)}: {', '.join(names)}")
    missing = sorted(set(test_classes) - set(names))
    if missing:
        raise StepError(f"model {model.source} does not know the test class(es) {', '.join(missing)} (it knows {', '.join(names)})")
    return names


def _mean(values) -> float | None:
    values = list(values)
    return round(sum(values) / len(values), 5) if values else None


def _model_report(model: Classifier, correct: dict[str, dict[str, bool]], groups: dict[str, str] | None, items: Sequence[ImageItem]) -> dict:
    accuracy = {v: _mean(correct[v].values()) for v in VARIANTS}
    gap = None if accuracy["mixed-same"] is None else round(accuracy["mixed-same"] - accuracy["mixed-rand"], 5)
    report = {"name": model.name, "source": model.source, "image_size": model.image_size, "accuracy": accuracy, "bg_gap": gap, "groups": None,
              "worst_group": None}
    if groups is not None:
        scored: dict[tuple[str, str], list[bool]] = {}
        for it in items:
            if it.key in groups and it.key in correct["original"]:
                scored.setdefault((it.cls, groups[it.key]), []).append(correct["original"][it.key])
        rows = [{"class": c, "background": g, "images": len(v), "accuracy": _mean(v)} for (c, g), v in sorted(scored.items())]
        report["groups"] = rows
        report["worst_group"] = min(rows, key=lambda r: r["accuracy"]) if rows else None
    return report


# --------------------------------------------------------------------------- output


def _fmt(value: float | None, signed: bool = False) -> str:
    return "n/a" if value is None else (f"{value:+.3f}" if signed else f"{value:.3f}")


def print_report(evaluation: Evaluation) -> None:
    """The accuracy table (a column per model) and, with groups, the per-group table."""
    report = evaluation.report
    models = report["models"]
    table = Table(title=f"background reliance on {report['test']} ({report['images']['evaluated']} images)")
    table.add_column("")
    for m in models:
        table.add_column(m["name"], justify="right")
    for v in VARIANTS:
        table.add_row(f"accuracy {v}", *(_fmt(m["accuracy"][v]) for m in models))
    table.add_row("BG-Gap (same - rand)", *(_fmt(m["bg_gap"], signed=True) for m in models), style="bold")
    if report["groups_from"]:
        table.add_row("worst-group accuracy", *(_worst(m) for m in models), style="bold")
    console.print(table)
    if report["groups_from"] and models[0]["groups"]:
        per_group = Table(title="accuracy per (class, background) group, original images")
        per_group.add_column("group")
        per_group.add_column("images", justify="right")
        for m in models:
            per_group.add_column(m["name"], justify="right")
        for i, g in enumerate(models[0]["groups"]):
            per_group.add_row(f"{g['class']} on {g['background']}", str(g["images"]), *(_fmt(m["groups"][i]["accuracy"]) for m in models))
        console.print(per_group)
    if evaluation.failures or evaluation.no_foreground:
        print_summary(RunReport(step="evaluate", out_dir=report["test"], total=report["images"]["total"], done=report["images"]["evaluated"],
                                failures=evaluation.failures, left_out={"no_foreground": list(evaluation.no_foreground)}, wall_time_s=evaluation.wall_time_s))


def _worst(model: dict) -> str:
    w = model["worst_group"]
    return "n/a" if w is None else f"{w['accuracy']:.3f} ({w['class']} on {w['background']})"


CHART_COLOURS = [(120, 120, 120), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]


def chart_image(models: Sequence[Mapping], title: str, width: int = 960, height: int = 440) -> np.ndarray:
    """A grouped bar chart: accuracy per variant (and worst group), one bar per model, value on each bar."""
    categories = list(VARIANTS) + (["worst group"] if any(m.get("worst_group") for m in models) else [])
    font, small = ImageFont.load_default(size=15), ImageFont.load_default(size=12)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 56, width - 16, 64, height - 40
    draw.text((left, 12), title, fill="black", font=font)
    for tick in range(5):  # y axis 0 .. 1
        y = bottom - (bottom - top) * tick / 4
        draw.line([(left, y), (right, y)], fill=(225, 225, 225))
        draw.text((left - 8, y), f"{tick / 4:.2f}", fill="black", font=small, anchor="rm")
    slot = (right - left) / len(categories)
    bar = slot * 0.8 / len(models)
    for c, category in enumerate(categories):
        x0 = left + c * slot + slot * 0.1
        draw.text((left + (c + 0.5) * slot, bottom + 8), category, fill="black", font=small, anchor="mt")
        for k, m in enumerate(models):
            value = m["worst_group"]["accuracy"] if category == "worst group" else m["accuracy"][category]
            if value is None:
                continue
            y = bottom - (bottom - top) * value
            draw.rectangle([x0 + k * bar, y, x0 + (k + 1) * bar - 2, bottom], fill=CHART_COLOURS[k % len(CHART_COLOURS)])
            draw.text((x0 + (k + 0.5) * bar, y - 3), f"{value:.2f}", fill="black", font=small, anchor="mb")
    x = left
    for k, m in enumerate(models):  # legend
        label = f"{m['name']} (BG-Gap {_fmt(m['bg_gap'], signed=True)})"
        draw.rectangle([x, 40, x + 12, 52], fill=CHART_COLOURS[k % len(CHART_COLOURS)])
        draw.text((x + 18, 46), label, fill="black", font=small, anchor="lm")
        x += 30 + draw.textlength(label, font=small)
    draw.line([(left, bottom), (right, bottom)], fill="black")
    return np.asarray(img)


def write_chart(evaluation: Evaluation, path: Path) -> None:
    """The chart of ``chart_image`` for this evaluation, as a PNG file."""
    report = evaluation.report
    title = f"accuracy by test variant - {report['test']} ({report['images']['evaluated']} images)"
    write_image_atomic(path, chart_image(report["models"], title))
