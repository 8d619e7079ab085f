"""``BackSwapDataset``: compose on the fly, for training: every epoch sees fresh foreground/background pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..engine import Dataset, as_dataset
from ..images import read_image
from .core import Compositor, item_rng, sample_placement
from .options import ComposeOptions


class BackSwapDataset:
    """A torch-style Dataset that composes on the fly: every epoch sees fresh foreground/background pairs.

    ``dataset[i]`` is ``(image, class_index)`` for the i-th image of DATA (ImageFolder order):
    its foreground on a background chosen and placed as ``compose`` would, as a PIL image
    (or ``transform(image)``). Call ``set_epoch(e)`` each epoch for reproducible, changing
    combinations; with ``p_original`` the original image is returned that often instead, and
    always for an image whose mask has no foreground (nothing to cut out) or is not trusted (its confidence is below
    ``options.min_confidence``, as compose leaves it out). ``data`` is DATA's folder (an ImageFolder) or an
    ``engine.Dataset``, which says where classes come from as ``--class-level`` / ``--metadata`` do on the command
    line.
    """

    def __init__(self, data: Dataset | Path | str, masks_dir: Path | str, backgrounds_dir: Path | str,
                 options: ComposeOptions | None = None, transform=None, p_original: float = 0.0):
        self.options = options or ComposeOptions()
        self.options.check()
        data = as_dataset(data)
        layout = data.layout
        scan, _ = data.scan(exclude=[Path(masks_dir), Path(backgrounds_dir)])
        self.items = scan.items
        self.classes = scan.classes
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.targets = [self.class_to_idx[it.cls] for it in self.items]
        self.groups = [it.group for it in self.items]
        self.core = Compositor(Path(masks_dir), Path(backgrounds_dir), self.options.tight, self.options.feather, layout,
                               min_confidence=self.options.min_confidence, place=self.options.place)
        self.transform = transform
        self.p_original = p_original
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next compositions belong to (with the seed, it picks them)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def compose(self, index: int) -> np.ndarray:
        """The composite for ``index`` in the current epoch, as an RGB uint8 array."""
        item = self.items[index]
        o = self.options
        rng = item_rng(o.seed, item.key, 0, epoch=self.epoch + 1)
        image = read_image(item.path)
        if self.p_original and rng.random() < self.p_original:
            return image
        if item.key in self.core.distrusted:  # a mask probably wrong: the image as it is
            return image
        alpha = self.core.alpha(item, image.shape[:2], required=False)
        if not alpha.any():
            return image
        background = self.core.choose_background(item, rng, o.bg_from, set())
        return self.core.swap(image, alpha, background, sample_placement(rng, o))[0]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        image = Image.fromarray(self.compose(index))
        return (self.transform(image) if self.transform else image), self.targets[index]
