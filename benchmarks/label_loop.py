"""Labels where the model is wrong: the two-round labelling loop against labelling at random, same budget.

On the held-out-object photos (stamp_photo_data.py), every training image has a true mask, and a benchmark can
play the user (``label --from-masks``: the true masks stand for the user's strokes):

- ``random``: ``label --count N`` (stratified at random), ``train-segmenter``;
- ``loop``: ``label --count N/2`` at random, ``train-segmenter``, then ``label --count N --pick uncertain
  --segmenter`` (the images its masks are least confident of, spread over classes), ``train-segmenter`` again.

Both arms pick from the same pool (every training image) and label the same number of images. Each final segmenter
segments the training images; the figures are over the images *neither* arm labelled: mean IoU, masks with IoU
< 0.5, and the wall time of each arm's labelling and training (the loop: both rounds and the scoring pass).

    .venv/bin/python benchmarks/label_loop.py --variants instances-distractors,instances --json benchmarks/results/label_loop.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_info import run_info  # noqa: E402
import photo_metrics  # noqa: E402
import real_photo_data  # noqa: E402
import real_photos  # noqa: E402

from autobackswap_cli.images import read_mask, scan_image_folder  # noqa: E402


def labelled_keys(labels: Path) -> set[str]:
    return {str(p.relative_to(labels).with_suffix("")) for p in labels.rglob("*.png")}


def arm(name: str, data: Path, work: Path, budget: int, seed: int) -> dict:
    """One arm's labels and final segmenter; the wall time of labelling and training (and scoring)."""
    labels, truth, t0 = work / f"{name}/labels", data / "masks/train", time.perf_counter()
    first = budget // 2 if name == "loop" else budget
    real_photos.cli("label", data / "train", "--from-masks", truth, "--count", first, "--seed", seed, "-o", labels)
    segmenter = work / f"{name}/segmenter.safetensors"
    real_photos.cli("train-segmenter", data / "train", labels, "-o", segmenter, "--seed", seed)
    if name == "loop":
        round_one = segmenter.with_name("segmenter-round1.safetensors")
        segmenter.replace(round_one)
        real_photos.cli("label", data / "train", "--from-masks", truth, "--count", budget, "--segmenter", round_one, "--pick", "uncertain",
                        "--seed", seed, "-o", labels)
        real_photos.cli("train-segmenter", data / "train", labels, "-o", segmenter, "--seed", seed)
    seconds = time.perf_counter() - t0
    real_photos.cli("segment", data / "train", "-m", segmenter, "-o", work / f"{name}/masks")
    return {"labels": sorted(labelled_keys(labels)), "seconds": round(seconds, 1), "masks": str(work / f"{name}/masks")}


def scores(data: Path, masks: Path, keys: set[str]) -> dict:
    """Mean IoU and failures (IoU < 0.5) of ``masks`` over the training images whose key is in ``keys``."""
    ious = []
    for item in scan_image_folder(data / "train").items:
        if item.key in keys:
            truth = read_mask(data / "masks/train" / item.rel.with_suffix(".png"))
            ious.append(photo_metrics.mask_iou(read_mask(masks / item.rel.with_suffix(".png"), truth.shape), truth))
    return {"images": len(ious), "mean_iou": float(np.mean(ious)), "failed": int(sum(i < 0.5 for i in ious))}


def run_variant(variant: str, work: Path, budget: int, seed: int, data_seed: int) -> dict:
    data = real_photo_data.build_variant(work / "data", variant, data_seed)
    arms = {name: arm(name, data, work, budget, seed) for name in ("random", "loop")}
    every = {item.key for item in scan_image_folder(data / "train").items}
    neither = every - set(arms["random"]["labels"]) - set(arms["loop"]["labels"])
    out = {name: {**scores(data, Path(a["masks"]), neither), "seconds": a["seconds"]} for name, a in arms.items()}
    out["loop_minus_random"] = {"mean_iou": out["loop"]["mean_iou"] - out["random"]["mean_iou"],
                                "failed_ratio": out["loop"]["failed"] / max(1, out["random"]["failed"])}
    return out


def table(results: dict, budget: int) -> str:
    lines = [f"| variant | arm ({budget} labels) | images scored | mean IoU | masks IoU < 0.5 | labelling + training (s) |",
             "|---|---|---:|---:|---:|---:|"]
    for variant, r in results.items():
        for name in ("random", "loop"):
            a = r[name]
            lines.append(f"| {variant} | {name} | {a['images']} | {a['mean_iou']:.3f} | {a['failed']} | {a['seconds']:.0f} |")
        d = r["loop_minus_random"]
        lines.append(f"| {variant} | loop - random | | {d['mean_iou']:+.3f} | x{d['failed_ratio']:.2f} | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="instances-distractors,instances")
    parser.add_argument("--labels", type=int, default=150, help="the labelling budget of each arm")
    parser.add_argument("--seed", type=int, default=0, help="label picking and training seed")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="abs-loop-") as tmp:
        for variant in args.variants.split(","):
            t0 = time.perf_counter()
            results[variant] = run_variant(variant, (args.work or Path(tmp)) / variant, args.labels, args.seed, args.data_seed)
            print(f"{variant}: {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    print(f"Labels where the model is wrong: {args.labels} labels an arm, data seed {args.data_seed}, seed {args.seed}\n")
    print(table(results, args.labels))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"run": run_info(), "labels": args.labels, "data_seed": args.data_seed, "variants": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
