"""`label` importers (masks, reference masks.csv, COCO) and the csv exporter, through the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from autobackswap_cli.labels import (
    BACKGROUND,
    FOREGROUND,
    decode_coco_rle,
    grid_from_mask,
    read_grid,
    read_labels_info,
    select_stratified,
)
from conftest import cli, interruptible, run_record


def _dataset(root: Path, names: dict[str, tuple[int, int]]) -> Path:
    for rel, (w, h) in names.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (w, h), (90, 120, 30)).save(p)
    return root


def _coco_rle_encode(mask: np.ndarray) -> str:
    """COCO's compressed RLE, written from its specification (column-major runs, 5-bit groups)."""
    flat = mask.T.ravel()
    runs, value, count = [], 0, 0
    for v in flat:
        if v != value:
            runs.append(count)
            value, count = v, 0
        count += 1
    runs.append(count)
    out = []
    for i, x in enumerate(runs):
        if i > 2:
            x -= runs[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def test_grid_threshold_is_inclusive():
    mask = np.zeros((16, 16), np.float32)
    mask[0:2, 0:2] = 1  # cell (0,0) of a 4x4 grid (4x4 px) is exactly 25% foreground
    mask[4:5, 4:7] = 1  # cell (1,1): 3 of 16 pixels, below 25%
    grid = grid_from_mask(mask, 4, threshold=0.25)
    assert grid[0, 0] == FOREGROUND and grid[1, 1] == BACKGROUND and grid.sum() == FOREGROUND


def test_from_masks_uses_threshold_and_records_it(small_sample, tmp_path):
    out = tmp_path / "labels"
    cli("label", small_sample / "train", "-o", out, "--from-masks", small_sample / "masks/train", "--grid", "8", "--threshold", "0.5")
    files = sorted(out.rglob("*.png"))
    assert len(files) == 24  # every training image has a mask
    info = read_labels_info(out)
    assert (info.grid, info.method, info.threshold, info.count) == (8, "from-masks", 0.5, 24)
    mask = np.asarray(Image.open(small_sample / "masks/train/disc/disc_0000.png")) / 255.0
    assert np.array_equal(read_grid(out / "disc/disc_0000.png", 8), grid_from_mask(mask, 8, 0.5))
    assert run_record(out)["counts"] == {"total": 24, "done": 24, "skipped": 0, "failed": 0, "no_foreground": 0, "low_confidence": 0}


def test_count_is_stratified_and_seeded(small_sample, tmp_path):
    args = ["label", small_sample / "train", "--from-masks", small_sample / "masks/train", "--count", "6", "--grid", "8"]
    cli(*args, "-o", tmp_path / "a", "--seed", "1")
    cli(*args, "-o", tmp_path / "b", "--seed", "1")
    cli(*args, "-o", tmp_path / "c", "--seed", "2")
    names = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*.png"))  # noqa: E731
    assert names(tmp_path / "a") == names(tmp_path / "b")
    assert names(tmp_path / "a") != names(tmp_path / "c")
    per_class = {c: sum(1 for n in names(tmp_path / "a") if n.startswith(c + "/")) for c in ("disc", "triangle", "cross")}
    assert per_class == {"disc": 2, "triangle": 2, "cross": 2}


def test_select_stratified_handles_uneven_classes():
    keys = [f"a/{i}" for i in range(10)] + ["b/0"]
    chosen = select_stratified(keys, 4, seed=0)
    assert len(chosen) == 4 and "b/0" in chosen


def test_csv_export_then_import_round_trips(small_sample, tmp_path):
    cli("label", small_sample / "train", "-o", tmp_path / "l1", "--from-masks", small_sample / "masks/train", "--grid", "8", "--export-csv",
        tmp_path / "masks.csv")
    rows = list(csv.DictReader(open(tmp_path / "masks.csv")))
    assert len(rows) == 24 and all(len(r["mask"]) == 64 and set(r["mask"]) <= {"0", "1"} for r in rows)
    cli("label", small_sample / "train", "-o", tmp_path / "l2", "--from-csv", tmp_path / "masks.csv")  # grid inferred
    assert read_labels_info(tmp_path / "l2").grid == 8
    for p in (tmp_path / "l1").rglob("*.png"):
        assert np.array_equal(read_grid(p), read_grid(tmp_path / "l2" / p.relative_to(tmp_path / "l1")))


def test_csv_matches_bare_names_and_warns_on_unknown(tmp_path):
    data = _dataset(tmp_path / "data", {"cat/a.jpg": (32, 32), "dog/b.jpg": (32, 32)})
    (tmp_path / "m.csv").write_text("info,mask\n" + "a.jpg," + "1" * 8 + "0" * 8 + "\n" + "dog/b," + "0" * 16 + "\n" + "zebra.jpg," + "1" * 16 + "\n")
    result = cli("label", data, "-o", tmp_path / "labels", "--from-csv", tmp_path / "m.csv")
    assert "zebra.jpg" in result.output
    grid = read_grid(tmp_path / "labels/cat/a.png", 4)
    assert (grid[:2] == FOREGROUND).all() and (grid[2:] == BACKGROUND).all()
    assert (read_grid(tmp_path / "labels/dog/b.png", 4) == BACKGROUND).all()


def test_bad_csv_mask_is_a_per_row_failure(tmp_path):
    data = _dataset(tmp_path / "data", {"cat/a.jpg": (32, 32), "cat/b.jpg": (32, 32)})
    (tmp_path / "m.csv").write_text("info,mask\ncat/a.jpg," + "1" * 16 + "\ncat/b.jpg," + "12" * 8 + "\n")
    result = cli("label", data, "-o", tmp_path / "labels", "--from-csv", tmp_path / "m.csv", "--grid", "4", expect=1)
    assert "cat/b.jpg" in result.output and (tmp_path / "labels/cat/a.png").exists()
    assert run_record(tmp_path / "labels")["failures"][0]["item"] == "cat/b.jpg"


def test_coco_polygons_and_rle(tmp_path):
    data = _dataset(tmp_path / "data", {"cat/poly.jpg": (64, 32), "cat/rle.png": (40, 40), "dog/raw.jpg": (16, 16)})
    rle_mask = np.zeros((40, 40), np.uint8)
    rle_mask[5:25, 10:30] = 1
    raw_mask = np.zeros((16, 16), np.uint8)
    raw_mask[:, :8] = 1
    raw_counts = [0, 128, 128]  # column-major: the first 8 columns (128 px) are foreground
    coco = {
        "images": [
            {"id": 1, "file_name": "cat/poly.jpg", "width": 64, "height": 32},
            {"id": 2, "file_name": "/somewhere/else/cat/rle.png", "width": 40, "height": 40},
            {"id": 3, "file_name": "raw.jpg", "width": 16, "height": 16},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "segmentation": [[0, 0, 32, 0, 32, 32, 0, 32]], "iscrowd": 0},
            {"id": 11, "image_id": 2, "segmentation": {"size": [40, 40], "counts": _coco_rle_encode(rle_mask)}, "iscrowd": 1},
            {"id": 12, "image_id": 3, "segmentation": {"size": [16, 16], "counts": raw_counts}, "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    cli("label", data, "-o", tmp_path / "labels", "--from-coco", tmp_path / "ann.json", "--grid", "4")
    poly = read_grid(tmp_path / "labels/cat/poly.png", 4)
    assert (poly[:, :2] == FOREGROUND).all() and (poly[:, 2:] == BACKGROUND).all()
    assert np.array_equal(decode_coco_rle(_coco_rle_encode(rle_mask), 40, 40), rle_mask)
    assert np.array_equal(read_grid(tmp_path / "labels/cat/rle.png", 4), grid_from_mask(rle_mask.astype(np.float32), 4))
    raw = read_grid(tmp_path / "labels/dog/raw.png", 4)
    assert (raw[:, :2] == FOREGROUND).all() and (raw[:, 2:] == BACKGROUND).all()


def test_mask_of_wrong_size_fails_that_image_only(tmp_path):
    data = _dataset(tmp_path / "data", {"cat/a.jpg": (32, 32), "cat/b.jpg": (32, 32)})
    for name, size in (("a", (32, 32)), ("b", (20, 20))):
        (tmp_path / "masks/cat").mkdir(parents=True, exist_ok=True)
        Image.new("L", size, 255).save(tmp_path / f"masks/cat/{name}.png")
    result = cli("label", data, "-o", tmp_path / "labels", "--from-masks", tmp_path / "masks", "--grid", "4", expect=1)
    assert "cat/b.jpg" in result.output and "20x20" in result.output
    assert (tmp_path / "labels/cat/a.png").exists() and not (tmp_path / "labels/cat/b.png").exists()


def test_label_without_importer_serves_the_page_until_ctrl_c(small_sample, tmp_path):
    import os
    import queue
    import re
    import signal
    import subprocess
    import sys
    import threading
    import urllib.request

    labels = tmp_path / "l"
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("DISPLAY", None)
    args = ["label", small_sample / "train", "-o", labels, "--count", "3", "--grid", "8", "--port", "0", "--no-browser"]
    proc = subprocess.Popen([sys.executable, "-m", "autobackswap_cli", *map(str, args)], stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=interruptible)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in iter(proc.stderr.readline, "")], daemon=True)
    reader.start()
    try:
        printed = ""
        while "Ctrl-C" not in printed:
            printed += lines.get(timeout=60)
        url = re.search(r"open (http://127\.0\.0\.1:(\d+)/)", printed)
        assert url, printed
        assert f"ssh -L {url[2]}:127.0.0.1:{url[2]} " in printed
        session = json.loads(urllib.request.urlopen(url[1] + "api/session", timeout=10).read())
        rel = session["images"][0]["rel"]
        put = urllib.request.Request(url[1] + f"api/grid/{rel}", method="PUT", data=json.dumps({"grid": [[255] * 8] * 8}).encode(),
                                     headers={"Content-Type": "application/json"})
        assert json.loads(urllib.request.urlopen(put, timeout=10).read())["state"] == "done"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        reader.join(10)
    out = printed + "".join(lines.queue)
    assert proc.returncode == 130, out  # stopped by Ctrl-C
    assert "1 of 3 images labelled" in out and "every label is saved" in out
    assert run_record(labels)["status"] == "interrupted"
    assert read_grid(labels / f"{Path(rel).with_suffix('')}.png", 8).min() == FOREGROUND
    assert run_record(labels)["counts"]["done"] == 1
