"""classifier.py (`autobackswap train-classifier`): the small independent CNN that checks what a dataset teaches."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from conftest import cli


def test_train_classifier_is_seeded(small_sample, tmp_path):
    for name in ("a", "b"):
        cli("train-classifier", small_sample / "train", "-o", tmp_path / f"{name}.safetensors", "--epochs", 2, "--seed", 1, "--no-progress")
    a, b = (load_file(tmp_path / f"{n}.safetensors") for n in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    record = json.loads((tmp_path / "a.safetensors.json").read_text())
    assert record["classes"] == ["cross", "disc", "triangle"] and record["counts"] == {"images": 24, "failed": 0}
