"""Background reliance on sample_data over seeds: a classifier trained on the originals, on the pipeline's
composites, and on the oracle's (composites from the ground-truth masks and backgrounds).

For each seed: `autobackswap run` (train-segmenter, segment, inpaint, compose) on sample_data/train with the
shipped labels; `compose` from sample_data/masks/train + backgrounds/train (the oracle); `train-classifier`
on each training set; one `evaluate` of the three models on sample_data/test. Evaluation uses the ground-truth
test masks and backgrounds, and the training set's ground-truth backgrounds for the mixed variants, so the
measuring instrument is the same for every condition. Prints a markdown table (worst-group accuracy and
BG-Gap per seed and their mean). Targets: originals worst-group <= 0.5, composites >= 0.8.

    .venv/bin/python benchmarks/background_reliance.py [--seeds 0,1,2] [--per-image 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"
CONDITIONS = ("originals", "pipeline", "oracle")


def cli(*args: object) -> None:
    """Run one autobackswap command; stop with its output when it fails."""
    done = subprocess.run([sys.executable, "-m", "autobackswap_cli", *map(str, args), "--no-progress"], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"failed: autobackswap {' '.join(map(str, args))}\n{done.stdout}{done.stderr}")


def measure(seed: int, work: Path, per_image: int) -> dict[str, dict]:
    """Train the three classifiers for one seed and evaluate them; returns evaluate's report per condition."""
    pipeline, oracle = work / "pipeline", work / "oracle"
    cli("run", SAMPLE / "train", "--labels", SAMPLE / "labels", "-o", pipeline, "--per-image", per_image, "--seed", seed)
    cli("compose", SAMPLE / "train", SAMPLE / "masks/train", SAMPLE / "backgrounds/train", "-o", oracle, "--per-image", per_image, "--seed", seed)
    data = {"originals": SAMPLE / "train", "pipeline": pipeline / "composites", "oracle": oracle}
    for name, folder in data.items():
        cli("train-classifier", folder, "-o", work / f"{name}.safetensors", "--seed", seed)
    report = work / "evaluation.json"
    cli("evaluate", SAMPLE / "test", "--masks", SAMPLE / "masks/test", "--backgrounds", SAMPLE / "backgrounds/test",
        "--mix-from", SAMPLE / "backgrounds/train", "--groups", SAMPLE / "test_groups.csv", "--seed", seed,
        *(a for name in CONDITIONS for a in ("-m", work / f"{name}.safetensors")), "--json", report)
    return {m["name"]: m for m in json.loads(report.read_text())["models"]}


def table(results: dict[int, dict[str, dict]]) -> str:
    seeds = sorted(results)
    lines = [
        "| trained on | metric | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
        "|---|---|" + "---:|" * (len(seeds) + 1),
    ]
    metrics = {"worst-group acc": lambda m: m["worst_group"]["accuracy"], "BG-Gap": lambda m: m["bg_gap"], "acc original": lambda m: m["accuracy"]["original"]}
    for name in CONDITIONS:
        for label, get in metrics.items():
            values = [get(results[s][name]) for s in seeds]
            lines.append(f"| {name} | {label} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {sum(values) / len(values):.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--per-image", type=int, default=3, help="composites per training image")
    parser.add_argument("--work", type=Path, help="keep the intermediate folders here (default: a temporary folder)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory(prefix="abs-reliance-") as tmp:
        work = args.work or Path(tmp)
        results = {}
        for seed in seeds:
            t0 = time.perf_counter()
            results[seed] = measure(seed, work / f"seed-{seed}", args.per_image)
            print(f"seed {seed}: {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    print(f"Background reliance on sample_data (per-image {args.per_image}; evaluated with ground-truth test masks/backgrounds)\n")
    print(table(results))


if __name__ == "__main__":
    main()
