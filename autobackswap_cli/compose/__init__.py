"""compose, as a package (its rooms follow)."""

from .core import (BG_MODES, DEFAULT_FEATHER, MANIFEST_FIELDS, VARIANTS, BackgroundPool, BackSwapDataset, Composite, ComposeOptions,
                   ComposeStep, Compositor, Placement, TarComposeStep, _spread_outputs, blend, compose_step, fit_background,
                   foreground_alpha, item_rng, key_digest, place_foreground, placement_matrix, sample_placement)
