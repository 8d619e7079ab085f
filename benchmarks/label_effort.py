"""How many clicks and keys one image takes on the labelling page, unassisted and model-assisted.

Run: ``.venv/bin/python benchmarks/label_effort.py [--segmenter SEGMENTER.safetensors]``. Without
``--segmenter`` it first trains one on the shipped labels (``train-segmenter
sample_data/train sample_data/labels``; 20 s to a few minutes on 2 CPU cores).

Images: the sample_data training images that are *not* in sample_data/labels, so the
segmenter never saw them. Their true 16x16 grids come from the ground-truth masks by
the rule the shipped labels were made with (a patch is foreground when >= 25 % of its
pixels are); the script checks that rule against the shipped labels first.

Unassisted plan: one left drag over each 8-connected piece of foreground (the pointer
sweeps every foreground patch), F (fill the rest as background), Enter.

Assisted plan: the page starts from the segmenter's grid; every 8-connected piece of
patches it got wrong is one drag or click (left where foreground was missed, right
where it was wrongly foreground), then Enter.

Clicks/drags + keys counts mouse presses and key presses; "patches to sweep" is how
much ground the pointer covers in those drags.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from autobackswap_cli.images import mirror_path, read_mask, scan_image_folder  # noqa: E402
from autobackswap_cli.labeler.store import GridPredictor  # noqa: E402
from autobackswap_cli.labels import FOREGROUND, grid_from_mask, label_path, read_grid, read_labels_info  # noqa: E402

SAMPLE = REPO / "sample_data"


def pieces(cells: np.ndarray) -> int:
    """8-connected pieces of a boolean grid: one drag each."""
    return cv2.connectedComponents(cells.astype(np.uint8), connectivity=8)[0] - 1 if cells.any() else 0


def unassisted_actions(truth: np.ndarray) -> tuple[int, int]:
    """(patches to sweep, drags + F + Enter) to label a grid from nothing."""
    return int(truth.sum()), pieces(truth) + 2


def assisted_actions(predicted: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    """(patches to sweep = the wrong ones, drags + Enter) to correct the model's grid."""
    missed, extra = truth & ~predicted, predicted & ~truth
    return int(missed.sum() + extra.sum()), pieces(missed) + pieces(extra) + 1


def truth_grid(item, grid: int) -> np.ndarray:
    return grid_from_mask(read_mask(mirror_path(SAMPLE / "masks/train", item.rel, ".png")), grid, threshold=0.25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segmenter", type=Path, help="a segmenter trained on sample_data/labels (trained here when left out)")
    args = parser.parse_args()
    labels = SAMPLE / "labels"
    grid = read_labels_info(labels).grid
    items = scan_image_folder(SAMPLE / "train").items
    shipped = [it for it in items if label_path(labels, it).exists()]
    held_out = [it for it in items if not label_path(labels, it).exists()]
    assert all(np.array_equal(truth_grid(it, grid), read_grid(label_path(labels, it), grid)) for it in shipped), "truth rule differs from the shipped labels"

    checkpoint = args.segmenter
    if checkpoint is None:
        checkpoint = Path(tempfile.mkdtemp()) / "segmenter.safetensors"
        print(f"training a segmenter on {labels} ...", flush=True)
        subprocess.run([sys.executable, "-m", "autobackswap_cli", "train-segmenter", str(SAMPLE / "train"), str(labels), "-o", str(checkpoint),
                        "--no-progress"], check=True, capture_output=True)
    predict = GridPredictor(checkpoint)

    rows: dict[str, list[int]] = {"unassisted: patches to sweep": [], "unassisted: clicks/drags + keys": [], "assisted: patches to sweep": [],
                                  "assisted: clicks/drags + keys": []}
    for item in held_out:
        truth = truth_grid(item, grid) == FOREGROUND
        for plan, (sweep, actions) in (("unassisted", unassisted_actions(truth)), ("assisted", assisted_actions(predict(item) == FOREGROUND, truth))):
            rows[f"{plan}: patches to sweep"].append(sweep)
            rows[f"{plan}: clicks/drags + keys"].append(actions)

    print(f"\nper image, {len(held_out)} sample_data training images the segmenter never saw, {grid}x{grid} grid ({grid * grid} patches)")
    print(f"{'':34s} {'mean':>6s} {'median':>6s} {'max':>5s}")
    for name, values in rows.items():
        v = np.asarray(values)
        print(f"{name:34s} {v.mean():6.2f} {np.median(v):6.1f} {v.max():5d}")
    only_enter = np.mean(np.asarray(rows["assisted: clicks/drags + keys"]) == 1)
    print(f"assisted images that need only Enter: {only_enter:.0%}")


if __name__ == "__main__":
    main()
