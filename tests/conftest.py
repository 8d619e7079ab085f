"""Shared fixtures: small datasets made by the package's own generator, tiny models built locally."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autobackswap_cli.cli import app
from autobackswap_cli.sample_data import SampleSpec, generate

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO / "sample_data"


@pytest.fixture(scope="session")
def small_sample(tmp_path_factory) -> Path:
    """A tiny sample set: 64 px images, 8 per class for training, 2 per test group, 12 labelled."""
    out = tmp_path_factory.mktemp("small_sample")
    generate(out, SampleSpec(seed=3, size=64, train_per_class=8, test_per_group=2, labelled=12, grid=8))
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-weight small-cnn segmenter for 8x8 grids at 64 px, saved the way train-segmenter saves."""
    import torch

    from autobackswap_cli.segmenter.model import build_segmenter, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, build_segmenter("small-cnn", 8), image_size=64, options={}, metrics={})
    return path


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> Path:
    """A random-weight diffusers inpainting pipeline folder (see tiny_models.py)."""
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    from tiny_models import build_tiny_inpaint_pipeline

    return build_tiny_inpaint_pipeline(tmp_path_factory.mktemp("tiny_pipeline"))


def cli(*args: str, expect: int | None = 0):
    """Run the CLI in-process; assert the exit code when ``expect`` is given."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    if expect is not None:
        assert result.exit_code == expect, f"exit {result.exit_code}, expected {expect}\n{result.output}\n{result.exception!r}"
    return result


def cli_subprocess(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m autobackswap_cli`` in a child process (for signals and real exit codes)."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "autobackswap_cli", *map(str, args)], capture_output=True, text=True, env=full_env, **kwargs)


def interruptible() -> None:
    """A child's ``preexec_fn``: Ctrl-C (SIGINT) back to its default, so the child raises KeyboardInterrupt on it even
    when the tests run as a background job of a non-interactive shell (``make test &``), whose children inherit
    SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli_background(*args: str, env: dict | None = None) -> subprocess.Popen:
    """Start ``python -m autobackswap_cli`` in its own process group (as a job scheduler does), output piped as text."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "autobackswap_cli", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=full_env, start_new_session=True, preexec_fn=interruptible)


def wait_until(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    """Wait until ``ready()``; fail the test if ``proc`` ends first or it takes longer than ``timeout`` s."""
    t0 = time.time()
    while not ready():
        assert proc.poll() is None, f"ended early with {proc.returncode}: {proc.stderr.read()}"
        assert time.time() - t0 < timeout, "the run did not get going"
        time.sleep(0.02)


def run_record(folder: Path) -> dict:
    return json.loads((Path(folder) / "autobackswap.json").read_text())
