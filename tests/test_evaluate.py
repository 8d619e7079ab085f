"""evaluate and train-classifier: the shortcut and its cure on sample_data, and evaluate's numbers on a model
whose answers we control."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from autobackswap_cli.classifier import META_FILE
from autobackswap_cli.images import read_image, scan_image_folder
from autobackswap_cli.segmenter.model import IMAGENET_MEAN, IMAGENET_STD
from conftest import SAMPLE_DATA, cli

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # foreign models come as TorchScript (--torchscript)
S = SAMPLE_DATA
GROUND_TRUTH_TEST = ("--masks", S / "masks/test", "--backgrounds", S / "backgrounds/test", "--mix-from", S / "backgrounds/train", "--groups",
                     S / "test_groups.csv")


class MeanColourModel(nn.Module):
    """Predicts the class whose training backgrounds have the nearest mean colour to the whole image's."""

    def __init__(self, prototypes: torch.Tensor):
        super().__init__()
        self.register_buffer("prototypes", prototypes)  # classes x 3, RGB in [0, 1]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        colour = (x * self.std + self.mean).mean(dim=(2, 3))
        return -torch.cdist(colour, self.prototypes)


def _background_colours(backgrounds: Path) -> torch.Tensor:
    """Mean colour of each class's backgrounds, classes in ImageFolder order."""
    scan = scan_image_folder(backgrounds)
    return torch.tensor(np.stack([
        np.mean([read_image(it.path).reshape(-1, 3).mean(0) for it in scan.items if it.cls == cls], axis=0) / 255 for cls in scan.classes
    ]), dtype=torch.float32)


def _save_script(module: nn.Module, path: Path, meta: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buffer, _extra_files={META_FILE: json.dumps(meta)} if meta else None)
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory) -> Path:
    """A TorchScript model that names no classes and looks only at the mean colour (the background, mostly)."""
    return _save_script(MeanColourModel(_background_colours(S / "backgrounds/train")), tmp_path_factory.mktemp("colour") / "colour.pt")


def _evaluate(test: Path, masks: Path, backgrounds: Path, *extra, expect: int = 0):
    return cli("evaluate", test, "--masks", masks, "--backgrounds", backgrounds, "--no-progress", *extra, expect=expect)


def test_a_background_colour_model_scores_high_on_mixed_same_and_chance_on_mixed_rand(colour_model, tmp_path):
    args = (S / "train", S / "masks/train", S / "backgrounds/train", "--torchscript", colour_model, "--image-size", 32)
    _evaluate(*args, "--json", tmp_path / "a.json", "--chart", tmp_path / "chart.png", "--preview", tmp_path / "preview.png")
    report = json.loads((tmp_path / "a.json").read_text())
    (model,) = report["models"]
    acc = model["accuracy"]
    assert min(acc["original"], acc["mixed-same"], acc["only-bg"]) >= 0.95
    assert 0.2 <= acc["mixed-rand"] <= 0.5 and acc["mixed-next"] <= 0.05
    assert model["bg_gap"] == round(acc["mixed-same"] - acc["mixed-rand"], 5) and model["bg_gap"] >= 0.5
    assert report["images"] == {"total": 180, "evaluated": 180, "failed": 0, "no_foreground": 0} and report["failures"] == []
    assert report["classes"] == ["cross", "disc", "triangle"] and list(acc) == report["variants"]
    assert model["name"] == "colour" and model["groups"] is None and model["worst_group"] is None
    assert read_image(tmp_path / "chart.png").shape == (440, 960, 3)
    assert read_image(tmp_path / "preview.png").shape[:2] == (4 * 164 + 4, 6 * 164 + 4)  # 4 images x 6 variants
    _evaluate(*args, "--json", tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()  # seeded: identical reruns


def test_per_group_and_worst_group_accuracy_from_the_groups_csv(colour_model, tmp_path):
    _evaluate(S / "test", S / "masks/test", S / "backgrounds/test", "--torchscript", colour_model, "--image-size", 32,
              "--groups", S / "test_groups.csv", "--json", tmp_path / "r.json")
    (model,) = json.loads((tmp_path / "r.json").read_text())["models"]
    groups = {(g["class"], g["background"]): g for g in model["groups"]}
    assert len(groups) == 9 and all(g["images"] == 10 for g in groups.values())
    for own in [("cross", "desert"), ("disc", "water"), ("triangle", "grass")]:  # the training pairs
        assert groups[own]["accuracy"] >= 0.9
    assert model["worst_group"]["accuracy"] <= 0.1
    assert model["accuracy"]["original"] == pytest.approx(np.mean([g["accuracy"] for g in groups.values()]), abs=1e-4)


def test_class_names_in_the_model_file_map_its_outputs_and_models_are_compared(colour_model, small_sample, tmp_path):
    base = torch.jit.load(str(colour_model))
    order = [2, 0, 1]  # outputs reordered; the file names them in that order
    permuted = MeanColourModel(base.prototypes[order])
    named = _save_script(permuted, tmp_path / "named" / "colour.pt", {"classes": [["cross", "disc", "triangle"][i] for i in order], "image_size": 32})
    result = _evaluate(small_sample / "test", small_sample / "masks/test", small_sample / "backgrounds/test",
                       "--torchscript", colour_model, "--torchscript", named, "--image-size", 32, "--json", tmp_path / "r.json")
    first, second = json.loads((tmp_path / "r.json").read_text())["models"]
    assert first["accuracy"] == second["accuracy"]
    assert (first["name"], second["name"]) == ("colour", "colour-2")
    assert "BG-Gap" in result.output


def test_torchvision_arch_with_a_local_state_dict(small_sample, tmp_path):
    import torchvision

    torch.manual_seed(0)
    weights = tmp_path / "mnv3.pth"
    net = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=3)
    with torch.no_grad():  # always says class 1 (disc): the state dict must really be loaded to score this
        net.classifier[-1].weight.zero_()
        net.classifier[-1].bias.copy_(torch.tensor([0.0, 10.0, 0.0]))
    torch.save(net.state_dict(), weights)
    _evaluate(small_sample / "test", small_sample / "masks/test", small_sample / "backgrounds/test",
              "--arch", "mobilenet_v3_small", "--weights", weights, "--image-size", 64, "--json", tmp_path / "r.json")
    (model,) = json.loads((tmp_path / "r.json").read_text())["models"]
    assert model["name"] == "mnv3" and model["image_size"] == 64
    assert model["accuracy"] == {v: 0.33333 for v in model["accuracy"]} and len(model["accuracy"]) == 6  # 6 of 18 are discs


def test_bad_inputs_are_named_one_missing_mask_fails_only_that_image_and_an_empty_one_is_left_out(colour_model, small_sample, tmp_path):
    test, backgrounds = small_sample / "test", small_sample / "backgrounds/test"
    missing = _evaluate(test, tmp_path / "nope", backgrounds, "--torchscript", colour_model, expect=2)
    assert "masks folder not found" in missing.output
    masks = tmp_path / "masks"
    shutil.copytree(small_sample / "masks/test", masks)
    (masks / "disc" / "disc_grass_000.png").unlink()
    result = _evaluate(test, masks, backgrounds, "--torchscript", colour_model, "--json", tmp_path / "r.json", expect=1)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["images"] == {"total": 18, "evaluated": 17, "failed": 1, "no_foreground": 0}
    assert report["failures"][0]["item"] == "disc/disc_grass_000.jpg" and "no mask" in report["failures"][0]["reason"]
    assert "disc/disc_grass_000.jpg" in result.output
    shutil.copy(small_sample / "masks/test/disc/disc_grass_000.png", masks / "disc/disc_grass_000.png")
    Image.new("L", Image.open(masks / "disc/disc_water_000.png").size, 0).save(masks / "disc/disc_water_000.png")
    result = _evaluate(test, masks, backgrounds, "--torchscript", colour_model, "--json", tmp_path / "r.json")  # no foreground: exit 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["images"] == {"total": 18, "evaluated": 17, "failed": 0, "no_foreground": 1} and report["failures"] == []
    assert report["no_foreground"] == ["disc/disc_water_000.jpg"] and "no foreground: 1 image of 18" in " ".join(result.output.split())
    state_dict = tmp_path / "state.pt"
    torch.save({"w": torch.zeros(1)}, state_dict)
    assert "holds weights only" in _evaluate(test, masks, backgrounds, "-m", state_dict, expect=2).output
    refused = " ".join(_evaluate(test, masks, backgrounds, "-m", colour_model, expect=2).output.split())
    assert "TorchScript model from another tool" in refused and f"--torchscript {colour_model}" in refused  # opt-in only
    assert "needs --arch" in _evaluate(test, masks, backgrounds, "--weights", state_dict, expect=2).output
    five_classes = _save_script(MeanColourModel(torch.rand(5, 3)), tmp_path / "five.pt")
    assert "scores 5 classes" in " ".join(_evaluate(test, masks, backgrounds, "--torchscript", five_classes, expect=2).output.split())
    assert "at least one model" in _evaluate(test, masks, backgrounds, expect=2).output
    (tmp_path / "groups.csv").write_text("file,colour\n")
    assert "needs the columns" in _evaluate(test, masks, backgrounds, "--torchscript", colour_model, "--groups", tmp_path / "groups.csv", expect=2).output


def test_composites_cure_the_background_shortcut_on_sample_data(tmp_path):
    """100% correlated training set: the originals teach the background, the (oracle) composites the shape."""
    cli("compose", S / "train", S / "masks/train", S / "backgrounds/train", "-o", tmp_path / "composites", "--per-image", 3, "--no-progress")
    cli("train-classifier", S / "train", "-o", tmp_path / "originals.safetensors", "--no-progress")
    trained = cli("train-classifier", tmp_path / "composites", "-o", tmp_path / "composites.safetensors", "--no-progress")
    assert "540 images of 3 classes" in " ".join(trained.output.split())  # manifest.csv and autobackswap.json ignored
    cli("evaluate", S / "test", *GROUND_TRUTH_TEST, "-m", tmp_path / "originals.safetensors", "-m", tmp_path / "composites.safetensors",
        "--json", tmp_path / "r.json", "--no-progress")
    originals, composites = json.loads((tmp_path / "r.json").read_text())["models"]
    assert originals["worst_group"]["accuracy"] <= 0.5 <= 0.8 <= composites["worst_group"]["accuracy"]
    assert originals["bg_gap"] >= 0.4 and composites["bg_gap"] <= 0.15
