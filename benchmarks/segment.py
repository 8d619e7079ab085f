"""`segment` throughput against its floor, and GrabCut side by side on the same images.

Run: ``.venv/bin/python benchmarks/segment.py`` (about two minutes on 2 CPU cores).

* **floor**: what segmenting cannot avoid — decode each image, resize it to the
  model's input, and run the same model's forward pass at the same batch size,
  in a bare single-process loop (no upsampling, refining, encoding or writing).
* **segment**: the real step through the engine (``SegmentStep`` + ``run_step``,
  default workers, the same batch size), writing full-resolution PNG masks with
  the default ``--refine grabcut``; also with ``--refine none`` and ``guided``.
  For each backbone of ``--backbones`` (default: the default u2netp and small-cnn),
  each against its own floor.
* **GrabCut**: OpenCV's GrabCut seeded with a centred box (1/8 margin on each
  side), 5 iterations, one process — the classical way to get a mask without labels.

Rounds are interleaved (floor, segment, ...) and the best of ``--repeats`` is kept,
so every contender sees the same machine load. The segmenter is trained once from
the shipped ``sample_data/labels`` with default options; the images are generated
at ``--size`` (ground-truth masks known), so the IoU columns are real.

Targets: ``--refine none`` images/s >= 0.8 x the floor (issue 18); the default's cost over it is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from autobackswap_cli.engine import RunOptions, default_workers, prepare_items, run_step  # noqa: E402
from autobackswap_cli.images import read_image, read_mask  # noqa: E402
from autobackswap_cli.sample_data import SampleSpec, generate  # noqa: E402
from autobackswap_cli.segmenter.predict import SegmentOptions, SegmentStep, mask_iou, mask_iou_report  # noqa: E402
from autobackswap_cli.segmenter.train import TrainOptions, train_segmenter  # noqa: E402


def floor_loop(step: SegmentStep, items, batch_size: int) -> float:
    """Seconds for decode + resize + forward over all items, batch by batch, in one process."""
    t0 = time.perf_counter()
    for start in range(0, len(items), batch_size):
        step.compute([step.prepare(item) for item in items[start : start + batch_size]])
    return time.perf_counter() - t0


def segment_run(checkpoint: Path, items, out: Path, refine: str, options: RunOptions) -> float:
    """Seconds for the real ``segment`` step (engine, workers, writes) over all items."""
    step = SegmentStep(checkpoint, out, SegmentOptions(device="cpu", refine=refine))
    t0 = time.perf_counter()
    report = run_step(step, items, options)
    elapsed = time.perf_counter() - t0
    assert report.done == len(items), report.failures[:3]
    return elapsed


def grabcut_centred_box(image: np.ndarray, iterations: int = 5) -> np.ndarray:
    """GrabCut seeded with a box inset by 1/8 of each side; returns a 0/1 float mask."""
    h, w = image.shape[:2]
    rect = (w // 8, h // 8, w - w // 4, h - h // 4)
    mask = np.zeros((h, w), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), mask, rect, bgd, fgd, iterations, cv2.GC_INIT_WITH_RECT)
    return np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.float32)


def grabcut_run(items, truth_dir: Path) -> tuple[float, list[float]]:
    """Seconds (decode + GrabCut) and the IoU of every image against its true mask."""
    ious, elapsed = [], 0.0
    for item in items:
        t0 = time.perf_counter()
        pred = grabcut_centred_box(read_image(item.path))
        elapsed += time.perf_counter() - t0
        ious.append(mask_iou(pred, read_mask(truth_dir / item.rel.with_suffix(".png"))))
    return elapsed, ious


def measure(backbone: str, checkpoint: Path | None, items, truth: Path, tmp: Path, args) -> dict[str, tuple[float, float | None]]:
    """Rows for one segmenter: its floor and segment with each refinement (best of ``--repeats``, interleaved)."""
    if checkpoint is None:
        checkpoint = tmp / f"segmenter-{backbone}.safetensors"
        print(f"training the default {backbone} segmenter from sample_data/labels ...", flush=True)
        train_segmenter(REPO / "sample_data/train", REPO / "sample_data/labels", checkpoint, TrainOptions(backbone=backbone, device="cpu"), progress=False)
    probe = SegmentStep(checkpoint, tmp / "unused", SegmentOptions(device="cpu"))
    probe.setup()
    floor_loop(probe, items[: args.batch_size], args.batch_size)  # warm-up
    run_options = RunOptions(workers=args.workers, batch_size=args.batch_size, overwrite=True, progress=False)
    refines = ("grabcut", "none", "guided")
    best = {"floor": float("inf"), **{r: float("inf") for r in refines}}
    for _ in range(args.repeats):
        best["floor"] = min(best["floor"], floor_loop(probe, items, args.batch_size))
        for refine in refines:
            best[refine] = min(best[refine], segment_run(checkpoint, items, tmp / f"masks-{backbone}-{refine}", refine, run_options))
    n = len(items)
    rows = {f"{backbone}: floor (decode + forward, bare loop)": (n / best["floor"], None)}
    for refine in refines:
        label = f"{backbone}: segment --refine {refine}" + (" (default)" if refine == "grabcut" else "")
        rows[label] = (n / best[refine], mask_iou_report(items, tmp / f"masks-{backbone}-{refine}", truth)["mean_iou"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=384, help="shorter image side of the generated images")
    parser.add_argument("--images", type=int, default=240, help="how many images to segment")
    parser.add_argument("--batch-size", type=int, default=32, help="the segment default")
    parser.add_argument("--workers", type=int, default=default_workers(), help="segment's worker processes (default: as the CLI)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backbones", default="u2netp,small-cnn", help="segmenters to train and measure, each against its own floor")
    parser.add_argument("--checkpoint", type=Path, help="use this segmenter instead of training one (one backbone)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        per_class = max(1, args.images // 3)
        generate(tmp / "set", SampleSpec(seed=5, size=args.size, train_per_class=per_class, test_per_group=1, labelled=0))
        data, truth = tmp / "set" / "train", tmp / "set" / "masks" / "train"
        items, _ = prepare_items(data)
        import torch

        print(f"{len(items)} images, shorter side {args.size} px; batch size {args.batch_size}; segment workers {args.workers}; "
              f"torch threads {torch.get_num_threads()}\n", flush=True)
        rows, verdicts = {}, {}
        for backbone in args.backbones.split(","):
            mine = measure(backbone, args.checkpoint, items, truth, tmp, args)
            rows.update(mine)
            floor_ips = mine[f"{backbone}: floor (decode + forward, bare loop)"][0]
            none_ips, default_ips = mine[f"{backbone}: segment --refine none"][0], mine[f"{backbone}: segment --refine grabcut (default)"][0]
            verdicts[backbone] = {"none_over_floor": round(none_ips / floor_ips, 3), "default_over_none": round(default_ips / none_ips, 3),
                                  "floor_images_per_s": round(floor_ips, 2)}
        grabcut_s, grabcut_ious = grabcut_run(items, truth)
        rows["GrabCut, centred box (1 process, no labels)"] = (len(items) / grabcut_s, float(np.mean(grabcut_ious)))
    print(f"{'':48s} {'images/s':>9s} {'mean IoU':>9s}")
    for label, (ips, iou) in rows.items():
        print(f"{label:48s} {ips:9.1f} {'' if iou is None else f'{iou:9.3f}'}")
    print()
    for backbone, v in verdicts.items():
        verdict = "PASS" if v["none_over_floor"] >= 0.8 else "FAIL"
        print(f"{backbone}: --refine none / floor = {v['none_over_floor']:.2f} -> {verdict} (target >= 0.8); "
              f"default (grabcut) runs at {v['default_over_none']:.2f}x the speed of --refine none")
    out = REPO / "benchmarks" / "out" / "segment.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {label: {"images_per_s": round(ips, 2), "mean_iou": iou} for label, (ips, iou) in rows.items()}
    out.write_text(json.dumps({"images": len(items), "size": args.size, "batch_size": args.batch_size, "workers": args.workers,
                               "rows": result, "verdicts": verdicts}, indent=2) + "\n")
    print(f"written: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
