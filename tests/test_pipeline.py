"""pipeline.py (`autobackswap run`): the chain, resume, shards and replaying a run's options."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from PIL import Image

from badfiles import truncated_jpeg
from conftest import cli, run_record


def _manifest(out: Path) -> list[dict]:
    return list(csv.DictReader(open(out / "manifest.csv")))


def test_run_chains_all_steps_and_resumes(small_sample, tmp_path):
    work = tmp_path / "work"
    cli("run", small_sample / "train", "--labels", small_sample / "labels", "-o", work, "--no-progress", "--workers", "1", "--preview", tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
    for sub in ("masks", "backgrounds", "composites"):
        assert run_record(work / sub)["counts"]["done"] == 24
    assert (work / "segmenter.safetensors").exists() and len(_manifest(work / "composites")) == 24
    result = cli("run", small_sample / "train", "--labels", small_sample / "labels", "-o", work, "--no-progress", "--workers", "1")
    assert "exists, kept" in " ".join(result.output.split())
    assert run_record(work / "composites")["counts"]["skipped"] == 24


def test_run_exits_0_when_the_only_images_left_out_have_no_foreground(small_sample, tiny_checkpoint, tmp_path):
    work = tmp_path / "work"  # a run that got as far as compose: segmenter, masks (one all black), backgrounds
    work.mkdir()
    shutil.copy(tiny_checkpoint, work / "segmenter.safetensors")
    shutil.copytree(small_sample / "masks/train", work / "masks")
    shutil.copytree(small_sample / "backgrounds/train", work / "backgrounds")
    Image.new("L", Image.open(work / "masks/disc/disc_0001.png").size, 0).save(work / "masks/disc/disc_0001.png")
    args = ("--labels", small_sample / "labels", "--no-progress", "--workers", "1", "--fail-fast")
    result = cli("run", small_sample / "train", "-o", work, *args)
    assert "no foreground: 1 image of 24" in " ".join(result.output.split())
    assert len(_manifest(work / "composites")) == 23 and not list((work / "composites/disc").glob("disc_0001__*"))
    record = run_record(work / "composites")
    assert record["no_foreground"] == ["disc/disc_0001.jpg"] and record["counts"]["failed"] == 0
    summary = run_record(work)
    assert summary["status"] == "completed" and summary["counts"]["compose"] == {"done": 23, "skipped": 0, "failed": 0, "no_foreground": 1, "low_confidence": 0}
    data = tmp_path / "data"  # a corrupt image beside it still fails the run
    shutil.copytree(small_sample / "train", data)
    truncated_jpeg(data / "disc/broken.jpg")
    cli("run", data, "-o", work, *args[:-1], expect=1)
    assert run_record(work)["counts"]["compose"] == {"done": 0, "skipped": 23, "failed": 1, "no_foreground": 1, "low_confidence": 0}


def test_run_with_shards_wants_the_segmenter_trained_first(small_sample, tmp_path):
    result = cli("run", small_sample / "train", "--labels", small_sample / "labels", "-o", tmp_path / "work", "--shard", "1/2", "--no-progress", expect=2)
    assert "train the segmenter once" in " ".join(result.output.split())
    assert not (tmp_path / "work" / "segmenter.safetensors").exists()


def test_config_replays_a_runs_options_and_the_command_line_overrides_them(small_sample, tmp_path):
    first = tmp_path / "first"
    cli("run", small_sample / "train", "--labels", small_sample / "labels", "-o", first, "--no-progress", "--workers", "0",
        "--method", "telea", "--per-image", "2", "--bg-from", "other-class", "--tight", "0.5")
    record = run_record(first)
    assert record["step"] == "run" and record["status"] == "completed" and record["options"]["inpaint"]["method"] == "telea"
    second = tmp_path / "second"
    cli("run", small_sample / "train", "--labels", small_sample / "labels", "-o", second, "--config", first / "autobackswap.json",
        "--no-progress", "--workers", "0", "--per-image", "1")
    assert run_record(second / "backgrounds")["options"]["method"] == "telea"  # replayed
    composed = run_record(second / "composites")["options"]
    assert (composed["bg_from"], composed["tight"], composed["tight_from"], composed["per_image"]) == ("other-class", 0.5, "option", 1)  # replayed; overridden
    assert len(_manifest(second / "composites")) == 24 and len(_manifest(first / "composites")) == 48
    third = tmp_path / "third"  # the same run, its composites as tar shards
    cli("run", small_sample / "train", "--labels", small_sample / "labels", "-o", third, "--config", first / "autobackswap.json",
        "--no-progress", "--workers", "0", "--output-layout", "webdataset", "--shard-size", "10")
    assert json.loads((third / "composites" / "index.json").read_text())["nsamples"] == 48 and not list((third / "composites").rglob("*.jpg"))
    (tmp_path / "bad.json").write_text('{"step": "run", "options": {"inpaint": {"colour": 1}}}')
    result = cli("run", small_sample / "train", "--labels", small_sample / "labels", "-o", tmp_path / "x", "--config", tmp_path / "bad.json", expect=2)
    assert "unknown option 'inpaint.colour'" in " ".join(result.output.split())


BAD_CONFIGS = {
    "options a list": ({"step": "run", "options": [1]}, "field 'options' must be an object"),
    "scale text": ({"step": "run", "options": {"compose": {"scale": "big"}}}, "field 'compose.scale' must be a list of 2 numbers"),
    "per_image text": ({"step": "run", "options": {"compose": {"per_image": "three"}}}, "field 'compose.per_image' must be an integer"),
    "tight 5": ({"step": "run", "options": {"compose": {"tight": 5}}}, "field 'compose.tight' must be from 0.0 to 1.0"),
    "out_format gif": ({"step": "run", "options": {"compose": {"out_format": "gif"}}}, "field 'compose.out_format' must be one of same, png"),
    "refine unknown": ({"step": "run", "options": {"segment": {"refine": "magic"}}}, "field 'segment.refine' must be one of none"),
    "epochs 0": ({"step": "run", "options": {"train": {"epochs": 0}}}, "field 'train.epochs' must be from 1"),
    "a segment record": ({"step": "segment", "options": {"refine": "none"}}, "not a run record of `autobackswap run` (it is 'segment''s record)"),
    "nested deep": ("[" * 100_000 + "]" * 100_000, "not a run record"),
}


def test_a_bad_config_is_one_error_naming_the_key_before_any_step_starts(small_sample, tmp_path):
    for case, (config, message) in BAD_CONFIGS.items():
        path = tmp_path / f"{case}.json"
        path.write_text(config if isinstance(config, str) else json.dumps(config))
        work = tmp_path / "work"
        result = cli("run", small_sample / "train", "--labels", small_sample / "labels", "-o", work, "--config", path, "--no-progress", expect=2)
        output = " ".join(result.output.split())
        assert message in output and str(path) in output and "Traceback" not in output, (case, output)
        assert not work.exists() or not any(work.iterdir()), case  # no step started
