"""The loose and tight mask thresholds: the paper's, and those a MASKS folder's segmenter chose.

``segment`` records its segmenter's calibrated thresholds in MASKS' run record (``options.thresholds``); ``inpaint``
removes P(fg) >= loose and ``compose`` cuts out P(fg) >= tight, each taking an option first, then what MASKS
recorded, then the paper's value.
"""

from __future__ import annotations

import json
from pathlib import Path

from .descriptions import check_thresholds
from ..engine.record import RUN_RECORD

PAPER_THRESHOLDS = {"loose": 0.1, "tight": 0.5}  # the paper's loose and tight masks, for masks that do not say better


def recorded_thresholds(masks_dir: Path) -> dict:
    """The loose/tight thresholds that ``segment`` recorded in a MASKS folder ({} when it holds none):
    the values its segmenter chose on its validation labels. A record that holds malformed ones is a
    ``StepError`` naming it."""
    path = Path(masks_dir) / RUN_RECORD
    try:
        thresholds = json.loads(path.read_text())["options"].get("thresholds")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return {}
    if thresholds is None:
        return {}
    check_thresholds(thresholds, path, "options.thresholds")
    return {k: float(thresholds[k]) for k in PAPER_THRESHOLDS if thresholds.get(k) is not None}


def mask_threshold(masks_dir: Path, name: str, given: float | None = None) -> tuple[float, str]:
    """The ``loose`` or ``tight`` threshold to apply to a MASKS folder, and where it came from: ``given`` (an
    option), else what ``segment`` recorded there (its segmenter's calibrated value), else the paper's."""
    if given is not None:
        return float(given), "option"
    recorded = recorded_thresholds(masks_dir).get(name)
    if recorded is not None:
        return recorded, "masks' segmenter"
    return PAPER_THRESHOLDS[name], "default"
