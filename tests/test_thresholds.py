"""Calibrated loose/tight thresholds: chosen on validation labels, carried checkpoint -> MASKS -> inpaint/compose."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from autobackswap_cli.labels import grid_from_mask
from autobackswap_cli.segmenter.calibrate import DEFAULT_THRESHOLDS, calibrate_thresholds
from autobackswap_cli.segmenter.model import build_segmenter, save_checkpoint
from conftest import cli, run_record


def _disc_with_soft_edge(centre, radius, edge_value, size=64, width=6.0):
    """A true disc and a soft mask whose value is ``edge_value`` exactly on the disc's edge, falling linearly."""
    yy, xx = np.mgrid[:size, :size]
    distance = np.hypot(yy - centre[0], xx - centre[1]) - radius  # < 0 inside
    truth = (distance < 0).astype(np.float32)
    soft = np.clip(edge_value - distance / width, 0, 1).astype(np.float32)
    return truth, soft


@pytest.mark.parametrize("edge_value", [0.35, 0.7])
def test_tight_threshold_lands_on_the_true_edge(edge_value):
    """A soft mask that is ``edge_value`` on the object's edge: the labels (25 % coverage, as --from-masks makes
    them) should pull the tight threshold to about that value, not to the fixed 0.5."""
    rng = np.random.default_rng(0)
    truths, softs = zip(*[_disc_with_soft_edge(rng.uniform(20, 44, 2), rng.uniform(10, 18), edge_value) for _ in range(24)])
    labels = np.stack([grid_from_mask(t, 8, threshold=0.25) for t in truths])
    chosen, report = calibrate_thresholds(np.stack(softs), labels, coverage=0.25)
    assert abs(chosen.tight - edge_value) <= 0.1, (chosen, report)
    assert chosen.loose <= chosen.tight
    assert report["foreground_patches_touched_at_loose"] >= 0.995


def test_labels_without_background_fall_back_to_the_defaults():
    softs = np.ones((3, 16, 16), np.float32)
    chosen, report = calibrate_thresholds(softs, np.full((3, 4, 4), 255, np.uint8), coverage=0.25)
    assert chosen == DEFAULT_THRESHOLDS and "default" in report["method"]


def _checkpoint_with_thresholds(path, loose, tight):
    model = build_segmenter("small-cnn", 8)
    thresholds = {m: {"loose": loose, "tight": tight} for m in ("none", "guided", "grabcut")}
    save_checkpoint(path, model, image_size=64, options={}, metrics={}, extra={"thresholds": thresholds})


def test_thresholds_travel_from_checkpoint_through_masks_to_inpaint_and_compose(small_sample, tmp_path):
    ckpt = tmp_path / "seg.safetensors"
    _checkpoint_with_thresholds(ckpt, loose=0.35, tight=0.65)
    data, masks = small_sample / "train", tmp_path / "masks"
    cli("segment", data, "-m", ckpt, "-o", masks, "--no-progress")
    assert run_record(masks)["options"]["thresholds"] == {"loose": 0.35, "tight": 0.65, "source": "segmenter (validation labels)"}

    # Masks of a known shape (the sample's truth) so the hole can be checked pixel by pixel.
    truth_masks = tmp_path / "truth_masks"
    for png in (small_sample / "masks/train").rglob("*.png"):
        out = truth_masks / png.relative_to(small_sample / "masks/train")
        out.parent.mkdir(parents=True, exist_ok=True)
        soft = cv2.GaussianBlur(cv2.imread(str(png), cv2.IMREAD_GRAYSCALE), (0, 0), 3)  # a soft edge a few px wide
        cv2.imwrite(str(out), soft)
    (truth_masks / "autobackswap.json").write_text(json.dumps(run_record(masks)))

    cli("inpaint", data, truth_masks, "-o", tmp_path / "bg", "--method", "pyramid", "--dilate", "0", "--encode-format", "png", "--no-progress")
    cli("inpaint", data, truth_masks, "-o", tmp_path / "bg_fixed", "--method", "pyramid", "--dilate", "0", "--loose", "0.1", "--encode-format", "png",
        "--no-progress")
    record, fixed = run_record(tmp_path / "bg")["options"], run_record(tmp_path / "bg_fixed")["options"]
    assert (record["loose_threshold"], record["loose_threshold_from"]) == (0.35, "masks' segmenter")
    assert (fixed["loose_threshold"], fixed["loose_threshold_from"]) == (0.1, "option")
    changed = [
        (cv2.imread(str(tmp_path / sub / png.relative_to(truth_masks))) !=
         cv2.imread(str(data / png.relative_to(truth_masks).with_suffix(".jpg")))).any(2).mean()
        for png in sorted(truth_masks.rglob("*.png")) for sub in ("bg", "bg_fixed")
    ]
    # The calibrated hole (P >= 0.35) is smaller than the paper's (P >= 0.1) on every image.
    assert all(a < b for a, b in zip(changed[::2], changed[1::2]))

    cli("compose", data, truth_masks, tmp_path / "bg", "-o", tmp_path / "out", "--no-progress")
    cli("compose", data, truth_masks, tmp_path / "bg", "-o", tmp_path / "out_fixed", "--tight", "0.5", "--no-progress")
    assert (run_record(tmp_path / "out")["options"]["tight"], run_record(tmp_path / "out")["options"]["tight_from"]) == (0.65, "masks' segmenter")
    assert run_record(tmp_path / "out_fixed")["options"]["tight_from"] == "option"


def test_masks_without_a_record_use_the_papers_thresholds(small_sample, tmp_path):
    cli("inpaint", small_sample / "train", small_sample / "masks/train", "-o", tmp_path / "bg", "--method", "pyramid", "--no-progress")
    options = run_record(tmp_path / "bg")["options"]
    assert (options["loose_threshold"], options["loose_threshold_from"]) == (0.1, "default")
    cli("compose", small_sample / "train", small_sample / "masks/train", tmp_path / "bg", "-o", tmp_path / "out", "--no-progress")
    assert (run_record(tmp_path / "out")["options"]["tight"], run_record(tmp_path / "out")["options"]["tight_from"]) == (0.5, "default")


def test_train_segmenter_stores_and_reports_its_thresholds(small_sample, tmp_path):
    ckpt = tmp_path / "seg.safetensors"
    result = cli("train-segmenter", small_sample / "train", small_sample / "labels", "-o", ckpt, "--epochs", "3", "--no-progress")
    assert "thresholds chosen on the validation labels" in result.output
    sidecar = json.loads((tmp_path / "seg.safetensors.json").read_text())
    calibration = sidecar["metrics"]["calibration"]
    assert set(calibration) == {"none", "guided", "grabcut"}
    from autobackswap_cli.segmenter.model import read_checkpoint

    thresholds = read_checkpoint(ckpt)["thresholds"]
    for method in ("none", "guided", "grabcut"):
        assert 0.0 < thresholds[method]["loose"] <= thresholds[method]["tight"] < 1.0


def test_one_options_object_serves_masks_with_different_thresholds(small_sample, tmp_path):
    """Resolving the tight threshold from one MASKS folder must not leak into the caller's options."""
    from autobackswap_cli.compose import BackSwapDataset, ComposeOptions

    masks_a, masks_b = tmp_path / "a", tmp_path / "b"
    for folder, tight in ((masks_a, 0.3), (masks_b, 0.8)):
        shutil.copytree(small_sample / "masks/train", folder)
        (folder / "autobackswap.json").write_text(json.dumps({"options": {"thresholds": {"loose": 0.2, "tight": tight}}}))
    options = ComposeOptions()
    first = BackSwapDataset(small_sample / "train", masks_a, small_sample / "backgrounds/train", options)
    second = BackSwapDataset(small_sample / "train", masks_b, small_sample / "backgrounds/train", options)
    assert (first.core.tight, second.core.tight, options.tight) == (0.3, 0.8, None)


@pytest.mark.parametrize("thresholds, message", [({"loose": -3, "tight": 7}, "'options.thresholds.loose' must be a number in (0, 1]"),
                                                 ({"loose": 0.8, "tight": 0.3}, "loose (0.8) must not exceed tight (0.3)"),
                                                 ("nope", "'options.thresholds' must be an object")])
def test_thresholds_recorded_in_masks_are_checked_before_any_image(thresholds, message, small_sample, tmp_path):
    masks = tmp_path / "masks"
    shutil.copytree(small_sample / "masks/train", masks)
    (masks / "autobackswap.json").write_text(json.dumps({"step": "segment", "options": {"thresholds": thresholds}}))
    for step in (["inpaint", small_sample / "train", masks, "-o", tmp_path / "bg", "--method", "pyramid"],
                 ["compose", small_sample / "train", masks, small_sample / "backgrounds/train", "-o", tmp_path / "out"]):
        output = " ".join(cli(*step, "--no-progress", expect=2).output.split())
        assert message in output and str(masks / "autobackswap.json") in output and "Traceback" not in output, output
    assert not (tmp_path / "bg").exists() or not list((tmp_path / "bg").rglob("*.png"))
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.png"))
