"""compose, BackSwapDataset and run: pixels, background choice, manifest, determinism, resume."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
from PIL import Image

from autobackswap_cli.compose import BackSwapDataset, ComposeOptions, Placement, fit_background, foreground_alpha, placement_matrix
from autobackswap_cli.compose.layouts import MANIFEST_FIELDS
from autobackswap_cli.images import TEMP_PREFIX, read_image, read_mask
from autobackswap_cli.formats.manifest import Journal
from autobackswap_cli.sample_data import SampleSpec, generate
from badfiles import truncated_jpeg
from conftest import cli, cli_background, cli_subprocess, run_record, wait_until


def _manifest(out: Path) -> list[dict]:
    return list(csv.DictReader(open(out / "manifest.csv")))


def _outputs(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.suffix in (".png", ".jpg") and p.parent != out}


def _compose(sample: Path, out: Path, *extra: str, expect: int = 0):
    return cli("compose", sample / "train", sample / "masks/train", sample / "backgrounds/train", "-o", out, "--no-progress", "--workers", "1", *extra,
               expect=expect)


def test_composite_is_foreground_where_alpha_is_one_and_background_where_zero(small_sample, tmp_path):
    out = tmp_path / "out"
    _compose(small_sample, out, "--encode-format", "png", "--per-image", "2")
    rows = _manifest(out)
    assert len(rows) == 48 and _outputs(out) == {r["output"] for r in rows}
    for row in rows:
        fg = read_image(small_sample / "train" / row["foreground"])
        comp = read_image(out / row["output"])
        alpha = foreground_alpha(read_mask(small_sample / "masks/train" / Path(row["foreground"]).with_suffix(".png")))
        bg = fit_background(read_image(small_sample / "backgrounds/train" / row["background"]), *fg.shape[:2])
        assert comp.shape == fg.shape
        assert np.array_equal(comp[alpha == 1], fg[alpha == 1])
        assert np.array_equal(comp[alpha == 0], bg[alpha == 0])
        assert (alpha == 1).sum() > 50 and (alpha == 0).sum() > 500
        assert row["background"] != row["foreground"]  # never its own background
        assert row["output"].startswith(f"{row['foreground_class']}/{Path(row['foreground']).stem}__{row['background_class']}__")


def test_other_class_never_keeps_the_class_background_and_next_class_cycles(small_sample, tmp_path):
    _compose(small_sample, tmp_path / "other", "--bg-from", "other-class", "--per-image", "3")
    rows = _manifest(tmp_path / "other")
    assert len(rows) == 72 and all(r["background_class"] != r["foreground_class"] for r in rows)
    assert {r["background_class"] for r in rows} == {"cross", "disc", "triangle"}
    _compose(small_sample, tmp_path / "next", "--bg-from", "next-class")
    pairs = {(r["foreground_class"], r["background_class"]) for r in _manifest(tmp_path / "next")}
    assert pairs == {("cross", "disc"), ("disc", "triangle"), ("triangle", "cross")}
    _compose(small_sample, tmp_path / "same", "--bg-from", "same-class", "--per-image", "3")
    rows = _manifest(tmp_path / "same")
    assert all(r["background_class"] == r["foreground_class"] and r["background"] != r["foreground"] for r in rows)
    assert all(len({r["background"] for r in rows if r["foreground"] == f}) == 3 for f in {r["foreground"] for r in rows})


def _digests(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "autobackswap.json"}


def test_same_seed_gives_byte_identical_outputs(small_sample, tmp_path):
    jitter = ["--scale", "0.7,1.1", "--rotate", "25", "--translate", "6", "--per-image", "2"]
    _compose(small_sample, tmp_path / "a", *jitter, "--seed", "4")
    cli("compose", small_sample / "train", small_sample / "masks/train", small_sample / "backgrounds/train", "-o", tmp_path / "b",
        "--no-progress", "--workers", "0", *jitter, "--seed", "4")
    _compose(small_sample, tmp_path / "c", *jitter, "--seed", "5")
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert _digests(tmp_path / "a") != _digests(tmp_path / "c")
    for row in _manifest(tmp_path / "a"):
        assert 0.7 <= float(row["scale"]) <= 1.1 and abs(float(row["angle"])) <= 25
        # the shift is the random one (|s| <= --translate), unless more was needed to keep the object in the frame
        alpha = foreground_alpha(read_mask(small_sample / "masks/train" / Path(row["foreground"]).with_suffix(".png")))
        _, forced = placement_matrix(alpha, Placement(float(row["scale"]), float(row["angle"])))  # the shift needed at 0 asked
        overhang_x, overhang_y = abs(forced.shift_x), abs(forced.shift_y)
        assert abs(float(row["shift_x"])) <= 6 + overhang_x + 0.01 and abs(float(row["shift_y"])) <= 6 + overhang_y + 0.01


def test_jittered_foreground_stays_inside_the_frame(tmp_path):
    generate(tmp_path / "s", SampleSpec(seed=9, size=64, train_per_class=4, test_per_group=1, labelled=0))
    _compose(tmp_path / "s", tmp_path / "out", "--scale", "1.3,1.5", "--translate", "40", "--encode-format", "png", "--feather", "0")
    for row in _manifest(tmp_path / "out"):
        fg_mask = read_mask(tmp_path / "s/masks/train" / Path(row["foreground"]).with_suffix(".png")) >= 0.5
        comp = read_image(tmp_path / "out" / row["output"])
        bg = fit_background(read_image(tmp_path / "s/backgrounds/train" / row["background"]), *comp.shape[:2])
        changed = np.abs(comp.astype(int) - bg).sum(2) > 40
        # the moved object is about as large as scale^2 times the original: nothing was cut off at the border
        assert changed.sum() >= 0.8 * fg_mask.sum() * float(row["scale"]) ** 2


def test_only_fg_and_only_bg_variants(small_sample, tmp_path):
    _compose(small_sample, tmp_path / "fg", "--only-fg", "--fill", "0,255,0", "--encode-format", "png", "--include-originals")
    rows = _manifest(tmp_path / "fg")
    assert len(rows) == 24 and all(r["output"].endswith("__only-fg.png") for r in rows)
    row = rows[0]
    comp = read_image(tmp_path / "fg" / row["output"])
    alpha = foreground_alpha(read_mask(small_sample / "masks/train" / Path(row["foreground"]).with_suffix(".png")))
    assert (comp[alpha == 0] == [0, 255, 0]).all()
    assert (tmp_path / "fg" / row["foreground"]).read_bytes() == (small_sample / "train" / row["foreground"]).read_bytes()
    _compose(small_sample, tmp_path / "bg", "--only-bg", "--encode-format", "png")
    row = _manifest(tmp_path / "bg")[0]
    assert row["background"] == row["foreground"]
    assert np.array_equal(read_image(tmp_path / "bg" / row["output"]), read_image(small_sample / "backgrounds/train" / row["foreground"]))


def _masks_with_an_empty_one(sample: Path, folder: Path, rel: str = "disc/disc_0001.png") -> Path:
    """A copy of the sample's masks in which ``rel`` is all black: no foreground at any threshold."""
    shutil.copytree(sample / "masks/train", folder)
    size = Image.open(folder / rel).size
    Image.new("L", size, 0).save(folder / rel)
    return folder


def test_missing_mask_fails_that_image_and_an_empty_one_is_counted_apart(small_sample, tmp_path):
    masks = _masks_with_an_empty_one(small_sample, tmp_path / "masks")
    (masks / "disc/disc_0000.png").unlink()
    cli("compose", small_sample / "train", masks, small_sample / "backgrounds/train", "-o", tmp_path / "out", "--no-progress", "--workers", "0", expect=1)
    record = run_record(tmp_path / "out")
    reasons = {f["item"]: f["reason"] for f in record["failures"]}
    assert list(reasons) == ["disc/disc_0000.jpg"] and "no mask" in reasons["disc/disc_0000.jpg"]
    assert record["no_foreground"] == ["disc/disc_0001.jpg"] and record["counts"]["no_foreground"] == 1
    assert len(_manifest(tmp_path / "out")) == 22


def test_an_image_with_no_foreground_is_counted_and_listed_not_failed(small_sample, tmp_path):
    masks = _masks_with_an_empty_one(small_sample, tmp_path / "masks")
    out = tmp_path / "out"
    args = ("compose", small_sample / "train", masks, small_sample / "backgrounds/train", "-o", out, "--no-progress", "--workers", "1")
    text = " ".join(cli(*args, "--fail-fast").output.split())  # exit 0, and --fail-fast does not stop at it
    assert "compose: 23 done, 0 skipped (already finished), 0 failed, no foreground: 1 image of 24" in text
    assert "no foreground (left out, not failures): disc/disc_0001.jpg" in text
    record = run_record(out)
    assert record["status"] == "completed" and record["failures"] == [] and record["no_foreground"] == ["disc/disc_0001.jpg"]
    assert record["counts"] == {"total": 24, "done": 23, "skipped": 0, "failed": 0, "no_foreground": 1, "low_confidence": 0}
    outputs = _outputs(out)
    assert len(outputs) == 23 and not any(o.startswith("disc/disc_0001__") for o in outputs) and len(_manifest(out)) == 23
    # a rerun looks at its mask again (it has no output to mark it finished): counted again, never a failure
    cli(*args)
    assert run_record(out)["counts"] == {"total": 24, "done": 0, "skipped": 23, "failed": 0, "no_foreground": 1, "low_confidence": 0}
    # bad files stay failures beside it: a corrupt image and a mask of the wrong size
    data = tmp_path / "data"
    shutil.copytree(small_sample / "train", data)
    truncated_jpeg(data / "disc/broken.jpg")
    Image.new("L", (10, 10), 255).save(masks / "cross/cross_0000.png")
    result = cli("compose", data, masks, small_sample / "backgrounds/train", "-o", tmp_path / "bad", "--no-progress", "--workers", "1", expect=1)
    record = run_record(tmp_path / "bad")
    assert sorted(f["item"] for f in record["failures"]) == ["cross/cross_0000.jpg", "disc/broken.jpg"]
    assert record["counts"] == {"total": 25, "done": 22, "skipped": 0, "failed": 2, "no_foreground": 1, "low_confidence": 0}
    assert "2 failed, no foreground: 1 image of 25" in " ".join(result.output.split())


def test_killed_compose_resumes_without_partial_files_and_a_full_manifest(tmp_path):
    generate(tmp_path / "s", SampleSpec(seed=2, size=256, train_per_class=40, test_per_group=1, labelled=0))
    args = ["compose", tmp_path / "s/train", tmp_path / "s/masks/train", tmp_path / "s/backgrounds/train", "-o", tmp_path / "out", "--per-image", "3",
            "--workers", "1", "--no-progress", "--encode-format", "png"]
    proc = cli_background(*args)
    wait_until(proc, lambda: len(list((tmp_path / "out").rglob("*.png"))) >= 30)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.png")}
    assert 30 <= len(before) < 360
    journalled = _journalled_outputs(tmp_path / "out")
    result = cli_subprocess(*args)
    assert result.returncode == 0, result.stderr
    assert not list((tmp_path / "out").rglob(TEMP_PREFIX + "*"))
    rows = _manifest(tmp_path / "out")
    assert len(rows) == 360 and _outputs(tmp_path / "out") == {r["output"] for r in rows}
    # Every item the journal recorded is skipped and its files are left alone. Items a worker had written but the
    # main process had not journalled yet when the kill came (at most the window of 4 in flight) are redone.
    finished_before = [p for p in before if p.relative_to(tmp_path / "out").as_posix() in journalled]
    assert run_record(tmp_path / "out")["counts"]["skipped"] == len(finished_before) // 3
    assert len(finished_before) >= len(before) - 4 * 3
    assert finished_before and all(p.stat().st_mtime_ns == before[p] for p in finished_before)  # not redone
    # byte-identical to an uninterrupted run
    fresh = cli_subprocess(*[a if a != tmp_path / "out" else tmp_path / "fresh" for a in args])
    assert fresh.returncode == 0
    assert _digests(tmp_path / "out") == _digests(tmp_path / "fresh")


def _journalled_outputs(out: Path) -> set[str]:
    """The composites compose's journal in ``out`` lists as finished (its whole lines only)."""
    (path,) = out.glob(Journal.PREFIX + "*.csv")
    journal = Journal(out, MANIFEST_FIELDS, path.stem[len(Journal.PREFIX):])
    column = MANIFEST_FIELDS.index("output")
    return {row[column] for _, _, rows in journal.lines() for row in rows}


def test_backswap_dataset_composes_on_the_fly(small_sample):
    import torch
    from torchvision.transforms import functional as TF

    ds = BackSwapDataset(small_sample / "train", small_sample / "masks/train", small_sample / "backgrounds/train",
                         ComposeOptions(bg_from="other-class"), transform=TF.to_tensor)
    assert len(ds) == 24 and ds.classes == ["cross", "disc", "triangle"]
    x, y = ds[0]
    assert isinstance(x, torch.Tensor) and x.shape[0] == 3 and y == ds.class_to_idx[ds.items[0].cls]
    first = [ds.compose(i) for i in range(6)]
    again = [ds.compose(i) for i in range(6)]
    ds.set_epoch(1)
    other = [ds.compose(i) for i in range(6)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))  # reproducible within an epoch
    assert sum(not np.array_equal(a, b) for a, b in zip(first, other)) >= 4  # fresh pairs next epoch
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=lambda b: b)
    assert sum(len(batch) for batch in loader) == 24


def test_background_choice_is_uniform_and_never_the_own_or_an_earlier_pick(tmp_path):
    from collections import Counter

    from autobackswap_cli.compose import BackgroundPool, item_rng
    from autobackswap_cli.images import ImageItem
    from PIL import Image

    for cls, count in (("a", 4), ("b", 2)):
        for i in range(count):
            (tmp_path / "bg" / cls).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8)).save(tmp_path / "bg" / cls / f"{i}.png")
    pool = BackgroundPool(tmp_path / "bg")
    item = ImageItem(Path("a/1.png"), tmp_path / "data")
    picks = Counter(pool.choose(item, item_rng(0, "x", k), "same-class", {"a/2.png"}) for k in range(3000))
    assert set(picks) == {"a/0.png", "a/3.png"}  # not its own (a/1), not the earlier pick (a/2)
    assert abs(picks["a/0.png"] - 1500) < 150
    classes = Counter(pool.choose(item, item_rng(0, "y", k), "any", set()).split("/")[0] for k in range(3000))
    assert abs(classes["a"] - 1500) < 150  # class uniform first, although class a has twice the images
    assert pool.choose(item, item_rng(0, "z", 0), "same-class", {"a/0.png", "a/2.png", "a/3.png"}) in {"a/0.png", "a/2.png", "a/3.png"}


def test_the_manifest_is_sorted_from_disk_not_memory(small_sample, tmp_path, monkeypatch):
    """Rows go to a spool file and are merge-sorted in runs; tiny runs give the same manifest as one big run."""
    from autobackswap_cli.formats import manifest

    args = (small_sample / "train", small_sample / "masks/train", small_sample / "backgrounds/train")
    cli("compose", *args, "-o", tmp_path / "one", "--per-image", 3, "--no-progress")
    monkeypatch.setattr(manifest, "SORT_CHUNK_ROWS", 5)  # 72 rows: 15 sorted runs merged
    cli("compose", *args, "-o", tmp_path / "many", "--per-image", 3, "--workers", 0, "--no-progress")
    text = (tmp_path / "many" / "manifest.csv").read_text()
    assert text == (tmp_path / "one" / "manifest.csv").read_text()
    outputs = [line.split(",")[0] for line in text.splitlines()[1:]]
    assert len(outputs) == 72 and outputs == sorted(outputs)
    assert not list((tmp_path / "many").rglob(TEMP_PREFIX + "*"))


def _rename_everywhere(sample: Path, root: Path, old: str, new: bytes) -> Path:
    """A copy of small_sample's training images, masks and backgrounds with the image ``old`` (``disc/x``) renamed
    to the raw file name ``new`` (bytes: a name need not be UTF-8) in all three."""
    for part in ("train", "masks/train", "backgrounds/train"):
        shutil.copytree(sample / part, root / part)
        source = next((root / part).glob(f"{old}.*"))
        os.rename(os.fsencode(source), os.fsencode(source.parent) + b"/" + new + os.fsencode(source.suffix))
    return root


def test_names_that_are_not_utf8_round_trip_through_compose_and_its_manifest(small_sample, tmp_path):
    data = _rename_everywhere(small_sample, tmp_path / "data", "disc/disc_0003", b"caf\xe9")
    for layout in ("imagefolder", "webdataset"):
        out = tmp_path / layout
        cli("compose", data / "train", data / "masks/train", data / "backgrounds/train", "-o", out, "--per-image", 2,
            "--output-layout", layout, "--no-progress")
        if layout == "imagefolder":
            with open(out / "manifest.csv", newline="", encoding="utf-8", errors="surrogateescape") as fh:
                rows = list(csv.DictReader(fh))
        else:  # each sample's manifest row is its .json member
            from autobackswap_cli.formats.tarshards import read_samples

            rows = [json.loads(s["json"]) for tar in sorted(out.glob("*.tar")) for s in read_samples(tar)]
        mine = [r for r in rows if r["foreground"] == os.fsdecode(b"disc/caf\xe9.jpg")]
        assert len(rows) == 48 and len(mine) == 2 and run_record(out)["counts"]["failed"] == 0
        if layout == "imagefolder":  # the composite's file name carries the input's bytes
            assert all(os.path.exists(os.fsencode(out) + b"/" + os.fsencode(r["output"])) for r in mine)
            assert any(b"caf\xe9__" in name for name in os.listdir(os.fsencode(out / "disc")))


def test_an_output_name_too_long_for_the_file_system_fails_that_item_and_reruns_cleanly(small_sample, tmp_path):
    data = _rename_everywhere(small_sample, tmp_path / "data", "disc/disc_0003", b"n" * 240)
    out = tmp_path / "out"
    args = ("compose", data / "train", data / "masks/train", data / "backgrounds/train", "-o", out, "--per-image", 2, "--no-progress")
    for attempt in range(2):  # the rerun plans the failed item again without crashing
        result = cli(*args, expect=1)
        failures = run_record(out)["failures"]
        assert [f["item"] for f in failures] == [f"disc/{'n' * 240}.jpg"], attempt
        assert "output name too long for the file system" in failures[0]["reason"] and "Traceback" not in result.output
    assert len(list(csv.DictReader(open(out / "manifest.csv")))) == 46


def test_the_background_rules_and_output_layouts_are_the_options_the_cli_offers():
    """compose's registries and the command line's choices name the same rules and layouts, in the same order."""
    from autobackswap_cli.choices import BackgroundsFrom, OutputLayout
    from autobackswap_cli.compose.core import BG_RULES
    from autobackswap_cli.compose.layouts import OUTPUT_LAYOUTS

    assert tuple(BG_RULES) == BackgroundsFrom.values() and all(BG_RULES.values())
    assert tuple(OUTPUT_LAYOUTS) == OutputLayout.values() and all(help_text for _, help_text in OUTPUT_LAYOUTS.values())


def test_place_over_hole_puts_the_foreground_over_the_backgrounds_own_object(small_sample, tmp_path):
    """--place over-hole: each composite's foreground is centred where its background's own object was (the hole
    its fill left), inside the frame; the manifest records that shift, and a rerun lists the same rows."""
    out = tmp_path / "out"
    _compose(small_sample, out, "--place", "over-hole", "--per-image", "2", "--encode-format", "png")
    rows = _manifest(out)
    assert rows and any(float(r["shift_x"]) or float(r["shift_y"]) for r in rows)
    for row in rows:
        fg = foreground_alpha(read_mask(small_sample / "masks/train" / Path(row["foreground"]).with_suffix(".png"))) > 0  # what is moved
        hole = fit_background(read_mask(small_sample / "masks/train" / Path(row["background"]).with_suffix(".png")), *fg.shape) >= 0.5
        (fy, fx), (hy, hx) = [((np.nonzero(m)[0].min() + np.nonzero(m)[0].max()) / 2, (np.nonzero(m)[1].min() + np.nonzero(m)[1].max()) / 2)
                              for m in (fg, hole)]
        ys, xs = np.nonzero(fg)
        h, w = fg.shape
        inside_x = 0 <= xs.min() + hx - fx and xs.max() + hx - fx <= w - 1  # no clamping needed on this axis
        inside_y = 0 <= ys.min() + hy - fy and ys.max() + hy - fy <= h - 1
        if inside_x:
            assert abs(float(row["shift_x"]) - (hx - fx)) < 0.01
        if inside_y:
            assert abs(float(row["shift_y"]) - (hy - fy)) < 0.01
    before = (out / "manifest.csv").read_text()
    (next(out.glob(".autobackswap-journal-*.csv"))).unlink()  # no journal: the rows are planned again from the masks
    _compose(small_sample, out, "--place", "over-hole", "--per-image", "2", "--encode-format", "png")
    assert (out / "manifest.csv").read_text() == before
