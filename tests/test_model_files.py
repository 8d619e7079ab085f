"""model_files.py: segmenters and classifiers are safetensors + a JSON description, loaded without pickle; old
files still load (with a note) and convert; every bad model file is one clear error naming the file."""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest
import torch
from safetensors import safe_open

from autobackswap_cli.classifier import META_FILE, build_small_cnn, load_classifier
from autobackswap_cli.engine import StepError
from autobackswap_cli.images import read_mask
from autobackswap_cli.formats.model_files import SAFETENSORS, file_kind
from autobackswap_cli.segmenter.model import CHECKPOINT_FORMAT, load_segmenter
from conftest import cli

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # old-style files are made with TorchScript


def _old_style_segmenter(new_file, path):
    """The pre-0.2 format of the same segmenter: one torch.save dict."""
    model, meta = load_segmenter(new_file)
    torch.save({**meta, "format_version": 1, "state_dict": model.state_dict()}, path)
    return path


def _old_style_classifier(path, classes=("cross", "disc", "triangle")):
    """A pre-0.2 classifier: TorchScript with the description as an extra file."""
    torch.manual_seed(0)
    module = build_small_cnn(len(classes), 8).eval()
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buffer, _extra_files={META_FILE: json.dumps({"classes": list(classes), "image_size": 32})})
    path.write_bytes(buffer.getvalue())
    return path, module


def test_a_segmenter_file_is_safetensors_with_a_readable_description(tiny_checkpoint):
    assert file_kind(tiny_checkpoint) == SAFETENSORS
    with safe_open(tiny_checkpoint, "pt") as f:  # any safetensors reader sees what the file is
        description = json.loads(f.metadata()["autobackswap"])
    assert description["format"] == CHECKPOINT_FORMAT and description["backbone"] == "small-cnn"
    assert description["grid"] == 8 and description["image_size"] == 64 and len(description["mean"]) == 3


def test_model_files_load_without_pickle(tiny_checkpoint, small_sample, tmp_path, monkeypatch):
    cli("train-classifier", small_sample / "train", "-o", tmp_path / "c.safetensors", "--epochs", 1, "--no-progress")

    def refuse(*args, **kwargs):
        raise AssertionError("pickle was used")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(torch.jit, "load", refuse)
    model, meta = load_segmenter(tiny_checkpoint)
    assert meta["grid"] == 8 and "state_dict" not in meta
    classifier = load_classifier(tmp_path / "c.safetensors", device="cpu")
    assert classifier.classes == ["cross", "disc", "triangle"] and classifier.image_size == 64


def test_an_old_segmenter_still_loads_with_a_note_and_converts_to_the_same_masks(tiny_checkpoint, small_sample, tmp_path):
    old = _old_style_segmenter(tiny_checkpoint, tmp_path / "old.pt")
    used_old = cli("segment", small_sample / "test", "-m", old, "-o", tmp_path / "masks_old", "--no-progress")
    assert "old-style model file" in used_old.output and "convert-model" in used_old.output
    converted = cli("convert-model", old)
    assert file_kind(tmp_path / "old.safetensors") == SAFETENSORS and "segmenter" in converted.output
    used_new = cli("segment", small_sample / "test", "-m", tmp_path / "old.safetensors", "-o", tmp_path / "masks_new", "--no-progress")
    assert "old-style" not in used_new.output
    old_masks = sorted((tmp_path / "masks_old").rglob("*.png"))
    assert len(old_masks) == 18
    for p in old_masks:
        assert np.array_equal(read_mask(p), read_mask(tmp_path / "masks_new" / p.relative_to(tmp_path / "masks_old")))


def test_an_old_torchscript_classifier_loads_with_a_note_and_converts(tmp_path):
    old, module = _old_style_classifier(tmp_path / "old.pt")
    x = torch.rand(2, 3, 32, 32)
    loaded = load_classifier(old, device="cpu")
    assert loaded.classes == ["cross", "disc", "triangle"] and loaded.image_size == 32
    cli("convert-model", old, "-o", tmp_path / "new.safetensors")
    new = load_classifier(tmp_path / "new.safetensors", device="cpu")
    assert new.classes == loaded.classes and new.image_size == 32
    with torch.inference_mode():
        assert torch.allclose(new.module(x), module(x), atol=1e-6)


def _bad_files(tmp_path, good):
    data = good.read_bytes()
    (tmp_path / "empty.safetensors").write_bytes(b"")
    (tmp_path / "noise.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.safetensors").write_text("not a model\n")
    torch.save({"w": torch.zeros(2)}, tmp_path / "state_dict.pt")
    return ["empty.safetensors", "noise.safetensors", "truncated.safetensors", "text.safetensors", "state_dict.pt", "missing.safetensors"]


def test_every_bad_segmenter_file_is_one_clear_error_naming_it(tiny_checkpoint, small_sample, tmp_path):
    for name in _bad_files(tmp_path, tiny_checkpoint) + ["classifier.safetensors"]:
        if name == "classifier.safetensors":  # the wrong kind of model
            cli("train-classifier", small_sample / "train", "-o", tmp_path / name, "--epochs", 1, "--no-progress")
        result = cli("segment", small_sample / "test", "-m", tmp_path / name, "-o", tmp_path / "m", "--no-progress", expect=2)
        output = " ".join(result.output.split())
        assert str(tmp_path / name) in output and "Traceback" not in output, output
        assert not (tmp_path / "m").exists() or not list((tmp_path / "m").rglob("*.png"))


def test_every_bad_classifier_file_is_one_clear_error_naming_it(tiny_checkpoint, tmp_path):
    for name in _bad_files(tmp_path, tiny_checkpoint):
        with pytest.raises(StepError, match=str(tmp_path / name)):
            load_classifier(tmp_path / name, device="cpu")
    with pytest.raises(StepError, match="not a classifier made by"):
        load_classifier(tiny_checkpoint, device="cpu")  # a segmenter


def test_weights_files_for_torchvision_models_load_from_safetensors_or_torch_save(tmp_path):
    from safetensors.torch import save_file

    import torchvision

    model = torchvision.models.get_model("resnet18", weights=None, num_classes=3)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "w.safetensors")
    torch.save(model.state_dict(), tmp_path / "w.pth")
    x = torch.rand(1, 3, 64, 64)
    outputs = [load_classifier(arch="resnet18", weights=tmp_path / f, num_classes=3, device="cpu").module(x) for f in ("w.safetensors", "w.pth")]
    assert torch.equal(outputs[0], outputs[1])


def _with_description(source, target, change):
    """A copy of model file ``source`` whose description is ``change(description)`` (a JSON-able value) or, when
    ``change`` returns a string, that raw text; the tensors are kept."""
    from safetensors.torch import load_file, save

    with safe_open(source, "pt") as f:
        description = json.loads(f.metadata()["autobackswap"])
    changed = change(description)
    text = changed if isinstance(changed, str) else json.dumps(changed)
    target.write_bytes(save(load_file(str(source)), metadata={"autobackswap": text}))
    return target


HOSTILE_SEGMENTER_DESCRIPTIONS = {
    "a list": (lambda d: [d], "description must be a JSON object"),
    "nested 200,000 deep": (lambda d: "[" * 200_000 + "]" * 200_000, "nested too deeply"),
    "grid text": (lambda d: {**d, "grid": "x"}, "'grid' must be an integer"),
    "grid 100000": (lambda d: {**d, "grid": 100_000}, "'grid' must be from 1 to 256"),
    "image_size 200000": (lambda d: {**d, "image_size": 200_000}, "'image_size' must be from 8 to 4096"),
    "mean of one": (lambda d: {**d, "mean": [1]}, "'mean' must be a list of 3 numbers"),
    "std zero": (lambda d: {**d, "std": [0, 1, 1]}, "'std' must be a list of 3 positive numbers"),
    "thresholds text": (lambda d: {**d, "thresholds": "nope"}, "'thresholds' must be an object"),
    "thresholds out of range": (lambda d: {**d, "thresholds": {"none": {"loose": -3, "tight": 7}}}, "'thresholds.none.loose' must be a number in (0, 1]"),
    "loose above tight": (lambda d: {**d, "thresholds": {"none": {"loose": 0.9, "tight": 0.2}}}, "loose (0.9) must not exceed tight (0.2)"),
    "unknown backbone": (lambda d: {**d, "backbone": "vit-huge"}, "'backbone' names no backbone"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_SEGMENTER_DESCRIPTIONS))
def test_a_segmenter_description_is_checked_field_by_field_before_any_image(case, tiny_checkpoint, small_sample, tmp_path):
    change, message = HOSTILE_SEGMENTER_DESCRIPTIONS[case]
    bad = _with_description(tiny_checkpoint, tmp_path / "bad.safetensors", change)
    result = cli("segment", small_sample / "test", "-m", bad, "-o", tmp_path / "m", "--no-progress", expect=2)
    output = " ".join(result.output.split())
    assert message in output and str(bad) in output and "Traceback" not in output, output
    assert not list((tmp_path / "m").rglob("*.png")) if (tmp_path / "m").exists() else True


def test_weights_that_do_not_fit_the_description_are_refused_before_the_body_is_read(tiny_checkpoint, tmp_path, monkeypatch):
    import autobackswap_cli.formats.model_files as model_files

    bad = _with_description(tiny_checkpoint, tmp_path / "bad.safetensors", lambda d: {**d, "backbone": "resnet18"})
    monkeypatch.setattr(model_files, "read_tensors", lambda *a: pytest.fail("the body was read"))
    with pytest.raises(StepError, match="its weights do not fit its description"):
        load_segmenter(bad)


HOSTILE_CLASSIFIER_DESCRIPTIONS = {
    "width text": (lambda d: {**d, "width": "abc"}, "'width' must be an integer"),
    "no classes": (lambda d: {k: v for k, v in d.items() if k != "classes"}, "'classes' must be a list of class names"),
    "image_size negative": (lambda d: {**d, "image_size": -3}, "'image_size' must be from 8 to 4096"),
    "a class twice": (lambda d: {**d, "classes": ["a"] * len(d["classes"])}, "names a class twice"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_CLASSIFIER_DESCRIPTIONS))
def test_a_classifier_description_is_checked_field_by_field(case, small_sample, tmp_path):
    good = tmp_path / "c.safetensors"
    cli("train-classifier", small_sample / "train", "-o", good, "--epochs", 1, "--no-progress")
    change, message = HOSTILE_CLASSIFIER_DESCRIPTIONS[case]
    bad = _with_description(good, tmp_path / "bad.safetensors", change)
    with pytest.raises(StepError) as error:
        load_classifier(bad, device="cpu")
    assert message in str(error.value) and str(bad) in str(error.value), error.value
