"""The background pool: the backgrounds on disk, by class, and the rules to pick one for a foreground.

``BG_RULES`` names the rules (``--bg-from``); ``BackgroundPool.choose`` applies one. Choosing is O(1) in the number
of backgrounds (an index per class), so composing a large dataset stays linear.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..engine import Dataset, DatasetLayout, StepError
from ..images import ImageError, ImageItem, path_key

# --bg-from: which classes a foreground's background may come from (class uniform, then image uniform)
BG_RULES = {
    "any": "any class, the foreground's own included",
    "other-class": "any class but the foreground's",
    "same-class": "the foreground's own class",
    "next-class": "the class after the foreground's, in sorted order, wrapping around",
}


def candidate_classes(rule: str, classes: list[str], fg_class: str) -> list[str]:
    """The classes (of the sorted ``classes`` that have backgrounds) that ``rule`` lets a foreground of
    ``fg_class`` take its background from."""
    if rule not in BG_RULES:
        raise StepError(f"--bg-from must be one of {', '.join(BG_RULES)}; got {rule!r}")
    if rule == "any":
        return classes
    if rule == "same-class":
        return [fg_class] if fg_class in classes else []
    if rule == "other-class":
        return [c for c in classes if c != fg_class]
    ordered = sorted(set(classes) | {fg_class})
    nxt = ordered[(ordered.index(fg_class) + 1) % len(ordered)]
    return [nxt] if nxt != fg_class and nxt in classes else []


class BackgroundPool:
    """The backgrounds on disk, by class, and the rule to pick one for a foreground.

    A background's class (and group) follows the data layout (``layout``, default an ImageFolder's), as its image's
    does: BACKGROUNDS mirror DATA. Backgrounds whose key is in ``leave_out`` (made from a mask not trusted: the
    object may still be in them) are not in the pool.
    """

    def __init__(self, backgrounds_dir: Path, layout: DatasetLayout | None = None, leave_out: set[str] = frozenset()):
        layout = layout or DatasetLayout()
        self.root = Path(backgrounds_dir)
        if not self.root.is_dir():
            raise StepError(f"backgrounds folder not found: {self.root}")
        scan, _ = Dataset(self.root, layout).scan(what="BACKGROUNDS")
        self.by_class: dict[str, list[str]] = {}
        self._index: dict[str, tuple[str, int, str | None]] = {}  # image key -> (class, position in by_class[class], group)
        self.left_out = 0
        for it in scan.items:
            if it.key in leave_out:
                self.left_out += 1
                continue
            members = self.by_class.setdefault(it.cls, [])
            self._index[it.key] = (it.cls, len(members), it.group)
            members.append(str(it.rel))
        self.classes = sorted(self.by_class)
        if not self.classes:
            raise StepError(f"no backgrounds found in {self.root} (run `autobackswap inpaint` first)")
        self._candidates: dict[tuple[str, str], list[str]] = {}

    def __len__(self) -> int:
        return len(self._index)

    def candidate_classes(self, fg_class: str, mode: str) -> list[str]:
        """The classes ``mode`` (a ``BG_RULES`` name) lets a foreground of ``fg_class`` draw from (cached)."""
        key = (fg_class, mode)
        if key not in self._candidates:
            self._candidates[key] = candidate_classes(mode, self.classes, fg_class)
        return self._candidates[key]

    def describe(self, rel: str) -> tuple[str, str | None]:
        """(class, group) of the background ``rel``."""
        cls, _, group = self._index[path_key(rel)]
        return cls, group

    def own(self, key: str) -> str | None:
        """The background made from the image with this key, if there is one."""
        found = self._index.get(key)
        return self.by_class[found[0]][found[1]] if found else None

    def choose(self, item: ImageItem, rng: np.random.Generator, mode: str, exclude: set[str]) -> str:
        """Class uniform, then image uniform (as in the paper); never the foreground's own background,
        and none of ``exclude`` (earlier picks for the same foreground) while others remain."""
        candidates = self.candidate_classes(item.cls, mode)
        own = self.own(item.key)
        for avoid in ({own, *exclude} - {None}, {own} - {None}):
            blocked: dict[str, list[int]] = {}  # class -> positions not to pick (a few: own and earlier picks)
            for cls, position, _ in (self._index[path_key(r)] for r in avoid):
                blocked.setdefault(cls, []).append(position)
            # only a class with as few images as are blocked drops out: check those, not every class
            full = {c for c, taken in blocked.items() if len(self.by_class.get(c, ())) <= len(taken)}
            classes = [c for c in candidates if c not in full] if full else candidates
            if classes:
                cls = classes[int(rng.integers(len(classes)))]
                position = int(rng.integers(len(self.by_class[cls]) - len(blocked.get(cls, ()))))
                for taken in sorted(blocked.get(cls, ())):  # step over blocked positions: uniform over the rest
                    if position >= taken:
                        position += 1
                return self.by_class[cls][position]
        raise ImageError(f"no background to choose from with --bg-from {mode} (classes with backgrounds: {', '.join(self.classes)})")
