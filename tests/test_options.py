"""Options declared once: the shared options of the item steps, what `run` takes and forwards, ranges, and choices
that are their registries (inpainting methods, backbones, output encodings)."""

from __future__ import annotations

import ast
import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer.main

from autobackswap_cli import cli as cli_module
from autobackswap_cli import pipeline
from autobackswap_cli.choices import Backbone, InpaintMethod, OutputFormat, value_range
from autobackswap_cli.engine import CommonOptions, DatasetLayout, Shard
from autobackswap_cli.images import IMAGE_EXTENSIONS, IMAGE_FORMATS, encode_format_names, read_image, scan_image_folder, write_image_atomic
from autobackswap_cli.inpaint import BACKENDS, METHODS
from autobackswap_cli.segmenter.backbones import BACKBONE_INFO
from autobackswap_cli.segmenter.model import BACKBONES
from conftest import cli, run_record

PACKAGE = Path(cli_module.__file__).parent
COMMANDS = {c.name: c for c in typer.main.get_command(cli_module.app).commands.values()}
ENGINE = {"--workers", "--shard", "--files-from", "--executor", "--ray-address", "--gpus-per-worker", "--overwrite", "--fail-fast",
          "--preview", "--no-progress"}
# what each command took before the options were declared once, and still takes
EXPECTED = {
    "segment": ENGINE | {"--device", "--precision", "--batch-size"},
    "inpaint": ENGINE | {"--device", "--precision", "--batch-size", "--seed"},
    "compose": ENGINE | {"--seed"},
    "label": {"--seed", "--device", "--batch-size", "--workers", "--overwrite", "--fail-fast", "--no-progress"},  # device, batch size: --pick uncertain
    "train-segmenter": {"--device", "--seed", "--batch-size", "--no-progress"},
    "train-classifier": {"--device", "--seed", "--batch-size", "--no-progress"},
    "evaluate": {"--device", "--seed", "--batch-size", "--preview", "--no-progress"},
    "sample-data": {"--seed"},
}
SHARED_FLAGS = {d.option.default for d in cli_module._SHARED.values()}


def _flags(command) -> set[str]:
    return {opt for p in command.params for opt in p.opts if opt.startswith("--") and not p.hidden}


def test_the_shared_flags_are_the_shared_options_fields():
    assert set(cli_module._SHARED) == {f.name for f in dataclasses.fields(CommonOptions)}
    assert SHARED_FLAGS == {"--device", "--precision", "--seed", "--batch-size"} | ENGINE


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_command_offers_its_shared_options_and_no_other(name):
    assert _flags(COMMANDS[name]) & SHARED_FLAGS == EXPECTED[name]


def test_run_offers_every_shared_option_and_every_step_option_it_forwards():
    run = COMMANDS["run"]
    assert SHARED_FLAGS <= _flags(run)
    params = {p.name for p in run.params if not p.hidden} - {"data", "labels", "out", "config"}
    by_field = {d.param or f: f for f, d in cli_module._SHARED.items()}
    assert {by_field.get(p, p) for p in params} == set(pipeline.RUN_FLAGS)


def test_one_declaration_serves_every_command_that_takes_it():
    for flag in SHARED_FLAGS | {"--encode-format", "--output-layout", "--method", "--refine", "--backbone", "--quality"}:
        helps = {p.help for c in COMMANDS.values() for p in c.params if flag in p.opts}
        assert len(helps) == 1, (flag, helps)


# every CommonOptions field: a value other than its default, as `run` is given it and as run's options hold it
GIVEN = {
    "device": (["--device", "cpu"], "cpu"), "precision": (["--precision", "fp32"], "fp32"), "seed": (["--seed", "7"], 7),
    "workers": (["--workers", "3"], 3), "batch_size": (["--batch-size", "8"], 8), "shard": (["--shard", "1/2"], Shard(1, 2, "--shard")),
    "files_from": (["--files-from", "list.txt"], "list.txt"), "executor": (["--executor", "ray"], "ray"),
    "ray_address": (["--ray-address", "auto"], "auto"), "gpus_per_worker": (["--gpus-per-worker", "1"], 1.0),
    "overwrite": (["--overwrite"], True), "fail_fast": (["--fail-fast"], True), "preview": (["--preview", "p.png"], "p.png"),
    "progress": (["--no-progress"], False),
}


def _captured_run(monkeypatch, tmp_path, *args) -> pipeline.PipelineOptions:
    """The options `run` hands the pipeline (which does not run)."""
    seen = []

    def run_pipeline(data, labels, out, options):
        seen.append(options)
        return []

    monkeypatch.setattr(pipeline, "run_pipeline", run_pipeline)
    cli("run", tmp_path / "data", "--labels", tmp_path / "labels", "-o", tmp_path / "work", *args)
    return seen[0]


def test_run_accepts_every_shared_option_and_forwards_it(monkeypatch, tmp_path):
    assert set(GIVEN) == {f.name for f in dataclasses.fields(CommonOptions)}, "a new shared option: give it a value here"
    options = _captured_run(monkeypatch, tmp_path, *(arg for args, _ in GIVEN.values() for arg in args))
    for name, (_, value) in GIVEN.items():
        assert getattr(options.run, name) == value, name
    assert (options.train.device, options.segment.device, options.inpaint.device) == ("cpu", "cpu", "cpu")
    assert (options.segment.precision, options.inpaint.precision) == ("fp32", "fp32")
    assert (options.train.seed, options.inpaint.seed, options.compose.seed) == (7, 7, 7)
    assert options.train.batch_size == 16 and options.segment.preview is None  # NOT_FROM_RUN


def test_run_with_a_config_takes_only_what_the_command_line_gives(monkeypatch, tmp_path):
    first = _captured_run(monkeypatch, tmp_path, "--method", "telea", "--seed", "3")
    record = tmp_path / "autobackswap.json"
    record.write_text(json.dumps({"step": "run", "options": first.recorded()}))
    options = _captured_run(monkeypatch, tmp_path, "--config", record, "--executor", "ray", "--output-format", "webdataset")
    assert (options.inpaint.method, options.inpaint.seed, options.run.executor, options.compose.layout) == ("telea", 3, "ray", "webdataset")


def test_run_reads_only_the_images_files_from_lists(small_sample, tiny_checkpoint, tmp_path):
    work = tmp_path / "work"  # a run that got as far as compose: segmenter, masks, backgrounds
    work.mkdir()
    shutil.copy(tiny_checkpoint, work / "segmenter.safetensors")
    shutil.copytree(small_sample / "masks/train", work / "masks")
    shutil.copytree(small_sample / "backgrounds/train", work / "backgrounds")
    listed = ["cross/cross_0001.jpg", "disc/disc_0000.jpg", "triangle/triangle_0002.jpg"]
    (tmp_path / "list.txt").write_text("\n".join(listed) + "\n")
    cli("run", small_sample / "train", "--labels", small_sample / "labels", "-o", work, "--files-from", tmp_path / "list.txt",
        "--workers", "0", "--no-progress")
    for sub in ("masks", "backgrounds", "composites"):
        counts = run_record(work / sub)["counts"]
        assert counts["done"] + counts["skipped"] == 3, (sub, counts)
    assert sorted(row["foreground"] for row in csv.DictReader(open(work / "composites" / "manifest.csv"))) == listed


def test_run_flags_cover_every_step_option_field():
    sections = {name: type(getattr(pipeline.PipelineOptions(), name)) for name in (*pipeline.SECTIONS, "run")}
    for name in [f.name for f in dataclasses.fields(CommonOptions)] + [f.name for f in dataclasses.fields(DatasetLayout)]:
        assert pipeline.RUN_FLAGS.get(name), name
    assert ("run", "device") in pipeline.RUN_FLAGS["device"] and ("train", "seed") in pipeline.RUN_FLAGS["seed"]
    for flag, targets in pipeline.RUN_FLAGS.items():
        assert targets, flag
        for section, name in targets:
            assert name in {f.name for f in dataclasses.fields(sections[section])}, (flag, section)
        for section, cls in sections.items():  # every field of that name in every section, but the ones left alone
            if flag in {f.name for f in dataclasses.fields(cls)}:
                assert ((section, flag) in targets) != ((section, flag) in pipeline.NOT_FROM_RUN), (flag, section)


def _option_declarations() -> list[tuple[str, str]]:
    """(file, flag) for every flag in a typer.Option(...) call of the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Option":
                found += [(path.name, a.value) for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return found


def test_seed_and_every_shared_option_are_declared_once_in_the_package():
    declared = [flag for _, flag in _option_declarations()]
    assert declared.count("--seed") == 1
    repeated_by_run = {"--backbone", "--pretrained", "--epochs", "--refine", "--method", "--loose", "--tight", "--per-image", "--bg-from",
                       "--encode-format", "--quality", "--output-layout", "--shard-size"}
    for flag in SHARED_FLAGS | repeated_by_run - {"--epochs"}:
        assert declared.count(flag) == 1, flag
    assert "--format" not in declared and "--output-format" not in declared  # the old spellings are made from _RENAMED


def test_ranges_come_from_choices_ranges():
    where = {"train-classifier": "classifier"}
    checked = 0
    for name, command in COMMANDS.items():
        for p in command.params:
            low, high = getattr(p, "min", None), getattr(p, "max", None)
            if low is not None or high is not None:
                field = next((f for f, d in cli_module._SHARED.items() if (d.param or f) == p.name), p.name)
                assert (low, high) == value_range(field, where.get(name, "")), (name, p.name)
                checked += 1
    assert checked > 30
    for section, ranges in pipeline.CONFIG_RANGES.items():
        assert all(value_range(key, section) == value for key, value in ranges.items())
    assert pipeline.CONFIG_RANGES["compose"]["quality"] == (1, 100) and pipeline.CONFIG_RANGES["train"]["image_size"] == (8, 4096)


def test_choices_are_their_registries_and_the_help_lists_them():
    assert InpaintMethod.values() == METHODS == tuple(BACKENDS)
    assert Backbone.values() == tuple(BACKBONE_INFO) == tuple(BACKBONES)
    assert OutputFormat.values() == ("same", *encode_format_names()) == ("same", "png", "jpg", "jpeg", "webp")
    assert IMAGE_EXTENSIONS == {ext for fmt in IMAGE_FORMATS.values() for ext in fmt.extensions}
    assert pipeline.CONFIG_CHOICES["inpaint"]["method"] == METHODS and pipeline.CONFIG_CHOICES["train"]["backbone"] == tuple(BACKBONE_INFO)
    helps = {p.name: " ".join(p.help.split()) for p in COMMANDS["run"].params if p.help}
    assert all(f"{name} ({backend.help})" in helps["method"] for name, backend in BACKENDS.items())
    assert all(f"{name}: {info.description}" in helps["backbone"] for name, info in BACKBONE_INFO.items())
    assert all(name in helps["out_format"] for name in encode_format_names())


@pytest.mark.parametrize("name", [*encode_format_names(), *(ext.lstrip(".") for fmt in IMAGE_FORMATS.values() for ext in fmt.extensions)])
def test_a_file_written_in_each_output_format_is_found_by_the_scanner(tmp_path, name):
    image = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    path = tmp_path / "data" / "cls" / f"img.{name}"
    write_image_atomic(path, image)
    assert [str(item.rel) for item in scan_image_folder(tmp_path / "data").items] == [f"cls/img.{name}"]
    assert read_image(path).shape == image.shape


def test_the_old_spellings_still_work_and_print_a_note(small_sample, tmp_path):
    s = small_sample
    args = ("compose", s / "train", s / "masks/train", s / "backgrounds/train", "--workers", "0", "--no-progress")
    result = cli(*args, "-o", tmp_path / "png", "--format", "png")
    assert "note: --format is deprecated; use --encode-format" in result.stderr
    assert list((tmp_path / "png").rglob("*.png")) and not list((tmp_path / "png").rglob("*.jpg"))
    result = cli(*args, "-o", tmp_path / "tars", "--output-format", "webdataset", "--shard-size", "100")
    assert "note: --output-format is deprecated; use --output-layout" in result.stderr
    assert (tmp_path / "tars" / "index.json").exists()
    assert "deprecated" not in cli(*args, "-o", tmp_path / "new", "--encode-format", "png").stderr
