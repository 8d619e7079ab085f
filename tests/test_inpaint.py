"""inpaint with the classical backends: fill region, unchanged pixels, quality against the true background, bad masks."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from autobackswap_cli.images import read_image, read_mask
from autobackswap_cli.inpaint.step import FillRegion, fill_region
from conftest import REPO, cli, run_record

sys.path.insert(0, str(REPO / "benchmarks"))
from photo_metrics import texture_ratio  # noqa: E402  (the benchmark's own definition)


def _png_copy(small_sample: Path, dst: Path) -> tuple[Path, Path]:
    """The small sample's test split as PNG (lossless, so 'unchanged' can be checked exactly) with its true masks."""
    for img in (small_sample / "test").rglob("*.jpg"):
        rel = img.relative_to(small_sample / "test")
        (dst / "data" / rel.parent).mkdir(parents=True, exist_ok=True)
        Image.open(img).save(dst / "data" / rel.with_suffix(".png"))
    return dst / "data", small_sample / "masks" / "test"


@pytest.mark.parametrize("method", ["texture", "pyramid", "telea", "ns"])
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
    assert all(p.suffix == ".jpg" for p in out.rglob("*.*") if p.name != "autobackswap.json" and not p.name.startswith("."))


def test_pyramid_texture_option_changes_only_the_hole(small_sample, tmp_path):
    for name, texture in (("bg", "auto"), ("flat", "off")):
        cli("inpaint", small_sample / "test", small_sample / "masks/test", "-o", tmp_path / name, "--method", "pyramid", "--texture", texture,
            "--encode-format", "png", "--no-progress", "--workers", "0")
    assert run_record(tmp_path / "bg")["options"]["texture"] == "auto"
    changed = 0
    for path in (tmp_path / "bg").rglob("*.png"):
        rel = path.relative_to(tmp_path / "bg")
        hole = fill_region(read_mask(small_sample / "masks/test" / rel), FillRegion())
        textured, flat = read_image(path), read_image(tmp_path / "flat" / rel)
        assert np.array_equal(textured[~hole], flat[~hole])
        changed += not np.array_equal(textured[hole], flat[hole])
    assert changed >= 1  # texture was added inside some holes (auto adds it only where it predicts the ring)
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
    assert record["counts"] == {"total": 5, "done": 2, "skipped": 0, "failed": 3, "no_foreground": 0, "low_confidence": 0}
    # a rerun retries only the failures
    again = cli("inpaint", tmp_path / "data", tmp_path / "masks", "-o", out, "--no-progress", "--workers", "0", expect=1)
    assert run_record(out)["counts"]["skipped"] == 2 and "3 failed" in " ".join(again.output.split())


def test_unknown_method_and_missing_masks_folder_are_usage_errors(small_sample, tmp_path):
    result = cli("inpaint", small_sample / "test", small_sample / "masks/test", "-o", tmp_path / "bg", "--method", "magic", expect=2)
    assert "Invalid value" in result.output and "texture" in result.output and not (tmp_path / "bg").exists()
    result = cli("inpaint", small_sample / "test", tmp_path / "nope", "-o", tmp_path / "bg", expect=2)
    assert "masks folder not found" in result.output


# ----------------------------------------------------------------- texture (the default): the fill continues the background


def _write_case(root: Path, name: str, image: np.ndarray, object_mask: np.ndarray) -> tuple[Path, Path]:
    """DATA/c/<name>.png with the object painted in (nothing of the background under it), MASKS/c/<name>.png."""
    (root / "data/c").mkdir(parents=True, exist_ok=True)
    (root / "masks/c").mkdir(parents=True, exist_ok=True)
    shown = image.copy()
    shown[object_mask] = (200, 40, 160)
    Image.fromarray(shown).save(root / f"data/c/{name}.png")
    Image.fromarray(object_mask.astype(np.uint8) * 255).save(root / f"masks/c/{name}.png")
    return root / "data", root / "masks"


def _stripes(size: int = 128) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    wave = 127 + 100 * np.sin(2 * np.pi * (0.8 * xx + 0.3 * yy) / 9.0)
    return np.stack([wave, 0.6 * wave + 40, 255 - wave], 2).astype(np.uint8)


def _ellipse(size: int, centre, axes, angle: float = 20) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.ellipse(mask, centre, axes, angle, 0, 360, 1, -1)
    return mask > 0


def _filled(out: Path, data: Path, masks: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    background = read_image(out / f"c/{name}.png")
    return background, fill_region(read_mask(masks / f"c/{name}.png", background.shape[:2]), FillRegion(loose=0.1, dilate=4))


def test_texture_continues_stripes_where_pyramid_leaves_a_flat_patch(tmp_path):
    truth = _stripes()
    data, masks = _write_case(tmp_path, "stripes", truth, _ellipse(128, (64, 60), (40, 30)))
    cli("inpaint", data, masks, "-o", tmp_path / "tex", "--workers", "0", "--no-progress")
    cli("inpaint", data, masks, "-o", tmp_path / "pyr", "--method", "pyramid", "--workers", "0", "--no-progress")
    assert run_record(tmp_path / "tex")["options"]["method"] == "texture"  # the default
    background, hole = _filled(tmp_path / "tex", data, masks, "stripes")
    assert hole.mean() > 0.25
    corr = np.corrcoef(background[hole].astype(float).ravel(), truth[hole].astype(float).ravel())[0, 1]
    assert corr > 0.5, corr  # the stripes go on, in phase
    assert texture_ratio(background, truth, hole) > 0.5
    flat, _ = _filled(tmp_path / "pyr", data, masks, "stripes")
    assert texture_ratio(flat, truth, hole) < 0.3


def test_texture_does_not_flatten_noise_and_is_deterministic(tmp_path):
    rng = np.random.default_rng(5)
    grain = cv2.GaussianBlur(rng.normal(0, 40, (128, 128)).astype(np.float32), (0, 0), 0.8)
    truth = np.clip(np.array([150, 110, 70], np.float32) + grain[..., None] * np.array([1.0, 0.8, 0.6], np.float32), 0, 255).astype(np.uint8)
    data, masks = _write_case(tmp_path, "grain", truth, _ellipse(128, (70, 60), (40, 30), angle=-30))
    for run in ("a", "b"):
        cli("inpaint", data, masks, "-o", tmp_path / run, "--workers", "0" if run == "a" else "1", "--no-progress")
    background, hole = _filled(tmp_path / "a", data, masks, "grain")
    assert 0.5 < texture_ratio(background, truth, hole) < 1.6
    assert np.abs(background[hole].mean(0) - truth[hole].mean(0)).max() < 12  # the colour is right too
    assert (tmp_path / "a/c/grain.png").read_bytes() == (tmp_path / "b/c/grain.png").read_bytes()


def test_texture_fills_a_hole_touching_the_border(tmp_path):
    truth = _stripes()
    obj = np.zeros((128, 128), bool)
    obj[:70, :55] = True  # a corner object: the hole runs into two image borders
    obj |= _ellipse(128, (128, 100), (30, 40), 0)  # and one leaving through the bottom edge
    data, masks = _write_case(tmp_path, "corner", truth, obj)
    cli("inpaint", data, masks, "-o", tmp_path / "bg", "--workers", "0", "--no-progress")
    background, hole = _filled(tmp_path / "bg", data, masks, "corner")
    image = read_image(data / "c/corner.png")
    assert np.array_equal(background[~hole], image[~hole])
    assert np.abs(background[hole].astype(int) - image[hole].astype(int)).mean() > 10  # the object is gone
    assert texture_ratio(background, truth, hole) > 0.5


def test_texture_fill_changes_only_the_hole_in_the_library_too():
    from autobackswap_cli.inpaint import InpaintOptions, make_inpainter

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (40, 90, 3), dtype=np.uint8)
    inpainter = make_inpainter(InpaintOptions())
    for hole in (np.zeros((40, 90), bool), np.ones((40, 90), bool)):
        assert np.array_equal(inpainter.inpaint(image, hole), image)  # nothing to fill, or nothing to fill from
    hole = np.zeros((40, 90), bool)
    hole[5:35, 2:88] = True  # the known part is a thin frame
    out = inpainter.inpaint(image, hole)
    assert np.array_equal(out[~hole], image[~hole]) and np.array_equal(out, inpainter.inpaint(image.copy(), hole.copy()))


def test_writing_into_the_masks_folder_is_refused_and_the_masks_survive(small_sample, tmp_path):
    masks = tmp_path / "masks"
    shutil.copytree(small_sample / "masks/test", masks)
    before = {p: p.read_bytes() for p in masks.rglob("*.png")}
    result = cli("inpaint", small_sample / "test", masks, "-o", masks, "--encode-format", "png", "--overwrite", "--no-progress", expect=2)
    assert "is the input folder" in " ".join(result.output.split())
    assert {p: p.read_bytes() for p in masks.rglob("*.png")} == before
