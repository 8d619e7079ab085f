"""Which compose and fill defaults cost accuracy: one ingredient swapped at a time, judged by worst-group accuracy.

Runs on the folders ``real_photos.py --work DIR`` leaves (the data set, ``labels`` and ``ours``: our segmenter's
masks and fill), so the masks are the same in every condition. Conditions, each composed with ``compose`` from
one MASKS folder and one BACKGROUNDS folder, everything else at compose's defaults unless named:

- ``defaults``: our masks, our fill, compose's defaults (what ``autobackswap run`` makes);
- ``unfiltered``: the same with ``--min-confidence 0`` (no mask left out);
- ``feather 0``, ``tight 0.5``, ``over hole`` (``--place over-hole``): one cut-out or placement option swapped;
- ``plain paste``: our masks and fill, hard alpha at 0.5, no feather, nothing left out (the zero-option paste);
- ``true backgrounds``: our masks on the true clean backgrounds (what the fill costs);
- ``true masks``: the true masks on our fill (what the masks cost, beyond the fill);
- ``ceiling``: true masks on true backgrounds;
- ``dilate 8`` / ``16``, ``loose 0.3`` / ``0.5``, ``telea``, ``pyramid``: our masks, the fill made with another hole
  (``inpaint --dilate`` / ``--loose``) or another method.

Each condition is composed with every seed (``--per-image 3``) and judged on the test split: repeated-object
variants by a small classifier trained from scratch (``train-classifier``, the seed its seed), held-out-object
variants by the linear probe (probe_judge.py). It prints worst-group accuracy per seed, its mean, and the paired
difference to ``defaults`` (mean and standard error over seeds: the seeds are shared, so seed-to-seed noise in the
judge cancels out of the difference).

    .venv/bin/python benchmarks/compose_defaults.py --work /tmp/real --variants plain,distractors --seeds 0,1,2,3,4
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_info import run_info  # noqa: E402
import probe_judge  # noqa: E402
import real_photos  # noqa: E402
import stamp_photo_data  # noqa: E402

CONDITIONS = ("defaults", "unfiltered", "feather 0", "tight 0.5", "plain paste", "true backgrounds", "true masks", "ceiling",
              "dilate 8", "dilate 16", "loose 0.3", "loose 0.5", "telea", "pyramid", "over hole")
# an inpaint option: the fill made again with it
FILLS = {"dilate 8": ("--dilate", 8), "dilate 16": ("--dilate", 16), "loose 0.3": ("--loose", 0.3), "loose 0.5": ("--loose", 0.5),
         "telea": ("--method", "telea"), "pyramid": ("--method", "pyramid")}


def sources(name: str, work: Path) -> tuple[Path, Path, list]:
    """(MASKS, BACKGROUNDS, compose's extra options) of a condition."""
    data, ours = work / "data", work / "ours"
    options = {"unfiltered": ["--min-confidence", 0], "feather 0": ["--feather", 0], "tight 0.5": ["--tight", 0.5],
               "over hole": ["--place", "over-hole"],
               "plain paste": ["--feather", 0, "--tight", 0.5, "--min-confidence", 0]}.get(name, [])
    if name == "true backgrounds":
        return ours / "masks", data / "backgrounds/train", options
    if name in ("true masks", "ceiling"):
        return data / "masks/train", ours / "backgrounds" if name == "true masks" else data / "backgrounds/train", options
    if name in FILLS:
        fill = work / f"fills/{name.replace(' ', '-')}"
        if not (fill / "autobackswap.json").exists():
            real_photos.cli("inpaint", data / "train", ours / "masks", "-o", fill, *FILLS[name])
        return ours / "masks", fill, options
    return ours / "masks", ours / "backgrounds", options


def judge(variant: str, work: Path, composites: Path, seed: int) -> dict:
    data = work / "data"
    if variant in stamp_photo_data.VARIANTS:
        return probe_judge.probe_accuracy(composites, data)
    model = work / f"judges/{composites.name}.safetensors"
    if not model.is_file():
        real_photos.cli("train-classifier", composites, "-o", model, "--seed", seed, "--epochs", real_photos.CLASSIFIER_EPOCHS)
    return real_photos.classifier_accuracy(model, data)


def run_variant(variant: str, work: Path, seeds: list[int], conditions: list[str]) -> dict:
    out = {}
    for name in conditions:
        masks, backgrounds, options = sources(name, work)
        worst, mean = [], []
        for seed in seeds:
            composites = work / f"conditions/{name.replace(' ', '-')}-{seed}"
            if not (composites / "autobackswap.json").exists():
                real_photos.cli("compose", work / "data/train", masks, backgrounds, "-o", composites, "--per-image", real_photos.PER_IMAGE,
                                "--seed", seed, *options)
            accuracy = judge(variant, work, composites, seed)
            worst.append(accuracy["worst_group"])
            mean.append(accuracy["mean"])
        out[name] = {"worst_group": worst, "mean_acc": mean, "left_out": real_photos.run_record(composites)["counts"].get("low_confidence", 0)}
        print(f"{variant} / {name}: worst group {np.mean(worst):.3f} {[round(w, 3) for w in worst]}", file=sys.stderr, flush=True)
    base = np.asarray(out.get("defaults", {}).get("worst_group", []))
    for r in out.values():
        if len(base):
            diff = np.asarray(r["worst_group"]) - base
            r["vs_defaults"] = {"mean": float(diff.mean()), "se": float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else None}
    return out


def table(variant: str, result: dict) -> str:
    lines = [f"### {variant}", "", "| condition | worst group (mean) | per seed | vs defaults (paired, +- s.e.) | mean acc | images left out |",
             "|---|---:|---|---:|---:|---:|"]
    for name, r in result.items():
        d = r.get("vs_defaults") or {}
        diff = f"{d['mean']:+.3f}" + (f" +- {d['se']:.3f}" if d.get("se") is not None else "") if d else "–"
        lines.append(f"| {name} | {np.mean(r['worst_group']):.3f} | {', '.join(f'{w:.2f}' for w in r['worst_group'])} | {diff} | "
                     f"{np.mean(r['mean_acc']):.3f} | {r['left_out']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="a real_photos.py --work folder (its variants' data and ours/)")
    parser.add_argument("--variants", default="plain,distractors")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {}
    for variant in args.variants.split(","):
        t0 = time.perf_counter()
        results[variant] = run_variant(variant, args.work / variant, seeds, args.conditions.split(","))
        print(f"{variant}: {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    print(f"compose and fill defaults, one ingredient at a time: seeds {args.seeds}, {real_photos.PER_IMAGE} composites per image\n")
    for variant, result in results.items():
        print(table(variant, result) + "\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"run": run_info(), "seeds": seeds, "variants": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
