"""engine/: sharding, skip-finished, workers, batching, failures, run record."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autobackswap_cli.engine import FailFast, NoForeground, RunOptions, Shard, Step, StepError, parse_shard, prepare_items, run_step, shard_from_env
from autobackswap_cli.images import TEMP_PREFIX, mirror_path, read_image, write_image_atomic


class InvertStep(Step):
    """Writes the negative of each image; ``compute`` batches, to exercise the batched path."""

    name = "invert"

    def __init__(self, out_dir: Path, batched: bool):
        self.out_dir = Path(out_dir)
        self.batch_sizes: list[int] = []
        if batched:
            self.compute = self._compute

    def outputs(self, item):
        return [mirror_path(self.out_dir, item.rel, ".png")]

    def prepare(self, item):
        return read_image(item.path)

    def process(self, item):
        return 255 - read_image(item.path)

    def _compute(self, batch):
        self.batch_sizes.append(len(batch))
        return [255 - img for img in batch]

    def write(self, item, result):
        write_image_atomic(mirror_path(self.out_dir, item.rel, ".png"), result)
        return int(result.mean())


class CutOutStep(InvertStep):
    """An InvertStep with nothing to do for an all-black image (``NoForeground``): raised in ``process``, or for
    the whole batch in ``compute`` (the engine then isolates the item)."""

    name = "cut-out"

    def process(self, item):
        return self._compute([read_image(item.path)])[0]

    def _compute(self, batch):
        if any(not image.any() for image in batch):
            raise NoForeground("no foreground in the mask")
        return [255 - image for image in batch]


def _folder(root: Path, n: int = 10, bad: int = 0) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        cls = "ab"[i % 2]
        p = root / cls / f"{i:03d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(p)
    for i in range(bad):
        (root / "a" / f"bad{i}.jpg").write_bytes(b"")
    return root


def test_parse_shard_and_env():
    assert parse_shard("1/4") == Shard(1, 4, "--shard")
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(StepError):
            parse_shard(bad)
    assert shard_from_env({"RANK": "2", "WORLD_SIZE": "3"}) == Shard(2, 3, "torchrun")
    assert shard_from_env({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "3"}) == Shard(2, 4, "slurm")
    assert shard_from_env({}) == Shard()


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("batched", [False, True])
def test_outputs_do_not_depend_on_workers_or_batching(tmp_path, workers, batched):
    data = _folder(tmp_path / "data")
    items, _ = prepare_items(data, tmp_path / "out")
    step = InvertStep(tmp_path / "out", batched)
    report = run_step(step, items, RunOptions(workers=workers, batch_size=4, progress=False))
    assert (report.done, report.failed) == (10, 0)
    for it in items:
        assert np.array_equal(read_image(mirror_path(tmp_path / "out", it.rel, ".png")), 255 - read_image(it.path))
    if batched and workers == 0:
        assert step.batch_sizes == [4, 4, 2]


@pytest.mark.parametrize("batched, workers", [(False, 2), (True, 0)])
def test_no_foreground_is_counted_and_listed_apart_from_failures(tmp_path, batched, workers):
    data = _folder(tmp_path / "data")
    for name in ("a/000.png", "b/001.png"):
        Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(data / name)
    items, _ = prepare_items(data)
    out = tmp_path / "out"
    options = RunOptions(workers=workers, batch_size=4, fail_fast=True, progress=False)  # --fail-fast goes on
    report = run_step(CutOutStep(out, batched), items, options)
    assert (report.done, report.failed, sorted(report.no_foreground), report.ok) == (8, 0, ["a/000.png", "b/001.png"], True)
    record = json.loads((out / "autobackswap.json").read_text())
    assert record["status"] == "completed" and record["failures"] == [] and record["no_foreground"] == ["a/000.png", "b/001.png"]
    assert record["counts"] == {"total": 10, "done": 8, "skipped": 0, "failed": 0, "no_foreground": 2, "low_confidence": 0}
    assert not mirror_path(out, items[0].rel, ".png").exists()
    report = run_step(CutOutStep(out, batched), items, options)  # checked again on a rerun: no output marks them finished
    assert (report.done, report.skipped, len(report.no_foreground)) == (0, 8, 2)


def test_shards_partition_the_items_and_write_their_own_records(tmp_path):
    data = _folder(tmp_path / "data", n=11)
    items, _ = prepare_items(data)
    seen = []
    for k in range(3):
        report = run_step(InvertStep(tmp_path / "out", False), items, RunOptions(workers=0, shard=Shard(k, 3), progress=False))
        seen.append(report.done)
        assert (tmp_path / "out" / f"autobackswap.shard-{k}-of-3.json").exists()
    assert seen == [4, 4, 3]
    assert len(list((tmp_path / "out").rglob("*.png"))) == 11


def test_rerun_skips_finished_and_overwrite_redoes(tmp_path):
    data = _folder(tmp_path / "data")
    items, _ = prepare_items(data)
    out = tmp_path / "out"
    run_step(InvertStep(out, True), items[:6], RunOptions(workers=0, progress=False))
    report = run_step(InvertStep(out, True), items, RunOptions(workers=0, progress=False))
    assert (report.done, report.skipped) == (4, 6)
    record = json.loads((out / "autobackswap.json").read_text())
    assert record["counts"] == {"total": 10, "done": 4, "skipped": 6, "failed": 0, "no_foreground": 0, "low_confidence": 0}
    assert record["step"] == "invert" and record["status"] == "completed" and record["wall_time_s"] >= 0
    report = run_step(InvertStep(out, True), items, RunOptions(workers=0, overwrite=True, progress=False))
    assert (report.done, report.skipped) == (10, 0)


@pytest.mark.parametrize("workers", [0, 2])
def test_failures_are_collected_with_reasons(tmp_path, workers):
    data = _folder(tmp_path / "data", n=6, bad=2)
    items, _ = prepare_items(data)
    report = run_step(InvertStep(tmp_path / "out", True), items, RunOptions(workers=workers, batch_size=3, progress=False))
    assert report.done == 6 and report.failed == 2 and not report.ok
    assert sorted(f["item"] for f in report.failures) == ["a/bad0.jpg", "a/bad1.jpg"]
    assert all("empty file" in f["reason"] for f in report.failures)
    record = json.loads((tmp_path / "out" / "autobackswap.json").read_text())
    assert record["status"] == "completed with failures" and len(record["failures"]) == 2


def test_fail_fast_stops_at_first_failure(tmp_path):
    data = _folder(tmp_path / "data", n=6, bad=1)
    items, _ = prepare_items(data)
    with pytest.raises(FailFast, match="bad0.jpg"):
        run_step(InvertStep(tmp_path / "out", False), items, RunOptions(workers=0, fail_fast=True, progress=False))


def test_a_failing_batch_is_retried_item_by_item(tmp_path):
    data = _folder(tmp_path / "data", n=4)
    items, _ = prepare_items(data)

    class Picky(InvertStep):
        def _compute(self, batch):
            if any(img[0, 0, 0] == self.poison for img in batch):
                raise ValueError("poisoned pixel")
            return super()._compute(batch)

    step = Picky(tmp_path / "out", True)
    step.poison = read_image(items[1].path)[0, 0, 0]
    report = run_step(step, items, RunOptions(workers=0, batch_size=4, progress=False))
    assert report.done == 3 and [f["item"] for f in report.failures] == [str(items[1].rel)]
    assert "poisoned pixel" in report.failures[0]["reason"]


def test_output_inside_input_is_left_out_and_equal_is_refused(tmp_path):
    data = _folder(tmp_path / "data", n=4)
    (data / "out").mkdir()
    (data / "out" / "x.png").write_bytes(b"not scanned")
    items, warnings = prepare_items(data, data / "out")
    assert len(items) == 4 and any("inside the input folder" in w for w in warnings)
    with pytest.raises(StepError, match="input folder itself"):
        prepare_items(data, data)


def test_a_script_without_main_guard_runs_once_with_workers(tmp_path, small_sample, tiny_checkpoint):
    """Workers must not re-run the caller's script (it would run the step again in every worker)."""
    script = tmp_path / "no_guard.py"
    script.write_text(
        "import sys\n"
        "from autobackswap_cli.cli import main\n"
        "print('SCRIPT BODY RAN', flush=True)\n"
        f"sys.argv = ['autobackswap', 'segment', {str(small_sample / 'test')!r}, '-m', {str(tiny_checkpoint)!r},\n"
        f"            '-o', {str(tmp_path / 'masks')!r}, '--workers', '2', '--no-progress']\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("SCRIPT BODY RAN") == 1
    assert len(list((tmp_path / "masks").rglob("*.png"))) == 18


class _KillsItsWorker(InvertStep):
    """Its worker process dies on one image, as when the kernel kills it for memory."""

    def process(self, item):
        if item.rel.name == "004.png":
            os._exit(9)
        return super().process(item)


def test_a_dead_worker_is_a_clear_error_and_a_rerun_finishes(tmp_path):
    items, _ = prepare_items(_folder(tmp_path / "data"))
    with pytest.raises(StepError, match="worker process died"):
        run_step(_KillsItsWorker(tmp_path / "out", batched=False), items, RunOptions(workers=2, progress=False))
    assert json.loads((tmp_path / "out" / "autobackswap.json").read_text())["step"] == "invert"
    report = run_step(InvertStep(tmp_path / "out", batched=False), items, RunOptions(workers=2, progress=False))
    assert report.ok and report.done + report.skipped == 10 and len(list((tmp_path / "out").rglob("*.png"))) == 10


def test_an_output_folder_overlapping_an_input_folder_is_refused(tmp_path):
    data = _folder(tmp_path / "data")
    masks = tmp_path / "masks"
    masks.mkdir()
    (tmp_path / "link").symlink_to(masks)
    for out, relation in ((masks, "is"), (tmp_path / "link", "is"), (masks / "sub", "lies inside"), (tmp_path, "holds")):
        with pytest.raises(StepError, match=f"{relation} the input folder"):
            prepare_items(data, out, other_inputs=[masks])
    with pytest.raises(StepError, match="is the input folder itself"):
        prepare_items(data, data / ".", other_inputs=[masks])
    items, warnings = prepare_items(data, data / "out", other_inputs=[masks])  # inside DATA: left out, said so
    assert len(items) == 10 and "left out of the input" in warnings[0]


def test_a_second_run_into_a_folder_that_is_being_written_is_refused(tmp_path):
    from autobackswap_cli.engine.lock import output_lock

    items, _ = prepare_items(_folder(tmp_path / "data"))
    (tmp_path / "out").mkdir()
    with output_lock(tmp_path / "out"):  # as if another run held it
        with pytest.raises(StepError, match="another autobackswap run is writing into"):
            run_step(InvertStep(tmp_path / "out", False), items, RunOptions(workers=0, progress=False))
        assert not list((tmp_path / "out").rglob("*.png"))
        with output_lock(tmp_path / "out", Shard(1, 2)):  # another shard of the same folder is not blocked
            pass
    report = run_step(InvertStep(tmp_path / "out", False), items, RunOptions(workers=0, progress=False))
    assert report.done == 10  # the lock goes with its holder


class _DiskFills(InvertStep):
    """The file system refuses the third write, as a full disk does."""

    def write(self, item, result):
        if item.rel.name == "002.png":
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(item, result)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_full_disk_stops_the_run_at_once_with_one_message_and_a_record(tmp_path, workers):
    items, _ = prepare_items(_folder(tmp_path / "data"))
    with pytest.raises(StepError, match="No space left on device.*the run stopped") as stopped:
        run_step(_DiskFills(tmp_path / "out", False), items, RunOptions(workers=workers, progress=False))
    assert stopped.value.report.failed == 1 and stopped.value.report.done < 10  # what the CLI's summary shows
    record = json.loads((tmp_path / "out" / "autobackswap.json").read_text())
    assert record["status"] == "failed" and "No space left" in record["error"]
    assert record["counts"]["failed"] == 1 and record["counts"]["done"] < 10
    assert not list((tmp_path / "out").rglob(TEMP_PREFIX + "*"))


def test_a_file_given_as_the_output_folder_is_a_clear_error(tmp_path):
    items, _ = prepare_items(_folder(tmp_path / "data"))
    (tmp_path / "out").write_text("a file")
    with pytest.raises(StepError, match="is a file, not a folder"):
        run_step(InvertStep(tmp_path / "out", False), items, RunOptions(workers=0, progress=False))


# ----------------------------------------------------------------------------------------- devices


@pytest.fixture
def four_gpus(monkeypatch):
    """A machine that says it has 4 CUDA devices (the assignment logic only; nothing runs on them)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    for name in ("LOCAL_RANK", "SLURM_LOCALID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_plain_cuda_uses_every_gpu_and_gpus_or_a_list_narrows_it(four_gpus):
    from autobackswap_cli.engine import resolve_devices

    assert [str(d) for d in resolve_devices("cuda")] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert [str(d) for d in resolve_devices("auto")] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert [str(d) for d in resolve_devices("cuda", gpus=2)] == ["cuda:0", "cuda:1"]
    assert [str(d) for d in resolve_devices("cuda:1,3")] == ["cuda:1", "cuda:3"]
    assert [str(d) for d in resolve_devices("cuda:2")] == ["cuda:2"]
    assert [str(d) for d in resolve_devices("cpu")] == ["cpu"]
    for bad, message in (("cuda:7", "only 4 CUDA"), ("cuda:1,1", "listed twice"), ("cuda:0,9", "only 4 CUDA")):
        with pytest.raises(StepError, match=message):
            resolve_devices(bad)
    with pytest.raises(StepError, match="--gpus 5: only 4"):
        resolve_devices("cuda", gpus=5)


@pytest.mark.parametrize("env, gpu", [
    ({"LOCAL_RANK": "2"}, "cuda:2"),  # torchrun --nproc-per-node 4
    ({"LOCAL_RANK": "5"}, "cuda:1"),  # more ranks than GPUs: shared round-robin
    ({"SLURM_LOCALID": "3", "SLURM_NTASKS": "8"}, "cuda:3"),  # srun --ntasks-per-node 4
    ({"SLURM_LOCALID": "1", "SLURM_STEP_NUM_TASKS": "2"}, "cuda:1"),
])
def test_a_launched_rank_takes_the_gpu_of_its_local_rank(four_gpus, env, gpu):
    from autobackswap_cli.engine import resolve_device, resolve_devices

    for name, value in env.items():
        four_gpus.setenv(name, value)
    assert str(resolve_device("cuda")) == gpu and str(resolve_device("auto")) == gpu
    assert [str(d) for d in resolve_devices("cuda")] == [gpu]  # one replica: the other ranks have the other GPUs
    assert str(resolve_device("cuda:0")) == "cuda:0"  # an explicit GPU is obeyed


def test_a_one_task_slurm_job_keeps_every_gpu(four_gpus):
    from autobackswap_cli.engine import resolve_devices

    four_gpus.setenv("SLURM_LOCALID", "0")
    four_gpus.setenv("SLURM_NTASKS", "1")
    assert len(resolve_devices("cuda")) == 4


def test_a_files_from_list_that_is_not_utf8_or_holds_a_huge_line_is_one_failed_item_each(small_sample, tmp_path):
    from conftest import cli, run_record

    listing = tmp_path / "list.txt"
    listing.write_bytes(b"disc/disc_0000.jpg\ndisc/caf\xe9.jpg\ndisc/" + b"x" * 80_000 + b".jpg\n")
    result = cli("inpaint", small_sample / "train", small_sample / "masks/train", "-o", tmp_path / "bg", "--files-from", listing,
                 "--method", "telea", "--no-progress", expect=1)
    failed = {f["item"] for f in run_record(tmp_path / "bg")["failures"]}
    assert failed == {os.fsdecode(b"disc/caf\xe9.jpg"), "disc/" + "x" * 80_000 + ".jpg"} and "Traceback" not in result.output
    assert (tmp_path / "bg/disc/disc_0000.jpg").is_file()
