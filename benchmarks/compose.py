"""`compose` throughput against its I/O floor, with 1 and 2 worker processes.

Run: ``.venv/bin/python benchmarks/compose.py`` (about a minute on 2 CPU cores).

* **floor**: what composing cannot avoid — decode the foreground image, its mask
  and a background, one alpha blend, encode the result — in a bare single-process
  loop, no writing.
* **compose**: the real step through the engine (``ComposeStep`` + ``run_step``):
  background choice, feathered alpha, fitting the background, blending, encoding,
  atomic writes, manifest — with ``--workers 1`` and ``--workers 2``.

The images are generated at ``--size`` with their ground-truth masks and clean
backgrounds (what ``segment`` and ``inpaint`` would give). Rounds are interleaved
and the best of ``--repeats`` is kept, so every contender sees the same load.

Targets (issue 4): 1 worker >= 0.8 x the floor; 2 workers >= 1.7 x the 1-worker rate.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from autobackswap_cli.compose import ComposeOptions, ComposeStep  # noqa: E402
from autobackswap_cli.engine import RunOptions, prepare_items, run_step  # noqa: E402
from autobackswap_cli.images import encode_image, image_size, read_image, read_mask  # noqa: E402


def same_size_backgrounds(items, backgrounds_dir: Path) -> list[Path]:
    """For each item, another image's background of the same size (so the floor needs no resizing)."""
    by_size: dict[tuple[int, int], list[Path]] = {}
    for path in sorted(backgrounds_dir.rglob("*.jpg")):
        by_size.setdefault(image_size(path), []).append(path)
    chosen = []
    for item in items:
        pool = by_size[image_size(item.path)]
        chosen.append(pool[(pool.index(backgrounds_dir / item.rel) + 1) % len(pool)])
    return chosen


def floor_loop(items, masks: Path, backgrounds: list[Path]) -> float:
    """Seconds for decode (image, mask, background) + one alpha blend + encode per item, in one process."""
    t0 = time.perf_counter()
    for item, background_path in zip(items, backgrounds):
        image = read_image(item.path)
        alpha = read_mask(masks / item.rel.with_suffix(".png"))[..., None]
        background = read_image(background_path)
        blended = (image * alpha + background * (1 - alpha)).astype(np.uint8)
        encode_image(blended, item.rel.suffix)
    return time.perf_counter() - t0


def compose_run(data_items, root: Path, out: Path, workers: int) -> float:
    """Seconds for the real ``compose`` step over all items with ``workers`` processes."""
    step = ComposeStep(root / "masks" / "train", root / "backgrounds" / "train", out, ComposeOptions(seed=0))
    t0 = time.perf_counter()
    report = run_step(step, data_items, RunOptions(workers=workers, batch_size=1, overwrite=True, progress=False))
    elapsed = time.perf_counter() - t0
    assert report.done == len(data_items), report.failures[:3]
    return elapsed


def main() -> None:
    from autobackswap_cli.sample_data import SampleSpec, generate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=384, help="shorter image side of the generated images")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        root = Path(tmp_name) / "set"
        generate(root, SampleSpec(seed=6, size=args.size, train_per_class=max(1, args.images // 3), test_per_group=1, labelled=0))
        items, _ = prepare_items(root / "train")
        backgrounds = same_size_backgrounds(items, root / "backgrounds" / "train")
        print(f"{len(items)} images, shorter side {args.size} px, JPEG in and out; {os.cpu_count()} CPU cores\n", flush=True)
        floor_loop(items[:10], root / "masks" / "train", backgrounds[:10])  # warm-up
        best = {"floor": float("inf"), 1: float("inf"), 2: float("inf")}
        for _ in range(args.repeats):
            best["floor"] = min(best["floor"], floor_loop(items, root / "masks" / "train", backgrounds))
            for workers in (1, 2):
                best[workers] = min(best[workers], compose_run(items, root, Path(tmp_name) / f"out{workers}", workers))

    n = len(items)
    floor_ips, one_ips, two_ips = n / best["floor"], n / best[1], n / best[2]
    print(f"{'':44s} {'images/s':>9s} {'ratio':>7s}")
    print(f"{'floor: decode x3 + blend + encode, bare loop':44s} {floor_ips:9.1f} {1.0:7.2f}")
    print(f"{'compose --workers 1  (vs floor)':44s} {one_ips:9.1f} {one_ips / floor_ips:7.2f}")
    print(f"{'compose --workers 2  (vs its 1-worker rate)':44s} {two_ips:9.1f} {two_ips / one_ips:7.2f}")
    ok_one, ok_two = one_ips / floor_ips >= 0.8, two_ips / one_ips >= 1.7
    print(f"\n1 worker / floor = {one_ips / floor_ips:.2f} -> {'PASS' if ok_one else 'FAIL'} (target >= 0.8)")
    print(f"2 workers / 1 worker = {two_ips / one_ips:.2f} -> {'PASS' if ok_two else 'FAIL'} (target >= 1.7)")
    out = REPO / "benchmarks" / "out" / "compose.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"images": n, "size": args.size, "floor_ips": round(floor_ips, 2), "workers1_ips": round(one_ips, 2),
                               "workers2_ips": round(two_ips, 2), "workers1_over_floor": round(one_ips / floor_ips, 3),
                               "workers2_over_workers1": round(two_ips / one_ips, 3), "pass": ok_one and ok_two}, indent=2) + "\n")
    print(f"written: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
