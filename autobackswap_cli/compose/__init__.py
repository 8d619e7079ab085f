"""Background swapping: foregrounds onto backgrounds of other images and classes (the ``compose`` step), and the
same on the fly for training (``BackSwapDataset``).

Rooms, one role each:

* ``core``     THE compose core, ``Compositor``: mask -> alpha -> placement -> blend, and the background choice
  (``choose_background`` by one of ``BG_RULES``); seeded generators per (seed, image, composite, epoch);
* ``pool``     the backgrounds on disk, by class, and the rules that pick one (O(1) per choice);
* ``options``  ``ComposeOptions``, shared by the step and the dataset, and their check;
* ``step``     the ``compose`` step: planning, making, the manifest and the journal;
* ``layouts``  how composites are written (``OUTPUT_LAYOUTS``: image files, WebDataset tar shards);
* ``dataset``  ``BackSwapDataset``.

Every name this package had as one module is still importable from it.
"""

from .core import (BG_RULES, DEFAULT_FEATHER, Compositor, Placement, blend, fit_background, foreground_alpha, item_rng, key_digest,
                   place_foreground, placement_matrix, sample_placement)
from .dataset import BackSwapDataset
from .layouts import MANIFEST_FIELDS, OUTPUT_LAYOUTS, ImageFiles, TarShards, WriterContext
from .options import BG_MODES, VARIANTS, ComposeOptions
from .pool import BackgroundPool, candidate_classes
from .step import Composite, ComposeStep, TarComposeStep, compose_step

__all__ = [
    "BG_MODES", "BG_RULES", "DEFAULT_FEATHER", "MANIFEST_FIELDS", "OUTPUT_LAYOUTS", "VARIANTS", "BackSwapDataset", "BackgroundPool",
    "Composite", "ComposeOptions", "ComposeStep", "Compositor", "ImageFiles", "Placement", "TarComposeStep", "TarShards", "blend",
    "candidate_classes", "compose_step", "fit_background", "foreground_alpha", "item_rng", "key_digest", "place_foreground",
    "placement_matrix", "sample_placement", "WriterContext",
]
