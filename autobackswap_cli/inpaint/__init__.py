"""Inpainting backends (a registry: one module per backend) and the ``inpaint`` step.

Adding a backend is one module with an ``Inpainter`` subclass plus one line in
``_BACKENDS``. Heavy backends are imported only when chosen.
"""

from __future__ import annotations

import importlib

from ..engine import StepError
from .base import InpaintOptions, Inpainter

# method name -> "module:Class" (imported lazily, so `diffusers` is needed only when used)
_BACKENDS = {
    "texture": "texture:TextureInpainter",
    "pyramid": "classical:PyramidInpainter",
    "telea": "classical:TeleaInpainter",
    "ns": "classical:NavierStokesInpainter",
    "diffusers": "diffusers_backend:DiffusersInpainter",
    "torchscript": "torchscript_backend:TorchScriptInpainter",
}
METHODS = tuple(_BACKENDS)


def make_inpainter(options: InpaintOptions) -> Inpainter:
    """The backend named by ``options.method``, constructed (models load later, in ``setup``)."""
    if options.method not in _BACKENDS:
        raise StepError(f"--method must be one of {', '.join(METHODS)}; got {options.method!r}")
    module_name, class_name = _BACKENDS[options.method].split(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, class_name)(options)


__all__ = ["InpaintOptions", "Inpainter", "METHODS", "make_inpainter", "texture_strength"]


def texture_strength(text: str) -> float:
    """``--texture`` (pyramid): off -> 0, auto -> -1, else the number given."""
    named = {"off": 0.0, "auto": -1.0}.get(text.strip().lower())
    if named is not None:
        return named
    try:
        return float(text)
    except ValueError:
        raise StepError(f"--texture must be off, auto or a number; got {text!r}") from None
