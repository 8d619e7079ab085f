"""Every option that takes one of a fixed set of values, as an Enum: the CLI shows and checks them (Typer), the
library takes them or their plain string values, and the run record holds the values. A registry that owns its
names is the source of its Enum: inpainting methods (``inpaint.BACKENDS``), backbones
(``segmenter/backbones.py``), edge refinements (``segmenter/refine.py``), output encodings (``images.IMAGE_FORMATS``).

``RANGES``: the lowest and highest value of every numeric option, declared once, for the command line (Typer's
min/max) and for what a ``run --config`` file gives (``pipeline.CONFIG_RANGES``)."""

from __future__ import annotations

from enum import Enum
from typing import Mapping

from .compose.layouts import OUTPUT_LAYOUTS
from .compose.core import PLACES
from .compose.pool import BG_RULES
from .images import encode_format_names
from .inpaint import BACKENDS
from .segmenter.backbones import BACKBONE_INFO
from .segmenter.refine import REFINERS


class Choice(str, Enum):
    """A str Enum whose members compare equal to, and print as, their values."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(member.value for member in cls)


_HELPS: dict[type, dict[str, str]] = {}


def choice(name: str, helps: Mapping[str, str]) -> type[Choice]:
    """A ``Choice`` Enum called ``name`` whose values are the keys of ``helps`` (in order), each with its help."""
    enum = Choice(name, [(value, value) for value in helps], module=__name__, qualname=name)
    _HELPS[enum] = dict(helps)
    return enum


def choice_help(enum: type[Choice], lead: str = "") -> str:
    """A help text naming every value of ``enum`` with what it does: ``lead`` then ``a (what a does), b, ...``."""
    helps = _HELPS.get(enum, {})
    return lead + ", ".join(f"{v} ({helps[v]})" if helps.get(v) else v for v in enum.values()) + "."


Precision = choice("Precision", {"auto": "fp16 on CUDA, else fp32", "fp32": "", "fp16": "", "bf16": ""})
Refine = choice("Refine", {name: refiner.help for name, refiner in REFINERS.items()})
InpaintMethod = choice("InpaintMethod", {name: backend.help for name, backend in BACKENDS.items()})
Backbone = choice("Backbone", {name: info.description for name, info in BACKBONE_INFO.items()})
OutputFormat = choice("OutputFormat", {"same": "as the input", **{name: "" for name in encode_format_names()}})
Pick = choice("Pick", {
    "random": "at random, evenly over classes",
    "uncertain": "the images whose masks --segmenter is least confident of, evenly over classes (it segments every unlabelled image once to find them)",
})
PreviewOrder = choice("PreviewOrder", {
    "least-confident": "the masks most likely wrong first, each captioned with its confidence: what to fix",
    "spread": "evenly spread over DATA: what the masks look like",
})
Executor = choice("Executor", {
    "local": "worker processes here",
    "ray": "a Ray Data pipeline: a local Ray instance, or --ray-address",
})


# compose's registries name these choices: BG_RULES (--bg-from) and OUTPUT_LAYOUTS (--output-layout)
BackgroundsFrom = choice("BackgroundsFrom", BG_RULES)
Place = choice("Place", PLACES)
OutputLayout = choice("OutputLayout", {name: help for name, (_, help) in OUTPUT_LAYOUTS.items()})


# name -> (lowest, highest; None: open), wherever an option or a run-record field of that name appears;
# "where.name" for one whose range differs there (where: the command or options class)
RANGES: dict[str, tuple] = {
    # the shared options (engine.CommonOptions)
    "workers": (0, None), "batch_size": (1, None), "gpus_per_worker": (0.0, None),
    # train-segmenter (segmenter.train.TrainOptions), train-classifier, evaluate
    "epochs": (1, None), "patience": (1, None), "image_size": (8, 4096), "val_fraction": (0.0, 0.9), "lr": (0.0, None),
    "max_shift": (0, None), "classifier.image_size": (16, 4096),
    # segment, inpaint (InpaintOptions, FillRegion)
    "gpus": (1, None), "steps": (1, None), "resolution": (8, 4096), "margin": (0.0, None), "radius": (1, None),
    "loose": (0.0, 1.0), "dilate": (0, None),
    # compose (ComposeOptions)
    "tight": (0.0, 1.0), "min_confidence": (0.0, 1.0), "feather": (0.0, None), "per_image": (1, None), "quality": (1, 100), "shard_size": (1, None),
    "rotate": (0.0, None), "translate": (0, None),
    # the data layout (engine.DatasetLayout)
    "class_level": (1, None),
    # label, sample-data
    "count": (1, None), "grid": (2, None), "threshold": (0.0, 1.0), "port": (0, 65535), "size": (32, None),
    "train_per_class": (1, None), "test_per_group": (1, None), "labelled": (0, None),
}


def value_range(name: str, where: str = "") -> tuple | None:
    """``RANGES``' (lowest, highest) of the option or field ``name`` (in ``where``: a command or options class);
    None when it has none."""
    return RANGES.get(f"{where}.{name}", RANGES.get(name))
