"""Faults a user meets on a real box, scripted against the real command line: stop signals at random points,
``kill -9`` of the main process and of a worker, a file system that fills up or turns read-only.

Each asserts what a user checks: the exit code, the message, the run record, no partial files, no process left
behind, and that a rerun finishes with the same bytes as a run that was never disturbed. The other faults of
issue 13 are tested beside the code they guard: overlapping input/output folders, the per-folder lock, a simulated
full disk and a dead worker in the library (test_engine), a mask bomb (test_images), the labelling server's
Origin check (test_labeler).

``AUTOBACKSWAP_FAULT_REPEATS`` sets how often each random signal test repeats (default 3; 20 for a soak).
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import signal
import stat
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from autobackswap_cli.images import TEMP_PREFIX
from autobackswap_cli.sample_data import SampleSpec, generate
from conftest import cli_background, cli_subprocess, run_record, wait_until

REPEATS = int(os.environ.get("AUTOBACKSWAP_FAULT_REPEATS", "3"))
STOP_WITHIN_S = 20  # "within a few seconds" on 2 busy CI cores; measured 0.2-2.6 s


@pytest.fixture(scope="module")
def big_set(tmp_path_factory) -> Path:
    """300 training images at 64 px: long enough a run (with GrabCut edges) to be stopped half-way."""
    root = tmp_path_factory.mktemp("faults")
    generate(root, SampleSpec(seed=5, size=64, train_per_class=100, test_per_group=1, labelled=0, grid=8))
    return root / "train"


@pytest.fixture(scope="module")
def reference_masks(big_set, tiny_checkpoint, tmp_path_factory) -> Path:
    """The masks of a run nobody disturbed."""
    out = tmp_path_factory.mktemp("reference") / "masks"
    assert cli_subprocess("segment", big_set, "-m", tiny_checkpoint, "-o", out, *SEGMENT_ARGS).returncode == 0
    return out


SEGMENT_ARGS = ("--refine", "grabcut", "--workers", "2", "--batch-size", "4")


def _start(*args) -> subprocess.Popen:
    return cli_background(*args, env={"AUTOBACKSWAP_LOG_INTERVAL": "0.2"})  # a progress line soon after start


def _read_line_if_ready(proc: subprocess.Popen, lines: list[str]) -> None:
    """Append the child's next stderr line to ``lines`` when one is waiting (never blocks: ``wait_until``'s timeout
    can fire)."""
    if select.select([proc.stderr], [], [], 0.2)[0]:
        lines.append(proc.stderr.readline())


def _files(folder: Path, pattern: str = "*.png") -> list[Path]:
    return sorted(folder.rglob(pattern)) if folder.exists() else []


def _live_processes(group: int) -> list[str]:
    """Processes of the process group that are still running (zombies are already dead)."""
    rows = subprocess.run(["ps", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True).stdout.splitlines()
    return [r for r in rows if r.split()[1] == str(group) and not r.split()[2].startswith("Z")]


def _no_process_left(group: int, within_s: float = 5.0) -> list[str]:
    deadline = time.time() + within_s
    while (left := _live_processes(group)) and time.time() < deadline:
        time.sleep(0.1)
    return left


@contextmanager
def _reaped(proc: subprocess.Popen):
    """Whatever the test asserts, leave no process of the group behind."""
    try:
        yield proc
    finally:
        if _live_processes(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _stop(proc: subprocess.Popen, sig: int) -> tuple[int, str, float]:
    """Send ``sig``; the exit code, stderr and seconds until it ended (fails the test when it hangs)."""
    proc.send_signal(sig)
    t0 = time.time()
    try:
        _, err = proc.communicate(timeout=STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"{signal.Signals(sig).name}: still running {STOP_WITHIN_S} s later (hung)")
    return proc.returncode, err, time.time() - t0


def _same_bytes(a: Path, b: Path, pattern: str = "*.png") -> None:
    got, want = _files(a, pattern), _files(b, pattern)
    assert [p.relative_to(a) for p in got] == [p.relative_to(b) for p in want]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(got, want))


# ----------------------------------------------------------------------------------------- stop signals


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_at_a_random_point_ends_segment_cleanly_every_time(big_set, tiny_checkpoint, reference_masks, tmp_path, sig):
    out = tmp_path / "masks"
    rng = random.Random(sig)
    for attempt in range(REPEATS):
        shutil.rmtree(out, ignore_errors=True)  # every attempt from the start, so the signal lands mid-run
        with _reaped(_start("segment", big_set, "-m", tiny_checkpoint, "-o", out, *SEGMENT_ARGS)) as proc:
            at = rng.randint(1, 250)  # masks written before the signal: from the first batch to near the end
            wait_until(proc, lambda at=at: len(_files(out)) >= at)
            code, err, took = _stop(proc, sig)
            assert code == 128 + sig, f"attempt {attempt}: exit {code}\n{err}"
            assert f"interrupted ({signal.Signals(sig).name})" in err and "run the same command again" in " ".join(err.split())
            assert "segment:" in err and "done" in err  # the one-line summary
            assert run_record(out)["status"] == "interrupted"
            assert run_record(out)["counts"]["done"] == len(_files(out)), f"attempt {attempt}: the record counts what is on disk"
            assert not _files(out, TEMP_PREFIX + "*")
            assert not _no_process_left(proc.pid), "a worker outlived the run"
    resumed = cli_subprocess("segment", big_set, "-m", tiny_checkpoint, "-o", out, *SEGMENT_ARGS)
    assert resumed.returncode == 0, resumed.stderr
    assert run_record(out)["counts"]["skipped"] > 0
    _same_bytes(out, reference_masks)


@pytest.mark.slow
@pytest.mark.parametrize("step", ["inpaint", "compose"])
def test_sigterm_ends_inpaint_and_compose_cleanly(big_set, tmp_path, step):
    masks, backgrounds = big_set.parent / "masks" / "train", big_set.parent / "backgrounds" / "train"  # the truth
    if step == "inpaint":
        args = ("inpaint", big_set, masks, "-o", tmp_path / "out", "--workers", "2")
    else:
        args = ("compose", big_set, masks, backgrounds, "-o", tmp_path / "out", "--per-image", "3", "--workers", "2")
    with _reaped(_start(*args)) as proc:
        wait_until(proc, lambda: len(_files(tmp_path / "out", "*.jpg")) >= 30)
        code, err, _ = _stop(proc, signal.SIGTERM)
        assert code == 143, err
        assert run_record(tmp_path / "out")["status"] == "interrupted"
        assert not _files(tmp_path / "out", TEMP_PREFIX + "*")
        assert not _no_process_left(proc.pid)
    assert cli_subprocess(*args).returncode == 0


@pytest.mark.parametrize("trainer", ["train-segmenter", "train-classifier"])
def test_sigterm_ends_a_trainer_with_a_record_and_no_half_trained_model(small_sample, tmp_path, trainer):
    model = tmp_path / "model.safetensors"
    if trainer == "train-segmenter":
        args = (trainer, small_sample / "train", small_sample / "labels", "-o", model, "--epochs", "5000", "--patience", "5000")
    else:
        args = (trainer, small_sample / "train", "-o", model, "--epochs", "5000")
    with _reaped(_start(*args)) as proc:
        lines: list[str] = []
        wait_until(proc, lambda: _read_line_if_ready(proc, lines) or f"{trainer}: started" in "".join(lines))
        code, err, _ = _stop(proc, signal.SIGTERM)
    assert code == 143, err
    assert "no model was saved" in " ".join(err.split())
    assert not model.exists()
    record = json.loads((tmp_path / "model.safetensors.json").read_text())
    assert record["step"] == trainer and record["status"] == "interrupted" and record["model"] is None


# ----------------------------------------------------------------------------------------- kill -9


@pytest.mark.slow
def test_kill_9_of_the_main_process_leaves_no_process_and_frees_the_callers_pipes(big_set, tiny_checkpoint, tmp_path):
    out = tmp_path / "masks"
    with _reaped(_start("segment", big_set, "-m", tiny_checkpoint, "-o", out, *SEGMENT_ARGS)) as proc:
        wait_until(proc, lambda: len(_files(out)) >= 20)
        os.kill(proc.pid, signal.SIGKILL)  # the main process only: its workers, fork server and tracker must follow
        proc.communicate(timeout=STOP_WITHIN_S)  # returns only when no process holds stdout/stderr any more
        assert not _no_process_left(proc.pid)
    resumed = cli_subprocess("segment", big_set, "-m", tiny_checkpoint, "-o", out, *SEGMENT_ARGS)
    assert resumed.returncode == 0 and not _files(out, TEMP_PREFIX + "*")
    assert run_record(out)["counts"]["skipped"] >= 20


def _a_worker_of(main_pid: int) -> int:
    """A pool worker: a grandchild of the main process (workers are forked by the fork server)."""
    rows = [r.split() for r in subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout.splitlines()]
    children = {int(pid) for pid, ppid in rows if int(ppid) == main_pid}
    return next(int(pid) for pid, ppid in rows if int(ppid) in children)


@pytest.mark.slow
def test_a_worker_killed_like_the_oom_killer_does_fails_the_run_clearly(big_set, tiny_checkpoint, reference_masks, tmp_path):
    out = tmp_path / "masks"
    with _reaped(_start("segment", big_set, "-m", tiny_checkpoint, "-o", out, *SEGMENT_ARGS)) as proc:
        wait_until(proc, lambda: len(_files(out)) >= 20)
        os.kill(_a_worker_of(proc.pid), signal.SIGKILL)
        _, err = proc.communicate(timeout=STOP_WITHIN_S)
        assert proc.returncode == 2, err
        assert "a worker process died" in err and "rerun to continue" in " ".join(err.split())
        record = run_record(out)
        assert record["status"] == "failed" and "worker process died" in record["error"]
        assert record["counts"]["done"] < 300
        assert not _no_process_left(proc.pid)
    assert cli_subprocess("segment", big_set, "-m", tiny_checkpoint, "-o", out, *SEGMENT_ARGS).returncode == 0
    _same_bytes(out, reference_masks)


# ----------------------------------------------------------------------------------------- a real small file system


@pytest.fixture
def small_filesystem(tmp_path):
    """A 256 KiB tmpfs (needs the right to mount, as root in CI's container; skipped elsewhere)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small file system here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.slow
def test_a_full_file_system_stops_the_run_with_one_message_and_a_rerun_finishes(big_set, small_filesystem):
    out = small_filesystem / "backgrounds"
    args = ("inpaint", big_set, big_set.parent / "masks" / "train", "-o", out, "--workers", "2")
    full = cli_subprocess(*args)
    assert full.returncode == 2, full.stderr
    err = " ".join(full.stderr.split())
    assert err.count("No space left on device") <= 3  # the failed item, the record warning, the error: not one per image
    assert "inpaint:" in err and "the run stopped" in err  # the counts, then why it stopped
    assert not _files(out, TEMP_PREFIX + "*")
    written = len(_files(out, "*.jpg"))
    assert 0 < written < 300
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_filesystem)], check=True)
    resumed = cli_subprocess(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert run_record(out)["counts"]["skipped"] == written and len(_files(out, "*.jpg")) == 300


@pytest.mark.slow
def test_a_read_only_output_folder_is_one_clear_error(big_set, small_filesystem):
    out = small_filesystem / "backgrounds"
    out.mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_filesystem)], check=True)
    result = cli_subprocess("inpaint", big_set, big_set.parent / "masks" / "train", "-o", out, "--workers", "2")
    assert result.returncode == 2, result.stderr
    assert "Read-only file system" in result.stderr and "Traceback" not in result.stderr
    assert not _files(out, "*.jpg")


# ----------------------------------------------------------------- issue 20: single-file outputs never land on inputs


@pytest.fixture
def probe_set(small_sample, tmp_path) -> Path:
    """A private copy of the small sample set (a probe that fails must not spoil the shared one)."""
    shutil.copytree(small_sample, tmp_path / "s")
    return tmp_path / "s"


def _tiny_classifier(path: Path, classes: list[str]) -> Path:
    from autobackswap_cli.classifier import MODEL_FORMAT, build_small_cnn
    from autobackswap_cli.formats.model_files import save_model

    net = build_small_cnn(len(classes), 4)
    save_model(path, net.state_dict(), {"format": MODEL_FORMAT, "format_version": 2, "arch": "small-cnn", "width": 4,
                                        "classes": classes, "image_size": 16})
    return path


def _hashes(*folders: Path) -> dict[str, str]:
    import hashlib

    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for f in folders for p in sorted(Path(f).rglob("*")) if p.is_file()}


def _first(folder: Path, pattern: str) -> Path:
    return sorted(folder.rglob(pattern))[0]


def _refused(args: list, inputs: list[Path], output: Path, named: Path) -> None:
    """The command exits 2 before any work with one line naming the output and the input; no input changed."""
    before = _hashes(*inputs)
    result = cli_subprocess(*args)
    message = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2, message
    assert str(output) in message and str(named) in message and "inputs are never modified" in message, message
    assert _hashes(*inputs) == before


def test_a_preview_on_an_input_image_is_refused(probe_set, tmp_path):
    s = probe_set
    target = _first(s / "train", "*.jpg")
    _refused(["compose", s / "train", s / "masks/train", s / "backgrounds/train", "-o", tmp_path / "out", "--preview", target],
             [s], target, target)
    assert not (tmp_path / "out").exists()


def test_a_new_preview_inside_an_input_folder_is_refused(probe_set, tmp_path):
    s = probe_set
    target = s / "train" / "disc" / "new.png"
    _refused(["compose", s / "train", s / "masks/train", s / "backgrounds/train", "-o", tmp_path / "out", "--preview", target],
             [s], target, s / "train")
    assert not target.exists()


def test_a_classifier_written_over_an_input_image_is_refused(probe_set):
    target = _first(probe_set / "train", "*.jpg")
    _refused(["train-classifier", probe_set / "train", "-o", target, "--epochs", "1", "--no-progress"], [probe_set], target, probe_set / "train")


def test_a_segmenter_written_over_a_label_is_refused(probe_set):
    s = probe_set
    target = _first(s / "labels", "*.png")
    _refused(["train-segmenter", s / "train", s / "labels", "-o", target, "--backbone", "small-cnn", "--epochs", "1", "--no-progress"],
             [s], target, s / "labels")


def test_an_evaluate_report_or_chart_over_an_input_is_refused(probe_set, tmp_path):
    s = probe_set
    model = _tiny_classifier(tmp_path / "m.safetensors", sorted(p.name for p in (s / "test").iterdir()))
    base = ["evaluate", s / "test", "--masks", s / "masks/test", "--backgrounds", s / "backgrounds/test", "-m", model, "--no-progress"]
    report = _first(s / "test", "*.jpg")
    _refused([*base, "--json", report], [s], report, s / "test")
    chart = _first(s / "masks/test", "*.png")
    _refused([*base, "--chart", chart], [s], chart, s / "masks/test")
    _refused([*base, "--json", model], [s, tmp_path], model, model)


def test_a_json_log_appended_to_an_input_image_is_refused(probe_set, tiny_checkpoint, tmp_path):
    target = _first(probe_set / "train", "*.jpg")
    _refused(["--log-json", target, "segment", probe_set / "train", "-m", tiny_checkpoint, "-o", tmp_path / "masks", "--refine", "none"],
             [probe_set], target, probe_set / "train")


def test_a_converted_model_written_over_its_source_or_a_model_read_is_refused(probe_set, tiny_checkpoint, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    source = models / "old.pt"
    shutil.copy(tiny_checkpoint, source)
    _refused(["convert-model", source, "-o", source], [models], source, source)
    segmenter = models / "seg.safetensors"
    shutil.copy(tiny_checkpoint, segmenter)
    _refused(["segment", probe_set / "train", "-m", segmenter, "-o", tmp_path / "masks", "--refine", "none", "--preview", segmenter],
             [probe_set, models], segmenter, segmenter)


def test_a_preview_inside_the_output_folder_inside_data_is_allowed(probe_set, tiny_checkpoint):
    out = probe_set / "train" / "masks-out"
    result = cli_subprocess("segment", probe_set / "train", "-m", tiny_checkpoint, "-o", out, "--refine", "none", "--preview", out / "p.png")
    assert result.returncode == 0, result.stderr
    assert (out / "p.png").is_file()


# ----------------------------------------------------------------- issue 20: outputs get the user's umask


@contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _modes(*paths: Path) -> dict[str, int]:
    """The permission bits of every file written (temporary and lock files aside)."""
    files = [p for path in paths for p in ([path] if path.is_file() else sorted(path.rglob("*"))) if p.is_file()]
    return {str(p): stat.S_IMODE(p.stat().st_mode) for p in files if not p.name.startswith((TEMP_PREFIX, ".autobackswap.lock"))}


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640)])
def test_every_output_file_gets_the_mode_of_the_users_umask(small_sample, tiny_checkpoint, tmp_path, mask, expected):
    s = small_sample
    with _umask(mask):
        runs = [
            ("segment", s / "train", "-m", tiny_checkpoint, "-o", tmp_path / "masks", "--refine", "none", "--preview", tmp_path / "seg.png"),
            ("compose", s / "train", s / "masks/train", s / "backgrounds/train", "-o", tmp_path / "tars", "--output-layout", "webdataset"),
            ("compose", s / "train", s / "masks/train", s / "backgrounds/train", "-o", tmp_path / "out", "--preview", tmp_path / "comp.png"),
            ("train-classifier", s / "train", "-o", tmp_path / "clf.safetensors", "--epochs", "1", "--image-size", "16", "--no-progress"),
        ]
        for args in runs:
            assert (result := cli_subprocess(*args)).returncode == 0, result.stderr
    written = _modes(tmp_path / "masks", tmp_path / "tars", tmp_path / "out", tmp_path / "seg.png", tmp_path / "comp.png",
                     tmp_path / "clf.safetensors", tmp_path / "clf.safetensors.json")
    assert any(p.endswith(".tar") for p in written) and any(p.endswith("manifest.csv") for p in written)
    assert {p: m for p, m in written.items() if m != expected} == {}


# ----------------------------------------------------------------- issue 20: the smaller ones


def test_segment_with_a_missing_truth_folder_is_an_error(small_sample, tiny_checkpoint, tmp_path):
    missing = tmp_path / "no-such-truth"
    result = cli_subprocess("segment", small_sample / "train", "-m", tiny_checkpoint, "-o", tmp_path / "masks", "--truth", missing)
    message = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2 and "--truth" in message and str(missing) in message, message
    assert not (tmp_path / "masks").exists()  # refused before any work


def test_the_executor_help_names_its_extra():
    result = cli_subprocess("segment", "--help")
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "Needs the extra" not in text and "Needs the ray extra: pip install 'autobackswap-cli[ray]'" in text, text
