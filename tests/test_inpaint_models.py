"""inpaint with the model backends, fully offline: a tiny random diffusers pipeline and a tiny TorchScript model,
saved to tmp_path and loaded through the same code path a user's local model takes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autobackswap_cli.images import read_image, read_mask
from autobackswap_cli.inpaint.step import FillRegion, fill_region
from conftest import cli, run_record
from test_inpaint import _png_copy

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:FutureWarning")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread (and a busy machine makes thread hand-offs very slow)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class MeanFill(torch.nn.Module):
    """LaMa's convention, with a fill anyone can check: the hole gets the mean colour of the known pixels."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        known = 1 - mask
        mean = (image * known).sum((2, 3), keepdim=True) / known.sum((2, 3), keepdim=True).clamp_min(1)
        return (image * known + mean * mask) * self.scale


@pytest.fixture(scope="session")
def mean_fill_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("torchscript") / "mean-fill.pt"
    torch.jit.save(torch.jit.script(MeanFill()), str(path))
    return path


def _diffusers(model: Path, *args) -> list[str]:
    return ["--method", "diffusers", "--model", model, "--steps", "2", "--device", "cpu", "--workers", "0", "--no-progress", *args]


def _torchscript(model: Path, *args) -> list[str]:
    return ["--method", "torchscript", "--model", model, "--device", "cpu", "--workers", "0", "--no-progress", *args]


def _assert_only_holes_changed(data: Path, masks: Path, out: Path, count: int) -> None:
    outputs = sorted(out.rglob("*.png"))
    assert len(outputs) == count
    for bg_path in outputs:
        rel = bg_path.relative_to(out)
        image, background = read_image(data / rel), read_image(bg_path)
        hole = fill_region(read_mask(masks / rel, image.shape[:2]), FillRegion())
        assert background.shape == image.shape
        assert np.array_equal(background[~hole], image[~hole])
        assert np.abs(background[hole].astype(int) - image[hole].astype(int)).mean() > 5


def _large_image(tmp_path: Path) -> tuple[Path, Path]:
    """One 300x200 image with a 24 px object far from the centre, and its mask: the crop path, not the whole image."""
    yy, xx = np.mgrid[0:200, 0:300]
    image = np.stack([xx * 255 // 300, yy * 255 // 200, np.full_like(xx, 90)], -1).astype(np.uint8)
    mask = np.zeros((200, 300), np.uint8)
    mask[150:174, 40:64] = 255
    image[mask > 0] = (250, 20, 200)
    (tmp_path / "data/c").mkdir(parents=True)
    (tmp_path / "masks/c").mkdir(parents=True)
    Image.fromarray(image).save(tmp_path / "data/c/big.png")
    Image.fromarray(mask).save(tmp_path / "masks/c/big.png")
    return tmp_path / "data", tmp_path / "masks"


def test_diffusers_fills_only_the_hole(small_sample, tiny_pipeline, tmp_path):
    data, masks = _png_copy(small_sample, tmp_path)
    out = tmp_path / "bg"
    cli("inpaint", data, masks, "-o", out, *_diffusers(tiny_pipeline, "--resolution", "64", "--prompt", "empty meadow"))
    _assert_only_holes_changed(data, masks, out, 18)
    options = run_record(out)["options"]
    assert options["method"] == "diffusers" and options["model"] == str(tiny_pipeline) and options["model_source"] == "local folder"
    assert options["pipeline"] == "StableDiffusionInpaintPipeline" and options["prompt"] == "empty meadow"
    assert (options["steps"], options["device"], options["dtype"]) == (2, "cpu", "float32")


def test_diffusers_seeded_runs_are_reproducible(small_sample, tiny_pipeline, tmp_path):
    data, masks = _png_copy(small_sample, tmp_path)
    args = _diffusers(tiny_pipeline, "--resolution", "32")
    for name, seed, batch_size in [("a", "7", "4"), ("again", "7", "4"), ("other_seed", "8", "4"), ("one_by_one", "7", "1")]:
        cli("inpaint", data, masks, "-o", tmp_path / name, *args, "--seed", seed, "--batch-size", batch_size)
    names = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(names) == 18
    assert all((tmp_path / "a" / n).read_bytes() == (tmp_path / "again" / n).read_bytes() for n in names)
    assert not any((tmp_path / "a" / n).read_bytes() == (tmp_path / "other_seed" / n).read_bytes() for n in names)
    # each image's noise comes from the seed and the image, not from its batch: other batches change at most
    # a rounding step (floating-point kernels may differ with the batch shape)
    for n in names:
        assert np.abs(read_image(tmp_path / "a" / n).astype(int) - read_image(tmp_path / "one_by_one" / n)).max() <= 1


def test_diffusers_large_image_goes_through_a_resized_crop(tiny_pipeline, tmp_path):
    data, masks = _large_image(tmp_path)
    cli("inpaint", data, masks, "-o", tmp_path / "bg", *_diffusers(tiny_pipeline, "--resolution", "32"))
    _assert_only_holes_changed(data, masks, tmp_path / "bg", 1)


def test_diffusers_hub_id_loads_from_the_huggingface_cache_offline(tiny_pipeline, tmp_path, monkeypatch):
    from huggingface_hub import constants

    revision = "0" * 40
    repo = tmp_path / "hub/models--autobackswap-tests--tiny-inpaint"
    shutil.copytree(tiny_pipeline, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs/main").write_text(revision)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    data, masks = _large_image(tmp_path)
    cli("inpaint", data, masks, "-o", tmp_path / "bg", *_diffusers("autobackswap-tests/tiny-inpaint", "--resolution", "32"))
    _assert_only_holes_changed(data, masks, tmp_path / "bg", 1)
    assert run_record(tmp_path / "bg")["options"]["model_source"] == "hub cache"
    result = cli("inpaint", data, masks, "-o", tmp_path / "bg2", *_diffusers("autobackswap-tests/no-such-pipeline"), expect=2)
    assert "not in the huggingface cache" in " ".join(result.output.split())


def test_diffusers_model_problems_are_clear_errors(small_sample, tiny_pipeline, tmp_path):
    data, masks = small_sample / "test", small_sample / "masks/test"
    cases = {
        tmp_path / "missing": "no such folder, and not a valid hub id",
        tiny_pipeline / "unet": "not a diffusers pipeline (no model_index.json",
        tiny_pipeline / "model_index.json": "not a file",
    }
    for model, message in cases.items():
        result = cli("inpaint", data, masks, "-o", tmp_path / "bg", *_diffusers(model), expect=2)
        assert message in " ".join(result.output.split())
    result = cli("inpaint", data, masks, "-o", tmp_path / "bg", *_diffusers(tiny_pipeline, "--resolution", "60"), expect=2)
    assert "multiple of 8" in result.output
    assert "Traceback" not in result.output


def test_torchscript_fills_only_the_hole_with_the_model_output(small_sample, mean_fill_model, tmp_path):
    data, masks = _png_copy(small_sample, tmp_path)
    out = tmp_path / "bg"
    cli("inpaint", data, masks, "-o", out, *_torchscript(mean_fill_model))
    _assert_only_holes_changed(data, masks, out, 18)
    for bg_path in out.rglob("*.png"):  # the model's fill: one flat colour, the mean of the known pixels
        image, background = read_image(data / bg_path.relative_to(out)), read_image(bg_path)
        hole = fill_region(read_mask(masks / bg_path.relative_to(out), image.shape[:2]), FillRegion())
        assert np.abs(background[hole].astype(int) - image[~hole].mean(0)).max() <= 1
    options = run_record(out)["options"]
    assert (options["method"], options["model"], options["device"]) == ("torchscript", str(mean_fill_model), "cpu")


def test_torchscript_large_image_and_0_255_outputs(mean_fill_model, tmp_path):
    data, masks = _large_image(tmp_path)
    cli("inpaint", data, masks, "-o", tmp_path / "bg", *_torchscript(mean_fill_model))
    _assert_only_holes_changed(data, masks, tmp_path / "bg", 1)
    # a model answering in 0..255 gives the same picture
    scaled = tmp_path / "mean-fill-255.pt"
    torch.jit.save(torch.jit.script(MeanFill(255.0)), str(scaled))
    cli("inpaint", data, masks, "-o", tmp_path / "bg255", *_torchscript(scaled))
    first, second = read_image(tmp_path / "bg/c/big.png").astype(int), read_image(tmp_path / "bg255/c/big.png").astype(int)
    assert np.abs(first - second).max() <= 1


def test_torchscript_model_problems_are_clear_errors(small_sample, tmp_path):
    data, masks = small_sample / "test", small_sample / "masks/test"
    (tmp_path / "notes.txt").write_text("not a model")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "state_dict.pt")
    cases = {
        tmp_path / "missing.pt": "no such file",
        tmp_path / "notes.txt": "not a TorchScript file",
        tmp_path / "state_dict.pt": "torch.jit.load could not read it as a TorchScript model",
    }
    for model, message in cases.items():
        result = cli("inpaint", data, masks, "-o", tmp_path / "bg", *_torchscript(model), expect=2)
        assert message in " ".join(result.output.split())
    result = cli("inpaint", data, masks, "-o", tmp_path / "bg", "--method", "torchscript", expect=2)
    assert "needs --model" in result.output


def test_context_box_holds_the_hole_box_and_stays_inside_the_image():
    from autobackswap_cli.inpaint.base import context_box, hole_box

    rng = np.random.default_rng(0)
    for _ in range(300):
        height, width = rng.integers(1, 120, 2)
        hole = np.zeros((height, width), bool)
        y, x = rng.integers(0, height), rng.integers(0, width)
        hole[y : y + rng.integers(1, 30), x : x + rng.integers(1, 30)] = True
        min_side, square = int(rng.integers(0, 100)), bool(rng.integers(0, 2))
        y0, y1, x0, x1 = context_box(hole, 0.5, min_side, square)
        h0, h1, w0, w1 = hole_box(hole, 0.5)
        assert 0 <= y0 <= h0 and h1 <= y1 <= height and 0 <= x0 <= w0 and w1 <= x1 <= width
        assert y1 - y0 >= min(height, min_side) and x1 - x0 >= min(width, min_side)
        assert not square or y1 - y0 == x1 - x0 or y1 - y0 == height or x1 - x0 == width


def test_a_model_backend_on_several_devices_runs_one_replica_each_with_the_same_bytes(small_sample, mean_fill_model, tmp_path, monkeypatch):
    """`--device cuda` on a box with several GPUs: one model per GPU; shown with two CPU replicas."""
    from autobackswap_cli.engine import RunOptions, prepare_items, run_step
    from autobackswap_cli.inpaint import InpaintOptions, step as inpaint_step
    from autobackswap_cli.inpaint.step import InpaintStep

    items, _ = prepare_items(small_sample / "train")
    masks = small_sample / "masks/train"
    options = InpaintOptions(method="torchscript", model=str(mean_fill_model), device="auto")
    run_step(InpaintStep(masks, tmp_path / "one", options, FillRegion()), items, RunOptions(workers=0, batch_size=4, progress=False))
    monkeypatch.setattr(inpaint_step, "resolve_devices", lambda name: [torch.device("cpu"), torch.device("cpu")])
    report = run_step(InpaintStep(masks, tmp_path / "two", options, FillRegion()), items, RunOptions(workers=0, batch_size=4, progress=False))
    assert report.ok and json.loads((tmp_path / "two" / "autobackswap.json").read_text())["options"]["device"] == "cpu,cpu"
    one, two = sorted((tmp_path / "one").rglob("*.jpg")), sorted((tmp_path / "two").rglob("*.jpg"))
    assert len(one) == 24 and all(a.read_bytes() == b.read_bytes() for a, b in zip(one, two))
