"""--executor ray: segment, inpaint and compose as Ray Data pipelines on a local Ray instance (2 CPUs) give the
local executor's bytes, skip finished items, report failures the same way, and survive a lost worker."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from autobackswap_cli.compose import ComposeOptions, compose_step  # noqa: E402
from autobackswap_cli.engine import RunOptions, prepare_items, run_step  # noqa: E402
from autobackswap_cli.inpaint import InpaintOptions  # noqa: E402
from autobackswap_cli.segmenter.predict import SegmentOptions, SegmentStep  # noqa: E402
from conftest import cli, run_record  # noqa: E402
from test_engine import InvertStep, _folder  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray instance with 2 CPUs for the module; this module's step classes travel by value."""
    from ray import cloudpickle

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    for name in ("test_ray", "test_engine"):
        cloudpickle.register_pickle_by_value(sys.modules[name])
    yield
    ray.shutdown()


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")  # Ray's own, from its defaults

RAY = RunOptions(workers=0, batch_size=5, progress=False, executor="ray")
LOCAL = RunOptions(workers=2, batch_size=5, progress=False)


def _same_files(a: Path, b: Path, pattern: str) -> int:
    left, right = sorted(a.rglob(pattern)), sorted(b.rglob(pattern))
    assert [p.relative_to(a) for p in left] == [p.relative_to(b) for p in right] and left
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(left, right))
    return len(left)


def test_segment_on_ray_gives_the_local_bytes_and_resumes(small_sample, tiny_checkpoint, tmp_path):
    items, _ = prepare_items(small_sample / "train")
    for name, options in (("local", LOCAL), ("ray", RAY)):
        report = run_step(SegmentStep(tiny_checkpoint, tmp_path / name, SegmentOptions(device="cpu")), items, options)
        assert report.ok and report.done == len(items)
    assert _same_files(tmp_path / "local", tmp_path / "ray", "*.png") == 24
    assert run_record(tmp_path / "ray")["options"]["executor"] == "ray"
    (tmp_path / "ray" / "disc" / next((tmp_path / "ray" / "disc").iterdir()).name).unlink()
    again = run_step(SegmentStep(tiny_checkpoint, tmp_path / "ray", SegmentOptions(device="cpu")), items, RAY)
    assert again.done == 1 and again.skipped == 23  # finished items never reach the Ray job


def test_inpaint_and_compose_on_ray_give_the_local_bytes(small_sample, tmp_path):
    from autobackswap_cli.inpaint.step import FillRegion, InpaintStep

    items, _ = prepare_items(small_sample / "train")
    masks, backgrounds = small_sample / "masks/train", small_sample / "backgrounds/train"
    for name, options in (("local", LOCAL), ("ray", RAY)):
        run_step(InpaintStep(masks, tmp_path / f"bg-{name}", InpaintOptions(), FillRegion()), items, options)
        step = compose_step(masks, backgrounds, tmp_path / f"c-{name}", ComposeOptions(per_image=2))
        assert run_step(step, items, options).done == 24
    assert _same_files(tmp_path / "bg-local", tmp_path / "bg-ray", "*.jpg") == 24
    assert _same_files(tmp_path / "c-local", tmp_path / "c-ray", "*.jpg") == 48
    assert (tmp_path / "c-local/manifest.csv").read_bytes() == (tmp_path / "c-ray/manifest.csv").read_bytes()


class _DiesOnce(InvertStep):
    """Its worker process dies on one item, once (as a node lost mid-task); the marker file remembers."""

    def __init__(self, out_dir: Path, batched: bool, marker: Path):
        super().__init__(out_dir, batched)
        self.marker = marker

    def process(self, item):
        if item.rel.name == "004.png" and not self.marker.exists():
            self.marker.write_text("died")
            os._exit(1)
        return super().process(item)


def test_a_task_whose_worker_dies_is_retried_and_the_run_completes(tmp_path):
    items, _ = prepare_items(_folder(tmp_path / "data"))
    report = run_step(_DiesOnce(tmp_path / "out", False, tmp_path / "marker"), items, RAY)
    assert (tmp_path / "marker").exists()  # it did die
    assert report.ok and report.done == 10 and len(list((tmp_path / "out").rglob("*.png"))) == 10
    assert run_record(tmp_path / "out")["status"] == "completed"


def test_failures_come_back_into_the_record_and_the_batched_path_works(tmp_path):
    items, _ = prepare_items(_folder(tmp_path / "data", bad=2))
    report = run_step(InvertStep(tmp_path / "out", batched=True), items, RAY)
    assert report.done == 10 and report.failed == 2
    record = run_record(tmp_path / "out")
    assert record["status"] == "completed with failures" and {f["item"] for f in record["failures"]} == {"a/bad0.jpg", "a/bad1.jpg"}


def test_the_cli_runs_a_step_on_ray(small_sample, tmp_path):
    cli("compose", small_sample / "train", small_sample / "masks/train", small_sample / "backgrounds/train", "-o", tmp_path / "c",
        "--executor", "ray", "--no-progress")
    assert run_record(tmp_path / "c")["counts"]["done"] == 24


@pytest.mark.slow
def test_a_sigterm_ends_a_ray_run_like_a_local_one_with_its_record(tiny_checkpoint, tmp_path):
    """Ray's init takes SIGTERM for itself (exit 15, a crash dump, no record): the run must give 143 and say
    "interrupted", counting the masks on disk."""
    import signal

    from autobackswap_cli.sample_data import SampleSpec, generate
    from conftest import cli_background, wait_until

    generate(tmp_path / "set", SampleSpec(seed=6, size=64, train_per_class=300, test_per_group=1, labelled=0, grid=8))
    out = tmp_path / "masks"
    proc = cli_background("segment", tmp_path / "set/train", "-m", tiny_checkpoint, "-o", out, "--executor", "ray", "--refine", "grabcut")
    try:
        wait_until(proc, lambda: any(out.rglob("*.png")), timeout=180)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    record = run_record(out)
    assert proc.returncode == 143 and "interrupted (SIGTERM)" in err, (proc.returncode, err[-2000:])
    assert record["status"] == "interrupted" and record["counts"]["done"] == len(list(out.rglob("*.png"))) < 900
