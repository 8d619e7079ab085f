"""cli.py: choices shown and checked by the command line, exit codes, the version."""

from __future__ import annotations

import pytest

from autobackswap_cli import __version__
from autobackswap_cli.choices import InpaintMethod
from autobackswap_cli.inpaint import METHODS
from conftest import cli


def test_inpaint_methods_are_the_registry():
    assert InpaintMethod.values() == METHODS


@pytest.mark.parametrize("args, shown", [
    (("inpaint", "--method", "magic"), "texture"),
    (("segment", "--precision", "fp8"), "bf16"),
    (("segment", "--refine", "sharp"), "grabcut"),
    (("compose", "--bg-from", "elsewhere"), "next-class"),
    (("compose", "--encode-format", "tiff"), "webp"),
])
def test_a_value_outside_the_choices_is_refused_before_any_work(small_sample, tmp_path, args, shown):
    step, *option = args
    positional = {"inpaint": [small_sample / "train", small_sample / "masks/train"], "segment": [small_sample / "train", "-m", tmp_path / "s.safetensors"],
                  "compose": [small_sample / "train", small_sample / "masks/train", small_sample / "backgrounds/train"]}[step]
    result = cli(step, *positional, "-o", tmp_path / "out", *option, expect=2)
    assert "Invalid value" in result.output and shown in result.output
    assert not (tmp_path / "out").exists()


def test_help_lists_the_choices_and_version_prints(tmp_path):
    text = " ".join(cli("inpaint", "--help").output.split())
    assert all(method in text for method in METHODS)
    assert cli("--version").output.strip() == f"autobackswap {__version__}"


def test_a_missing_input_is_one_line_and_exit_2(tmp_path):
    result = cli("compose", tmp_path / "nope", tmp_path / "m", tmp_path / "b", "-o", tmp_path / "out", expect=2)
    assert "error:" in result.output and "not found" in result.output and "Traceback" not in result.output
