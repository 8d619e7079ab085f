"""Scale: scanning and planning a million images, and a 10k-image compose end to end — time and peak memory.

Run: ``.venv/bin/python benchmarks/scale.py`` (about 5 minutes on 2 cores; the 1M-file folder is built once
under benchmarks/out/ and kept: 1M empty files, a few hundred MB of inodes).

* **scan + plan, 1M items**: a folder of 1,000,000 empty ``.jpg`` files in 1,000 classes (the scan never reads
  an image), then the engine's plan (this shard; skip finished) for ``segment`` and for ``compose --per-image 3``
  (which picks backgrounds from a 1M-image pool), from a scan of the folder and from ``--files-from LIST``, into a
  fresh output folder; then a resume into a folder where every other item is finished (segment: 1M items;
  compose: 100k, its plan draws 3 backgrounds per item). Each in a fresh process on ONE core (``taskset``), so
  the peak RSS is the process's own. Target (issue 12): < 60 s and < 1.5 GB.
* **a 1M-row metadata table** (issue 19): the segment plan from the list again, each item's class and group from a
  ``--metadata`` CSV of 1M rows (path, y, place, split); what the table adds to the plan. Target: < 10 s.
* **compose resume, 1M items half done** (issue 19): a folder where every other item's composites exist and the
  compose journal lists them (as a killed run leaves it); the plan reads the journal instead of replanning each
  item. Target: < 60 s on one core. The manifest rows of the finished half, taken from the journal when the run
  ends, are timed beside it (``finish s``).
* **compose end to end, 10k images**: the real command on generated 64 px images with their true masks and
  backgrounds, 3 composites each, default workers: images/s and the peak RSS of the largest process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
sys.path.insert(0, str(REPO))


def build_folder(root: Path, count: int, classes: int = 1000) -> None:
    """``count`` empty image files in ``classes`` class folders (built once, then reused)."""
    done = root / ".complete"
    if done.exists() and done.read_text() == str(count):
        return
    for c in range(classes):
        folder = root / f"c{c:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(c, count, classes):
            fd = os.open(folder / f"img_{i:07d}.jpg", os.O_CREAT | os.O_WRONLY, 0o644)
            os.close(fd)
    done.write_text(str(count))


def _step(name: str, data: Path, out: Path, layout=None):
    from autobackswap_cli.compose import ComposeOptions, ComposeStep
    from autobackswap_cli.segmenter.predict import SegmentStep

    if name == "segment":
        step = SegmentStep.__new__(SegmentStep)  # outputs() needs only out_dir: skip loading a checkpoint
        step.out_dir = out
        return step
    masks = out.parent / "scale_empty_masks"
    masks.mkdir(exist_ok=True)
    return ComposeStep(masks, data, out, ComposeOptions(per_image=3), layout=layout)  # backgrounds: a 1M-image pool, DATA's class rule


def child(mode: str, data: Path, listing: Path, out: Path) -> None:
    """One measurement in this (fresh) process; prints a JSON line. A mode ending in ``:metadata`` reads each
    item's class from the 1M-row table beside the list; compose's half-done mode also times the manifest rows of
    the finished half (from the journal)."""
    from autobackswap_cli.engine import Dataset, DatasetLayout, RunOptions, prepare_items
    from autobackswap_cli.engine.loop import RunReport, _plan

    step_name, source = mode.split(":")[:2]
    layout = DatasetLayout(metadata=str(metadata_table_for(listing))) if mode.endswith(":metadata") else None
    t0 = time.perf_counter()
    items, _ = prepare_items(Dataset(data, layout or DatasetLayout(), listing if source == "list" else None), out)
    t_scan = time.perf_counter() - t0
    t1 = time.perf_counter()
    step = _step(step_name, data, out, layout)  # compose: scanning BACKGROUNDS (1M images) for its pool counts too
    mine, todo = _plan(step, items, RunOptions(workers=0, progress=False), RunReport(step=step_name, out_dir=str(out)))
    t_plan = time.perf_counter() - t1
    t_finish = None
    if step_name == "compose" and "half-done" in mode:
        t2 = time.perf_counter()
        step.writer._earlier_rows_from_journal(mine)
        step.writer.spool.discard()
        t_finish = time.perf_counter() - t2
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "items": len(items), "todo": len(todo), "scan_s": t_scan, "plan_s": t_plan, "finish_s": t_finish, "rss_mb": rss_mb}))


def metadata_table_for(listing: Path) -> Path:
    """A Waterbirds-style table (img_id, img_filename, y, split, place) with a row per listed image (built once)."""
    table = listing.with_suffix(".metadata.csv")
    if not table.exists():
        with open(listing) as names, open(table, "w") as out:
            out.write("img_id,img_filename,y,split,place,place_filename\n")
            for i, name in enumerate(names):
                out.write(f"{i},{name.strip()},{i % 2},{i % 3},{(i // 2) % 2},/p/{i}.jpg\n")
    return table


def measure(mode: str, data: Path, listing: Path, out: Path) -> dict:
    pin = ["taskset", "-c", "0"] if sys.platform.startswith("linux") else []
    result = subprocess.run([*pin, sys.executable, __file__, "--child", mode, str(data), str(listing), str(out)], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def half_finished(out: Path, data: Path, listing: Path, step_name: str) -> Path:
    """``out`` holding the outputs of every other listed item (empty files), as a run killed half-way leaves it."""
    done = out / ".bench-complete"
    if done.exists():
        return out
    from autobackswap_cli.engine import Dataset, prepare_items

    from autobackswap_cli.engine import Shard

    items, _ = prepare_items(Dataset(data, files_from=listing))
    step = _step(step_name, data, out)
    if step_name == "compose":
        step.plan_items(items, items, Shard())  # opens the journal a killed run would have left
    for item in items[::2]:
        for path in step.outputs(item):
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
        if step_name == "compose":
            step.writer.journal.add(item.key, [step._row(item, plan) for plan in step.plan(item)], step.writer.spool.fields)
    if step_name == "compose":
        step.writer.journal.close()
    done.write_text("")
    return out


PEAK_OF_CHILD = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True); "
                 "sys.stderr.write(r.stderr.decode()); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")


def compose_end_to_end(images: int, formats: list[str]) -> list[dict]:
    from autobackswap_cli.sample_data import SampleSpec, generate

    root = OUT / f"scale_compose_{images}"
    if not (root / "train").exists():
        generate(root, SampleSpec(seed=2, size=64, train_per_class=images // 3, test_per_group=1, labelled=0, grid=8))
    rows = []
    for fmt in formats:
        out = root / f"composites-{fmt}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        extra = ["--output-layout", "webdataset", "--shard-size", "1000"] if fmt == "webdataset" else []
        command = [sys.executable, "-m", "autobackswap_cli", "compose", str(root / "train"), str(root / "masks/train"),
                   str(root / "backgrounds/train"), "-o", str(out), "--per-image", "3", "--no-progress", *extra]
        t0 = time.perf_counter()
        # a fresh parent per run, so the peak RSS is this run's (largest process: the main one or a worker)
        result = subprocess.run([sys.executable, "-c", PEAK_OF_CHILD, *command], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if result.returncode:
            rows.append({"format": fmt, "error": (result.stderr.strip().splitlines() or ["failed"])[-1]})
            continue
        peak_kb = int(result.stdout.strip().splitlines()[-1])
        rows.append({"format": fmt, "images": 3 * (images // 3), "wall_s": wall, "images_per_s": 3 * (images // 3) / wall,
                     "peak_rss_mb": peak_kb / 1024})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--compose-images", type=int, default=10_000)
    parser.add_argument("--formats", default="imagefolder,webdataset")
    parser.add_argument("--only", help="comma-separated plan modes to run (e.g. segment:list:fresh:metadata,compose:list:half-done)")
    parser.add_argument("--child", nargs=4, metavar=("MODE", "DATA", "LIST", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, data, listing, out = args.child
        return child(mode, Path(data), Path(listing), Path(out))

    data = OUT / f"scale_{args.items}"
    t0 = time.perf_counter()
    build_folder(data, args.items)
    listing = OUT / f"scale_{args.items}.txt"
    if not listing.exists():
        listing.write_text("".join(f"c{i % 1000:04d}/img_{i:07d}.jpg\n" for i in range(args.items)))
    print(f"{args.items:,} files ready in {time.perf_counter() - t0:.0f} s; {os.cpu_count()} cores, one used per measurement\n")
    print(f"{'plan of':30} {'items':>10} {'to do':>10} {'scan s':>7} {'plan s':>7} {'total s':>8} {'peak RSS MB':>12}  target: < 60 s, < 1536 MB")
    tenth = OUT / f"scale_{args.items // 10}.txt"
    if not tenth.exists():
        tenth.write_text("".join(listing.read_text().splitlines(keepends=True)[: args.items // 10]))
    runs = [("segment:scan:fresh", listing, lambda: OUT / "scale_out_missing"), ("segment:list:fresh", listing, lambda: OUT / "scale_out_missing"),
            ("segment:list:fresh:metadata", listing, lambda: OUT / "scale_out_missing"),
            ("compose:list:fresh", listing, lambda: OUT / "scale_out_missing"),
            ("segment:list:half-done", listing, lambda: half_finished(OUT / f"scale_seg_half_{args.items}", data, listing, "segment")),
            ("compose:list:half-done", listing, lambda: half_finished(OUT / f"scale_compose_half_{args.items}", data, listing, "compose"))]
    wanted = set(args.only.split(",")) if args.only else None
    results = {}
    for mode, items_list, out in runs:
        if wanted is not None and mode not in wanted and not (mode == "segment:list:fresh" and "segment:list:fresh:metadata" in wanted):
            continue
        r = results[mode] = measure(mode, data, items_list, out())
        total = r["scan_s"] + r["plan_s"]
        ok = "ok" if total < 60 and r["rss_mb"] < 1536 else "MISSED"
        finish = f"; finish (manifest rows of the done half, from the journal) {r['finish_s']:.1f} s" if r.get("finish_s") is not None else ""
        print(f"{mode:30} {r['items']:>10,} {r['todo']:>10,} {r['scan_s']:7.1f} {r['plan_s']:7.1f} {total:8.1f} {r['rss_mb']:12.0f}  "
              f"{ok} ({total / 60:.2f} x time, {r['rss_mb'] / 1536:.2f} x memory){finish}")
    if "segment:list:fresh:metadata" in results:
        added = results["segment:list:fresh:metadata"]["scan_s"] - results["segment:list:fresh"]["scan_s"]
        print(f"\nthe 1M-row metadata table adds {added:.1f} s to the plan: {'ok' if added < 10 else 'MISSED'} ({added / 10:.2f} x the 10 s target)")
    if args.compose_images and not args.only:
        print(f"\ncompose end to end: {args.compose_images:,} images x 3 composites, 64 px, default workers")
        for r in compose_end_to_end(args.compose_images, args.formats.split(",")):
            if "error" in r:
                print(f"  {r['format']:12} not run: {r['error']}")
            else:
                print(f"  {r['format']:12} {r['images_per_s'] * 3:8.0f} composites/s ({r['images_per_s']:.0f} images/s), "
                      f"{r['wall_s']:.0f} s, peak RSS of the largest process {r['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
