"""``compose``'s options, shared by the step and ``BackSwapDataset``, and the one check of them."""

from __future__ import annotations

from dataclasses import dataclass

from ..engine import StepError
from .core import BG_RULES, DEFAULT_FEATHER, PLACES
from .layouts import OUTPUT_LAYOUTS

BG_MODES = tuple(BG_RULES)
VARIANTS = ("swap", "only-fg", "only-bg")


@dataclass
class ComposeOptions:
    """What to compose (variant, backgrounds per image and from where, cut-out, placement) and how to write it."""

    per_image: int = 1
    bg_from: str = "any"
    variant: str = "swap"
    tight: float | None = None  # alpha = P(fg) >= tight, then feathered; None: what MASKS' segmenter chose, else 0.5
    min_confidence: float | None = None  # leave out images whose mask's confidence is below; None: MASKS' recorded, else the default; 0: none
    feather: float = DEFAULT_FEATHER
    place: str = "own"  # a PLACES name: where the foreground goes on its new background
    scale: tuple[float, float] = (1.0, 1.0)
    rotate: float = 0.0  # degrees, uniform in [-rotate, rotate]
    translate: int = 0  # pixels, uniform in [-translate, translate] on each axis
    fill: tuple[int, int, int] = (0, 0, 0)  # only-fg: the flat fill colour
    include_originals: bool = False
    out_format: str = "same"
    quality: int = 95
    seed: int = 0
    layout: str = "imagefolder"  # an OUTPUT_LAYOUTS name: image files, or "webdataset" (tar shards of ``shard_size`` samples)
    shard_size: int = 1000

    def check(self) -> None:
        """A ``StepError`` for the first option out of its range or set."""
        if self.bg_from not in BG_RULES:
            raise StepError(f"--bg-from must be one of {', '.join(BG_MODES)}; got {self.bg_from!r}")
        if self.place not in PLACES:
            raise StepError(f"--place must be one of {', '.join(PLACES)}; got {self.place!r}")
        if self.variant not in VARIANTS:
            raise StepError(f"variant must be one of {', '.join(VARIANTS)}")
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise StepError(f"--scale a,b needs 0 < a <= b; got {lo},{hi}")
        if self.min_confidence is not None and not 0.0 <= self.min_confidence <= 1.0:
            raise StepError(f"--min-confidence must be in [0, 1]; got {self.min_confidence}")
        if len(self.fill) != 3 or not all(float(v).is_integer() and 0 <= v <= 255 for v in self.fill):
            raise StepError(f"--fill must be three whole numbers R,G,B in 0..255; got {','.join(str(v) for v in self.fill)}")
        if self.per_image < 1:
            raise StepError("--per-image must be at least 1")
        if self.layout not in OUTPUT_LAYOUTS:
            raise StepError(f"--output-layout must be {' or '.join(OUTPUT_LAYOUTS)}; got {self.layout!r}")
        if self.layout == "webdataset" and self.include_originals:
            raise StepError("--include-originals is for ImageFolder output; a WebDataset loader can read DATA beside the tars")
        if self.shard_size < 1:
            raise StepError("--shard-size must be at least 1")
