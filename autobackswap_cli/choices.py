"""Every option that takes one of a fixed set of values, as an Enum: the CLI shows and checks them (Typer), the
library takes them or their plain string values, and the run record holds the values."""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """A str Enum whose members compare equal to, and print as, their values."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(member.value for member in cls)


class Precision(Choice):
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class Refine(Choice):
    none = "none"
    guided = "guided"
    grabcut = "grabcut"


class InpaintMethod(Choice):
    texture = "texture"
    pyramid = "pyramid"
    telea = "telea"
    ns = "ns"
    diffusers = "diffusers"
    torchscript = "torchscript"


class BackgroundsFrom(Choice):
    any = "any"
    other_class = "other-class"
    same_class = "same-class"
    next_class = "next-class"


class OutputFormat(Choice):
    same = "same"
    png = "png"
    jpg = "jpg"
    jpeg = "jpeg"
    webp = "webp"


class OutputLayout(Choice):
    imagefolder = "imagefolder"
    webdataset = "webdataset"


class Executor(Choice):
    local = "local"
    ray = "ray"
