"""The CUDA paths against the CPU results (`make gpu-check` runs these on a GPU machine; skipped without CUDA).

Each step runs with ``--device cuda`` and is compared with the same step on the CPU: masks by IoU (>= 0.99 at the
0.5 threshold) and grey levels, backgrounds and composites by pixel difference, classifier scores exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from autobackswap_cli.images import read_image, read_mask
from conftest import cli, run_record

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (make gpu-check)")]


@pytest.fixture(scope="module")
def segmenter(small_sample, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cuda") / "segmenter.safetensors"
    cli("train-segmenter", small_sample / "train", small_sample / "labels", "-o", path, "--epochs", 8, "--device", "cpu", "--no-progress")
    return path


@pytest.fixture(scope="module")
def cpu_masks(small_sample, segmenter, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cpu") / "masks"
    cli("segment", small_sample / "train", "-m", segmenter, "-o", out, "--device", "cpu", "--no-progress")
    return out


def _pairs(a: Path, b: Path, pattern: str) -> list[tuple[Path, Path]]:
    files = sorted(a.rglob(pattern))
    assert files and sorted(p.relative_to(a) for p in files) == sorted(p.relative_to(b) for p in b.rglob(pattern))
    return [(p, b / p.relative_to(a)) for p in files]


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_segment_on_cuda_matches_the_cpu(small_sample, segmenter, cpu_masks, tmp_path, precision):
    out = tmp_path / "masks"
    cli("segment", small_sample / "train", "-m", segmenter, "-o", out, "--device", "cuda", "--precision", precision,
        "--truth", cpu_masks, "--no-progress")
    iou = run_record(out)["results"]["iou_against_truth"]
    assert iou["mean_iou"] >= 0.99 and iou["min_iou"] >= 0.95, iou
    grey = max(np.abs(read_mask(a).astype(int) - read_mask(b).astype(int)).mean() for a, b in _pairs(out, cpu_masks, "*.png"))
    assert grey <= (1.0 if precision == "fp32" else 3.0), grey  # mean grey-level difference of the worst mask


def test_train_segmenter_on_cuda_learns_what_the_cpu_learns(small_sample, segmenter, tmp_path):
    path = tmp_path / "cuda.safetensors"
    cli("train-segmenter", small_sample / "train", small_sample / "labels", "-o", path, "--epochs", 8, "--device", "cuda", "--no-progress")
    cpu = json.loads(Path(str(segmenter) + ".json").read_text())["metrics"]["val_patch_iou"]
    gpu = json.loads(Path(str(path) + ".json").read_text())
    assert gpu["options"]["device_used"].startswith("cuda")
    assert abs(gpu["metrics"]["val_patch_iou"] - cpu) <= 0.05, (gpu["metrics"], cpu)


def test_inpaint_with_a_diffusers_pipeline_on_cuda_matches_the_cpu(small_sample, tiny_pipeline, tmp_path):
    masks = small_sample / "masks/train"
    common = ("--method", "diffusers", "--model", tiny_pipeline, "--steps", "2", "--resolution", "64", "--no-progress")
    cli("inpaint", small_sample / "train", masks, "-o", tmp_path / "cpu", *common, "--device", "cpu")
    cli("inpaint", small_sample / "train", masks, "-o", tmp_path / "cuda", *common, "--device", "cuda", "--precision", "fp32")
    cli("inpaint", small_sample / "train", masks, "-o", tmp_path / "fp16", *common, "--device", "cuda", "--precision", "fp16")
    for a, b in _pairs(tmp_path / "cpu", tmp_path / "cuda", "*.jpg"):
        assert np.abs(read_image(a).astype(int) - read_image(b).astype(int)).mean() <= 2.0  # same noise (CPU generators)
    assert len(list((tmp_path / "fp16").rglob("*.jpg"))) == 24


def test_composites_from_cuda_masks_match_those_from_cpu_masks(small_sample, segmenter, cpu_masks, tmp_path):
    cli("segment", small_sample / "train", "-m", segmenter, "-o", tmp_path / "masks", "--device", "cuda", "--no-progress")
    for name, masks in (("cpu", cpu_masks), ("cuda", tmp_path / "masks")):
        cli("compose", small_sample / "train", masks, small_sample / "backgrounds/train", "-o", tmp_path / name, "--per-image", 2, "--no-progress")
    assert (tmp_path / "cpu/manifest.csv").read_text() == (tmp_path / "cuda/manifest.csv").read_text()  # same pairings
    diffs = [np.abs(read_image(a).astype(int) - read_image(b).astype(int)).mean() for a, b in _pairs(tmp_path / "cpu", tmp_path / "cuda", "*.jpg")]
    assert max(diffs) <= 2.0 and float(np.mean(diffs)) <= 0.5, (max(diffs), float(np.mean(diffs)))


def test_evaluate_on_cuda_gives_the_cpu_accuracies(small_sample, tmp_path):
    model = tmp_path / "classifier.safetensors"
    cli("train-classifier", small_sample / "train", "-o", model, "--epochs", 3, "--device", "cpu", "--no-progress")
    truth = ("--masks", small_sample / "masks/test", "--backgrounds", small_sample / "backgrounds/test")
    for device in ("cpu", "cuda"):
        cli("evaluate", small_sample / "test", *truth, "-m", model, "--device", device, "--json", tmp_path / f"{device}.json", "--no-progress")
    cpu, gpu = (json.loads((tmp_path / f"{d}.json").read_text())["models"][0]["accuracy"] for d in ("cpu", "cuda"))
    assert cpu == gpu
