"""Reading the small texts some options take: a list of numbers (``--scale 0.8,1.2``, ``--fill 0,255,0``) and a
choice among flags that exclude each other (``--only-fg`` / ``--only-bg``); and an option's value as the plain
value the library and the run record hold."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any, Mapping

from .engine.errors import StepError


def floats(text: str, name: str, count: int) -> tuple[float, ...]:
    """``count`` comma-separated numbers from ``text`` (option ``name``'s value); anything else is a StepError."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count:
        raise StepError(f"{name} wants {count} comma-separated numbers; got {text!r}")
    return values


def one_of(flags: Mapping[str, bool], default: str) -> str:
    """The one flag set among ``flags`` (option name -> given), without its dashes; ``default`` when none is set.
    Two or more are a StepError naming them."""
    given = [name for name, value in flags.items() if value]
    if len(given) > 1:
        raise StepError(f"use either {' or '.join(flags)}")
    return given[0].lstrip("-") if given else default


def plain(value: Any) -> Any:
    """An option's value as the library takes it: an Enum's value, a path's text, anything else as it is."""
    return value.value if isinstance(value, Enum) else (str(value) if isinstance(value, Path) else value)
