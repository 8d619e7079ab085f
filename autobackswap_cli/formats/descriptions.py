"""Validators for what the tool reads back from its own files: a model file's JSON description (segmenter,
classifier), the loose/tight thresholds a MASKS folder records, and the option sections of a run record
(``run --config``). ONE place per file kind: a bad file is one
``StepError`` naming the file and the field (exit 2), never a traceback, and never a size that would have every
image allocate terabytes.

Each check returns the description unchanged, so a caller can write ``meta = check_segmenter(meta, path)``.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import fields
from pathlib import Path

from ..engine.errors import StepError

MAX_GRID = 256  # patches per side
MAX_INPUT_SIZE = 4096  # network input side in pixels
MAX_CLASSES = 100_000
MAX_WIDTH = 4096  # classifier channels


def _fail(where: Path | str, key: str, problem: str) -> StepError:
    return StepError(f"{where}: field {key!r} {problem}")


def require_int(values: dict, key: str, low: int, high: int, where: Path | str, optional: bool = False) -> None:
    """``values[key]`` is an integer in [low, high] (``optional``: or absent / null)."""
    value = values.get(key)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(where, key, f"must be an integer from {low} to {high}; got {value!r}")
    if not low <= value <= high:
        raise _fail(where, key, f"must be from {low} to {high}; got {value}")


def require_numbers(values: dict, key: str, count: int, where: Path | str, positive: bool = False) -> None:
    """``values[key]`` is a list of ``count`` finite numbers (``positive``: each > 0)."""
    value = values.get(key)
    ok = isinstance(value, list) and len(value) == count and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or not positive) for v in value)
    if not ok:
        kind = "positive numbers" if positive else "numbers"
        raise _fail(where, key, f"must be a list of {count} {kind}; got {_short(value)}")


def require_mapping(values: dict, key: str, where: Path | str) -> None:
    """``values[key]`` is absent, null or a JSON object."""
    value = values.get(key)
    if value is not None and not isinstance(value, dict):
        raise _fail(where, key, f"must be an object; got {_short(value)}")


def check_thresholds(thresholds: object, where: Path | str, key: str = "thresholds") -> dict:
    """Loose and tight mask thresholds with 0 < loose <= tight <= 1 (either may be missing)."""
    if not isinstance(thresholds, dict):
        raise _fail(where, key, f"must be an object with loose and tight; got {_short(thresholds)}")
    for name in ("loose", "tight"):
        value = thresholds.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise _fail(where, f"{key}.{name}", f"must be a number in (0, 1]; got {_short(value)}")
    loose, tight = thresholds.get("loose"), thresholds.get("tight")
    if loose is not None and tight is not None and loose > tight:
        raise _fail(where, key, f"loose ({loose}) must not exceed tight ({tight})")
    return thresholds


def check_segmenter(description: dict, where: Path | str, backbones: dict) -> dict:
    """A segmenter file's description: a known backbone, grid and input size in range, normalisation of three
    channels, calibrated thresholds per refinement method."""
    _require_object(description, where)
    if description.get("backbone") not in backbones:
        raise _fail(where, "backbone", f"names no backbone of this version ({', '.join(backbones)}); got {_short(description.get('backbone'))}")
    require_int(description, "grid", 1, MAX_GRID, where)
    require_int(description, "image_size", 8, MAX_INPUT_SIZE, where)
    require_numbers(description, "mean", 3, where)
    require_numbers(description, "std", 3, where, positive=True)
    for key in ("options", "metrics", "labels"):
        require_mapping(description, key, where)
    thresholds = description.get("thresholds")
    if thresholds is not None:
        if not isinstance(thresholds, dict):
            raise _fail(where, "thresholds", f"must be an object (refinement -> loose, tight); got {_short(thresholds)}")
        for method, values in thresholds.items():
            check_thresholds(values, where, f"thresholds.{method}")
    return description


def check_classifier(description: dict, where: Path | str) -> dict:
    """A classifier file's description: its width, class names and input size."""
    _require_object(description, where)
    require_int(description, "width", 1, MAX_WIDTH, where)
    require_int(description, "image_size", 8, MAX_INPUT_SIZE, where)
    classes = description.get("classes")
    if not (isinstance(classes, list) and 1 <= len(classes) <= MAX_CLASSES and all(isinstance(c, str) and c for c in classes)):
        raise _fail(where, "classes", f"must be a list of class names; got {_short(classes)}")
    if len(set(classes)) != len(classes):
        raise _fail(where, "classes", "names a class twice")
    return description


def _require_object(description: object, where: Path | str) -> None:
    if not isinstance(description, dict):
        raise StepError(f"{where}: its description must be a JSON object; got {type(description).__name__}")


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_options(values: object, options_class: type, where: Path | str, section: str, choices: dict | None = None,
                  ranges: dict | None = None) -> dict:
    """One options section of a run record: an object whose keys are fields of the dataclass ``options_class``,
    each of its declared type, one of ``choices[key]`` and within ``ranges[key]`` ((low, high); None: open) where
    given. Errors name the key as ``section.key``."""
    if not isinstance(values, dict):
        raise _fail(where, section, f"must be an object; got {_short(values)}")
    hints = typing.get_type_hints(options_class)
    known = {f.name for f in fields(options_class)}
    for key, value in values.items():
        name = f"{section}.{key}"
        if key not in known:
            raise StepError(f"{where}: unknown option {name!r} (known: {', '.join(sorted(known))})")
        if not _has_type(value, hints[key]):
            raise _fail(where, name, f"must be {_type_name(hints[key])}; got {_short(value)}")
        if value is None:
            continue
        allowed = (choices or {}).get(key)
        if allowed is not None and value not in allowed:
            raise _fail(where, name, f"must be one of {', '.join(map(str, allowed))}; got {_short(value)}")
        low, high = (ranges or {}).get(key, (None, None))
        if (low is not None and value < low) or (high is not None and value > high):
            raise _fail(where, name, f"must be from {low if low is not None else '-inf'} to {high if high is not None else 'inf'}; got {value}")
    return values


def _has_type(value: object, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is tuple:
        return isinstance(value, (list, tuple)) and len(value) == len(args) and all(_has_type(v, a) for v, a in zip(value, args))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint in (str, Path):
        return isinstance(value, str)
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    return True  # a type the record does not hold as JSON: its constructor checks it


def _type_name(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is tuple:
        return f"a list of {len(args)} " + {int: "integers", float: "numbers"}.get(args[0], "values")
    return {bool: "true or false", int: "an integer", float: "a number", str: "text", Path: "a path", type(None): "null",
            dict: "an object"}.get(hint, getattr(hint, "__name__", str(hint)))
