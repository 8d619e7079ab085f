"""The registry of inpainting methods: one entry per backend (its module in this package, its class and the help
``--method`` gives it). A backend's module is imported only when it is chosen, so `diffusers` is needed only then."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..engine import StepError
from .base import InpaintOptions, Inpainter


@dataclass(frozen=True)
class Backend:
    target: str  # "module:Class" in this package, imported lazily (so `diffusers` is needed only when used)
    help: str  # what --method's help says of it


# THE registry of inpainting methods: name -> backend, in the order --method lists them (the first is the default)
BACKENDS = {
    "texture": Backend("texture:TextureInpainter", "offline, continues the background's texture"),
    "pyramid": Backend("classical:PyramidInpainter", "smooth, fastest"),
    "telea": Backend("classical:TeleaInpainter", "OpenCV's Telea"),
    "ns": Backend("classical:NavierStokesInpainter", "OpenCV's Navier-Stokes"),
    "diffusers": Backend("diffusers_backend:DiffusersInpainter", "a diffusers inpainting pipeline, --model"),
    "torchscript": Backend("torchscript_backend:TorchScriptInpainter", "a LaMa-style TorchScript file, --model"),
}
METHODS = tuple(BACKENDS)


def make_inpainter(options: InpaintOptions) -> Inpainter:
    """The backend named by ``options.method``, constructed (models load later, in ``setup``)."""
    if options.method not in BACKENDS:
        raise StepError(f"--method must be one of {', '.join(METHODS)}; got {options.method!r}")
    module_name, class_name = BACKENDS[options.method].target.split(":")
    module = importlib.import_module(f"{__package__}.{module_name}")
    return getattr(module, class_name)(options)
