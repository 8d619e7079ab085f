"""Inpainting backends (a registry: one module per backend) and the ``inpaint`` step.

Adding a backend is one module with an ``Inpainter`` subclass plus one entry in ``backends.BACKENDS`` (its module,
class and help: the command line's ``--method`` choices and help come from here). Heavy backends are imported only
when chosen.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..engine import StepError
from .backends import BACKENDS, METHODS, Backend, make_inpainter
from .base import InpaintOptions, Inpainter


def inpaint_options(common=None, *, texture: str = "off", prompt: str | None = None, **values) -> InpaintOptions:
    """``InpaintOptions`` from what a command line gave: a value left out (None, or an empty ``prompt``) keeps its
    default, ``texture`` is ``--texture``'s text (off, auto or a number), and the shared options (seed, device,
    precision) come from ``common`` (an ``engine.CommonOptions``)."""
    given = {name: value for name, value in values.items() if value is not None}
    if prompt:
        given["prompt"] = prompt
    options = common.into(InpaintOptions, **given) if common is not None else InpaintOptions(**given)
    return replace(options, texture=texture_strength(texture))


def model_input(options: InpaintOptions) -> Path | None:
    """The local file or folder ``--model`` names (an input: nothing may be written there); None for a hub id."""
    return Path(options.model) if options.model and Path(options.model).exists() else None


def inpaint_folder(data: Path, masks: Path, out: Path, options: InpaintOptions, region, common, out_format: str = "same",
                   quality: int = 95):
    """``inpaint``: every image of DATA with its loose foreground (by MASKS, ``region``) filled, into OUT, through
    the engine with the shared options ``common`` (an ``engine.CommonOptions``); returns the run report."""
    from ..engine import run_on_folder
    from .step import InpaintStep

    def step():
        return InpaintStep(masks, out, options, region, out_format=out_format, quality=quality, preview=common.preview)

    return run_on_folder(data, out, step, common, other_inputs=[masks, model_input(options)])


__all__ = ["BACKENDS", "Backend", "InpaintOptions", "Inpainter", "METHODS", "inpaint_folder", "inpaint_options", "make_inpainter",
           "model_input", "texture_strength"]


def texture_strength(text: str) -> float:
    """``--texture`` (pyramid): off -> 0, auto -> -1, else the number given."""
    named = {"off": 0.0, "auto": -1.0}.get(text.strip().lower())
    if named is not None:
        return named
    try:
        return float(text)
    except ValueError:
        raise StepError(f"--texture must be off, auto or a number; got {text!r}") from None
