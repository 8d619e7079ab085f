"""segmenter/predict.py (`autobackswap segment`): masks at image size, bad inputs, resume, signals, devices."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import badfiles
from autobackswap_cli.images import TEMP_PREFIX, read_mask, scan_image_folder
from autobackswap_cli.sample_data import SampleSpec, generate
from conftest import SAMPLE_DATA, cli, cli_background, cli_subprocess, run_record, wait_until


def test_segment_writes_soft_masks_at_image_size_with_preview(small_sample, tiny_checkpoint, tmp_path):
    out = tmp_path / "masks"
    cli("segment", small_sample / "test", "-m", tiny_checkpoint, "-o", out, "--preview", tmp_path / "p.png", "--workers", "1", "--no-progress")
    for img_path in (small_sample / "test").rglob("*.jpg"):
        rel = img_path.relative_to(small_sample / "test")
        with Image.open(img_path) as img:
            w, h = img.size
        mask = np.asarray(Image.open(out / rel.with_suffix(".png")))
        assert mask.shape == (h, w) and mask.dtype == np.uint8
    assert Image.open(tmp_path / "p.png").size[0] > 100
    record = run_record(out)
    assert record["counts"]["done"] == 18 and record["options"]["device"] == "cpu"


def _awkward_dataset(root: Path) -> Path:
    good = badfiles.gradient_rgb(64, 48)
    badfiles.write_jpeg(root / "cat/good.jpg", good)
    badfiles.zero_byte(root / "cat/zero.jpg")
    badfiles.truncated_jpeg(root / "cat/truncated.jpg")
    badfiles.not_an_image(root / "cat/notes.png")
    badfiles.cmyk_jpeg(root / "dog/cmyk.jpg")
    badfiles.png16(root / "dog/deep.png")
    badfiles.rgba_png(root / "dog/alpha.png")
    badfiles.palette_png(root / "dog/palette.png")
    badfiles.exif_rotated_jpeg(root / "dog/rotated.JPG", w=80, h=48)
    badfiles.huge_png_header(root / "dog/huge.png")
    (root / "emptyclass").mkdir(parents=True)
    return root


def test_bad_inputs_are_listed_and_the_run_goes_on(tmp_path, tiny_checkpoint):
    data = _awkward_dataset(tmp_path / "data")
    out = data / "masks"  # output inside the input folder
    result = cli("segment", data, "-m", tiny_checkpoint, "-o", out, "--no-progress", "--workers", "1", expect=1)
    text = " ".join(result.output.split())
    assert "emptyclass" in text and "inside the input folder" in text
    record = run_record(out)
    reasons = {f["item"]: f["reason"] for f in record["failures"]}
    assert set(reasons) == {"cat/zero.jpg", "cat/truncated.jpg", "cat/notes.png", "dog/huge.png"}
    assert "empty file" in reasons["cat/zero.jpg"] and "truncated" in reasons["cat/truncated.jpg"]
    assert "not an image" in reasons["cat/notes.png"] and "too large" in reasons["dog/huge.png"]
    for name in reasons:
        assert name in text
    assert record["counts"] == {"total": 10, "done": 6, "skipped": 0, "failed": 4, "no_foreground": 0, "low_confidence": 0}
    assert read_mask(out / "dog/rotated.png").shape == (80, 48)  # EXIF-rotated: the shown orientation
    for name in ("cmyk", "deep", "alpha", "palette"):
        assert read_mask(out / f"dog/{name}.png").shape == (48, 80)
    assert not (out / "masks").exists()  # the output was not read as input
    # inputs untouched, nothing partial anywhere
    assert sorted(p.name for p in (data / "cat").iterdir()) == ["good.jpg", "notes.png", "truncated.jpg", "zero.jpg"]
    assert not list(tmp_path.rglob(TEMP_PREFIX + "*"))


def test_fail_fast_exits_at_first_failure(tmp_path, tiny_checkpoint):
    data = _awkward_dataset(tmp_path / "data")
    result = cli("segment", data, "-m", tiny_checkpoint, "-o", tmp_path / "m", "--fail-fast", "--workers", "0", "--no-progress", expect=1)
    assert "fail-fast" in result.output
    counts = run_record(tmp_path / "m")["counts"]
    assert counts["failed"] == 1 and counts["done"] + counts["failed"] < counts["total"]  # stopped at the first failure


def _big_set(root: Path) -> Path:
    generate(root, SampleSpec(seed=5, size=64, train_per_class=150, test_per_group=1, labelled=0, grid=8))
    return root / "train"


def _start_segment(data: Path, ckpt: Path, out: Path) -> subprocess.Popen:
    return cli_background("segment", data, "-m", ckpt, "-o", out, "--refine", "grabcut", "--workers", "1", "--batch-size", "4", "--no-progress")


def _wait_for_masks(out: Path, n: int, proc: subprocess.Popen) -> None:
    wait_until(proc, lambda: len(list(out.rglob("*.png"))) >= n)


@pytest.mark.slow
def test_killed_segment_resumes_without_redoing_or_partial_files(tmp_path, tiny_checkpoint):
    data = _big_set(tmp_path / "big")
    out = tmp_path / "masks"
    proc = _start_segment(data, tiny_checkpoint, out)
    _wait_for_masks(out, 40, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: main and workers, no cleanup
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert 40 <= len(finished) < 450
    for p in finished:  # every file under a final name is complete and decodes at the image's size
        with Image.open(data / p.relative_to(out).with_suffix(".jpg")) as img:
            assert read_mask(p).shape == img.size[::-1]
    result = cli_subprocess("segment", data, "-m", tiny_checkpoint, "-o", out, "--refine", "grabcut", "--workers", "1", "--no-progress")
    assert result.returncode == 0, result.stderr
    record = run_record(out)
    assert record["counts"]["skipped"] == len(finished)
    assert record["counts"]["done"] == 450 - len(finished)
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # not redone
    assert len(list(out.rglob("*.png"))) == 450
    assert not list(out.rglob(TEMP_PREFIX + "*"))


def test_missing_device_is_an_error_not_a_fallback(small_sample, tiny_checkpoint, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = cli("segment", small_sample / "test", "-m", tiny_checkpoint, "-o", tmp_path / "m", "--device", "cuda", "--no-progress", expect=2)
    assert "CUDA is not available" in " ".join(result.output.split())
    assert not (tmp_path / "m").exists() or not list((tmp_path / "m").rglob("*.png"))


@pytest.mark.slow
def test_masks_do_not_depend_on_batch_size_or_shards(tmp_path):
    """The README's promise. Before the model ran in fixed chunks, 10 of these 180 masks changed by a grey
    level between --batch-size 7 and 32 (kernels sum in another order for another batch size)."""
    ckpt = tmp_path / "seg.safetensors"
    cli("train-segmenter", SAMPLE_DATA / "train", SAMPLE_DATA / "labels", "-o", ckpt, "--no-progress")
    runs = {"b7": ("--batch-size", "7"), "b32": ("--batch-size", "32")}
    for name, extra in runs.items():
        cli("segment", SAMPLE_DATA / "train", "-m", ckpt, "-o", tmp_path / name, "--workers", "1", "--no-progress", *extra)
    for k in range(3):
        cli("segment", SAMPLE_DATA / "train", "-m", ckpt, "-o", tmp_path / "shards", "--shard", f"{k}/3", "--batch-size", "5", "--workers", "1",
            "--no-progress")
    masks = {name: {p.relative_to(tmp_path / name): p.read_bytes() for p in (tmp_path / name).rglob("*.png")} for name in (*runs, "shards")}
    assert len(masks["b7"]) == 180 and masks["b7"] == masks["b32"] == masks["shards"]
    # and at the source: one thread (as beside workers), an image's probabilities alone and in a batch of 32
    from autobackswap_cli.images import read_image
    from autobackswap_cli.segmenter.predict import PatchPredictor

    predictor, threads = PatchPredictor(ckpt, device="cpu"), torch.get_num_threads()
    inputs = [predictor.model_input(read_image(it.path)) for it in scan_image_folder(SAMPLE_DATA / "train").items[:32]]
    torch.set_num_threads(1)
    try:
        assert np.array_equal(predictor(inputs), np.concatenate([predictor([x]) for x in inputs]))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_replicas_on_several_devices_write_the_bytes_of_one_device(tmp_path, tiny_checkpoint, monkeypatch):
    """Several GPUs run one model replica each, side by side; shown here with two CPU replicas."""
    import torch

    from autobackswap_cli.engine import RunOptions, prepare_items, run_step
    from autobackswap_cli.segmenter import predict
    from autobackswap_cli.segmenter.predict import SegmentOptions, SegmentStep

    data = _big_set(tmp_path / "big")
    items, _ = prepare_items(data)
    options = RunOptions(workers=2, batch_size=8, progress=False)
    run_step(SegmentStep(tiny_checkpoint, tmp_path / "one", SegmentOptions(device="cpu")), items, options)
    monkeypatch.setattr(predict, "resolve_devices", lambda name, gpus=None: [torch.device("cpu"), torch.device("cpu")])
    step = SegmentStep(tiny_checkpoint, tmp_path / "two", SegmentOptions(device="cpu"))
    computed_by = []
    real_looks = predict.PatchPredictor.looks
    monkeypatch.setattr(predict.PatchPredictor, "looks", lambda self, inputs, chunk=None: computed_by.append(id(self)) or real_looks(self, inputs, chunk))
    report = run_step(step, items, options)
    assert report.done == len(items) and len(set(computed_by)) == 2  # both replicas computed batches
    assert run_record(tmp_path / "two")["options"]["device"] == "cpu,cpu"
    one, two = sorted((tmp_path / "one").rglob("*.png")), sorted((tmp_path / "two").rglob("*.png"))
    assert len(one) == len(items) and [p.relative_to(tmp_path / "one") for p in one] == [p.relative_to(tmp_path / "two") for p in two]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(one, two))


def test_a_pixel_model_looks_again_at_larger_sizes_where_it_found_almost_no_foreground(tmp_path, monkeypatch):
    """u2netp misses some objects at its 160-px input: an image whose first look holds foreground in under 2 % of
    the pixels looks again at 240 px, then at 320 px while it still finds under 2 %, and keeps the extra look that
    found the most; one with foreground is left alone; second_look=0 never looks again."""
    from autobackswap_cli.engine import RunOptions, prepare_items, run_step
    from autobackswap_cli.segmenter import predict
    from autobackswap_cli.segmenter.model import build_segmenter, save_checkpoint
    from autobackswap_cli.segmenter.predict import SegmentOptions, SegmentStep

    ckpt = tmp_path / "u2netp.safetensors"
    save_checkpoint(ckpt, build_segmenter("u2netp", 16), image_size=160, options={}, metrics={})
    data = tmp_path / "data/a"
    data.mkdir(parents=True)
    # large: 31 % of a 128-px frame; small and dot: 1.2 %. The green channel tells the fake model what 320 px sees.
    for name, radius, colour in (("large", 40, (255, 255, 255)), ("small", 8, (255, 0, 0)), ("dot", 8, (255, 255, 0))):
        image = np.zeros((128, 128, 3), np.uint8)
        yy, xx = np.mgrid[:128, :128]
        image[(yy - 64) ** 2 + (xx - 64) ** 2 <= radius**2] = colour
        Image.fromarray(image).save(data / f"{name}.png")
    sizes = []

    def fake_model(self, inputs, chunk=None):
        """160 and 240 px see the red disc; 320 px sees everything, or nothing where the disc is green too."""
        sizes.append(inputs[0].shape[-1])
        looks = [x[0] / 255.0 if x.shape[-1] < 320 else np.full(x.shape[1:], float(x[1].max() == 0)) for x in inputs]
        return (np.stack(looks).astype(np.float32) if len({x.shape for x in inputs}) == 1 else looks), None

    monkeypatch.setattr(predict.PatchPredictor, "looks", fake_model)
    items, _ = prepare_items(tmp_path / "data")
    masks = {}
    for name, below in (("default", predict.SECOND_LOOK_BELOW), ("never", 0.0)):
        run_step(SegmentStep(ckpt, tmp_path / name, SegmentOptions(device="cpu", refine="none", second_look=below)), items,
                 RunOptions(workers=1, progress=False))
        masks[name] = {n: read_mask(tmp_path / name / f"a/{n}.png") >= 0.5 for n in ("large", "small", "dot")}
    # one first look of the three images; dot and small again at 240, both still under 2 % -> both at 320
    assert sizes == [160, 240, 320, 160]
    assert 0.28 < masks["default"]["large"].mean() < 0.33 and masks["default"]["small"].all()
    assert 0.005 < masks["default"]["dot"].mean() < 0.02  # 320 px found nothing: the 240-px look is kept
    assert np.array_equal(masks["never"]["large"], masks["default"]["large"]) and masks["never"]["small"].mean() < 0.02
    record = run_record(tmp_path / "default")
    assert record["results"]["second_looks"] == 2
    assert record["options"]["second_look"] == {"below": predict.SECOND_LOOK_BELOW, "image_sizes": [240, 320]}
    assert run_record(tmp_path / "never")["options"]["second_look"] is None
