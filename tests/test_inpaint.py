"""inpaint with the classical backends: fill region, unchanged pixels, quality against the true background, bad masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autobackswap_cli.images import read_image, read_mask
from autobackswap_cli.inpaint.step import FillRegion, fill_region
from conftest import cli, run_record


def _png_copy(small_sample: Path, dst: Path) -> tuple[Path, Path]:
    """The small sample's test split as PNG (lossless, so 'unchanged' can be checked exactly) with its true masks."""
    for img in (small_sample / "test").rglob("*.jpg"):
        rel = img.relative_to(small_sample / "test")
        (dst / "data" / rel.parent).mkdir(parents=True, exist_ok=True)
        Image.open(img).save(dst / "data" / rel.with_suffix(".png"))
    return dst / "data", small_sample / "masks" / "test"


@pytest.mark.parametrize("method", ["pyramid", "telea", "ns"])
def test_only_the_fill_region_changes(small_sample, tmp_path, method):
    data, masks = _png_copy(small_sample, tmp_path)
    out = tmp_path / "bg"
    cli("inpaint", data, masks, "-o", out, "--method", method, "--workers", "1", "--no-progress")
    outputs = sorted(out.rglob("*.png"))
    assert len(outputs) == 18
    for bg_path in outputs:
        rel = bg_path.relative_to(out)
        image, background = read_image(data / rel), read_image(bg_path)
        hole = fill_region(read_mask(masks / rel, image.shape[:2]), FillRegion(loose=0.1, dilate=4))
        assert background.shape == image.shape
        assert np.array_equal(background[~hole], image[~hole])
        assert np.abs(background[hole].astype(int) - image[hole].astype(int)).mean() > 10  # the object is gone
    assert run_record(out)["options"]["method"] == method


def test_default_fill_is_close_to_the_true_background(small_sample, tmp_path):
    out = tmp_path / "bg"
    cli("inpaint", small_sample / "test", small_sample / "masks/test", "-o", out, "--no-progress", "--preview", tmp_path / "p.png")
    err_before, err_after = [], []
    for img_path in (small_sample / "test").rglob("*.jpg"):
        rel = img_path.relative_to(small_sample / "test")
        image, truth, background = read_image(img_path), read_image(small_sample / "backgrounds/test" / rel), read_image(out / rel)
        hole = fill_region(read_mask(small_sample / "masks/test" / rel.with_suffix(".png")), FillRegion())
        err_before.append(np.abs(image[hole].astype(int) - truth[hole]).mean())
        err_after.append(np.abs(background[hole].astype(int) - truth[hole]).mean())
    assert np.mean(err_after) < 20 and np.mean(err_after) < 0.5 * np.mean(err_before)
    assert (tmp_path / "p.png").exists()
    assert all(p.suffix == ".jpg" for p in out.rglob("*.*") if p.name != "autobackswap.json")


def test_texture_option_runs_and_is_recorded(small_sample, tmp_path):
    cli("inpaint", small_sample / "test", small_sample / "masks/test", "-o", tmp_path / "bg", "--texture", "auto", "--no-progress", "--workers", "0")
    assert run_record(tmp_path / "bg")["options"]["texture"] == "auto"
    cli("inpaint", small_sample / "test", small_sample / "masks/test", "-o", tmp_path / "x", "--texture", "lots", "--no-progress", expect=2)


def test_bad_masks_get_clear_per_file_behaviour(tmp_path):
    rng = np.random.default_rng(0)
    names = ["ok", "wrong_size", "missing", "all_fg", "all_bg"]
    for name in names:
        (tmp_path / "data/c").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / f"data/c/{name}.png")
    (tmp_path / "masks/c").mkdir(parents=True)
    blob = np.zeros((40, 50), np.uint8)
    blob[10:25, 15:30] = 255
    Image.fromarray(blob).save(tmp_path / "masks/c/ok.png")
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(tmp_path / "masks/c/wrong_size.png")
    Image.fromarray(np.full((40, 50), 255, np.uint8)).save(tmp_path / "masks/c/all_fg.png")
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "masks/c/all_bg.png")
    out = tmp_path / "bg"
    result = cli("inpaint", tmp_path / "data", tmp_path / "masks", "-o", out, "--no-progress", "--workers", "0", expect=1)
    record = run_record(out)
    reasons = {f["item"]: f["reason"] for f in record["failures"]}
    assert set(reasons) == {"c/wrong_size.png", "c/missing.png", "c/all_fg.png"}
    assert "30x30 does not match image size 50x40" in reasons["c/wrong_size.png"]
    assert "no mask" in reasons["c/missing.png"] and "masks/c/missing.png" in reasons["c/missing.png"]
    assert "covers the whole image" in reasons["c/all_fg.png"]
    text = " ".join(result.output.split())
    assert all(name in text for name in reasons)
    # no foreground: the image is its own background, copied unchanged and counted
    assert np.array_equal(read_image(out / "c/all_bg.png"), read_image(tmp_path / "data/c/all_bg.png"))
    assert record["results"]["images_without_foreground_copied_unchanged"] == 1
    assert record["counts"] == {"total": 5, "done": 2, "skipped": 0, "failed": 3}
    # a rerun retries only the failures
    again = cli("inpaint", tmp_path / "data", tmp_path / "masks", "-o", out, "--no-progress", "--workers", "0", expect=1)
    assert run_record(out)["counts"]["skipped"] == 2 and "3 failed" in " ".join(again.output.split())


def test_unknown_method_and_missing_masks_folder_are_usage_errors(small_sample, tmp_path):
    result = cli("inpaint", small_sample / "test", small_sample / "masks/test", "-o", tmp_path / "bg", "--method", "magic", expect=2)
    assert "--method must be one of" in result.output
    result = cli("inpaint", small_sample / "test", tmp_path / "nope", "-o", tmp_path / "bg", expect=2)
    assert "masks folder not found" in result.output
