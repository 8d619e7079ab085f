"""compose --output-layout webdataset: tar shards that loaders read back, an index with sizes and checksums,
byte-identical per seed, resumable at shard granularity."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from PIL import Image

from autobackswap_cli.images import TEMP_PREFIX
from autobackswap_cli.formats.tarshards import read_samples
from conftest import cli, cli_background, cli_subprocess, run_record, wait_until


def _compose(sample: Path, out: Path, *extra, expect: int = 0):
    return cli("compose", sample / "train", sample / "masks/train", sample / "backgrounds/train", "-o", out, "--per-image", 2,
               "--output-layout", "webdataset", "--shard-size", 10, "--no-progress", *extra, expect=expect)


def test_tar_shards_hold_every_composite_with_its_class_and_manifest_row(small_sample, tmp_path):
    out = tmp_path / "wds"
    _compose(small_sample, out, "--workers", 2)
    tars = sorted(out.glob("shard-*.tar"))
    assert [t.name for t in tars] == [f"shard-{i:06d}.tar" for i in range(5)]  # 24 images x 2 = 48 samples, 5 per 10
    index = json.loads((out / "index.json").read_text())
    assert index["__kind__"] == "wids-shard-index-v1" and index["nsamples"] == 48
    for entry, tar in zip(index["shardlist"], tars):
        data = tar.read_bytes()
        assert entry["url"] == tar.name and entry["filesize"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
    samples = [s for t in tars for s in read_samples(t)]
    assert len(samples) == 48 and len({s["__key__"] for s in samples}) == 48
    classes = ["cross", "disc", "triangle"]
    for s in samples:
        row = json.loads(s["json"])
        assert classes[int(s["cls"])] == row["foreground_class"] == s["__key__"].split("/")[0]
        assert np.asarray(Image.open(io.BytesIO(s["jpg"]))).shape[2] == 3
    assert not list(out.rglob("*.jpg")) and not list(out.rglob(TEMP_PREFIX + "*"))
    assert run_record(out)["results"]["samples"] == 48


def test_tar_shards_are_byte_identical_per_seed_and_match_the_imagefolder_composites(small_sample, tmp_path):
    _compose(small_sample, tmp_path / "a", "--workers", 2)
    _compose(small_sample, tmp_path / "b", "--workers", 0)
    for a in sorted((tmp_path / "a").glob("*.tar")):
        assert a.read_bytes() == (tmp_path / "b" / a.name).read_bytes()
    cli("compose", small_sample / "train", small_sample / "masks/train", small_sample / "backgrounds/train", "-o", tmp_path / "folder",
        "--per-image", 2, "--no-progress")
    for s in read_samples(tmp_path / "a" / "shard-000000.tar"):
        row = json.loads(s["json"])
        assert s["jpg"] == (tmp_path / "folder" / row["output"]).read_bytes()  # the same composite, the same bytes


def test_webdataset_reads_the_shards(small_sample, tmp_path):
    wds = pytest.importorskip("webdataset")
    _compose(small_sample, tmp_path / "wds")
    urls = [str(t) for t in sorted((tmp_path / "wds").glob("*.tar"))]
    pairs = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8").to_tuple("jpg", "cls", "json"))
    assert len(pairs) == 48
    image, cls, row = pairs[0]
    assert isinstance(image, np.ndarray) and image.shape[2] == 3 and cls in (0, 1, 2) and "background" in row


def test_a_killed_run_resumes_at_shard_granularity(tmp_path):
    from autobackswap_cli.sample_data import SampleSpec, generate

    generate(tmp_path / "s", SampleSpec(seed=4, size=64, train_per_class=60, test_per_group=1, labelled=0, grid=8))
    s = tmp_path / "s"

    def command(out: Path) -> list:
        return ["compose", s / "train", s / "masks/train", s / "backgrounds/train", "-o", out, "--per-image", 3,
                "--output-layout", "webdataset", "--shard-size", 30, "--workers", 1, "--no-progress"]

    proc = cli_background(*command(tmp_path / "out"))
    wait_until(proc, lambda: len(list((tmp_path / "out").glob("shard-*.tar"))) >= 2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {t: t.stat().st_mtime_ns for t in (tmp_path / "out").glob("shard-*.tar")}
    assert 2 <= len(finished) < 18  # 180 images x 3 = 540 samples, 30 per tar
    result = cli_subprocess(*command(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert all(t.stat().st_mtime_ns == m for t, m in finished.items())  # finished tars are not redone
    assert len(list((tmp_path / "out").glob("shard-*.tar"))) == 18 and not list((tmp_path / "out").rglob(TEMP_PREFIX + "*"))
    assert json.loads((tmp_path / "out" / "index.json").read_text())["nsamples"] == 540
    fresh = tmp_path / "fresh"
    assert cli_subprocess(*command(fresh)).returncode == 0
    for t in sorted((tmp_path / "out").glob("shard-*.tar")):
        assert t.read_bytes() == (fresh / t.name).read_bytes()


def _renamed_copy(sample: Path, root: Path, renames: dict[str, str]) -> Path:
    """small_sample's training images with their masks and backgrounds, some renamed (old stem -> new stem)."""
    import shutil

    for part in ("train", "masks/train", "backgrounds/train"):
        for path in (sample / part).rglob("*.*"):
            stem = renames.get(path.stem, path.stem)
            target = root / part / path.parent.relative_to(sample / part) / f"{stem}{path.suffix}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return root


def test_tars_hold_long_names_and_keep_every_image_a_sample_of_its_own(small_sample, tmp_path):
    import tarfile

    renames = {"disc_0000": "d" * 90, "disc_0001": "e" * 90, "cross_0000": "x.y", "cross_0001": "x_y"}
    data = _renamed_copy(small_sample, tmp_path / "data", renames)
    out = tmp_path / "wds"
    _compose(data, out, "--workers", 0)
    index = json.loads((out / "index.json").read_text())
    keys = [m.name.rsplit(".", 1)[0] for t in sorted(out.glob("shard-*.tar")) for m in tarfile.open(t).getmembers()]
    assert index["nsamples"] == 48 and len(set(keys)) == 48 and len(keys) == 48 * 3  # image, cls, json per sample
    assert any(len(k) > 100 for k in keys)  # member names past USTAR's 100-byte limit
    sources = {json.loads(s["json"])["foreground"] for t in out.glob("shard-*.tar") for s in read_samples(t)}
    assert {"cross/x.y.jpg", "cross/x_y.jpg"} <= sources
    assert not list(out.rglob(TEMP_PREFIX + "*"))  # no spool left behind
    again = tmp_path / "again"
    _compose(data, again, "--workers", 2)
    assert [t.read_bytes() for t in sorted(out.glob("shard-*.tar"))] == [t.read_bytes() for t in sorted(again.glob("shard-*.tar"))]


def test_two_images_that_differ_only_in_the_extension_are_named_before_any_work(small_sample, tmp_path):
    data = _renamed_copy(small_sample, tmp_path / "data", {})
    Image.open(data / "train/disc/disc_0003.jpg").save(data / "train/disc/disc_0003.png")
    before = {p: p.read_bytes() for p in (data / "train").rglob("*.*")}
    result = _compose(data, tmp_path / "out", expect=2)
    output = " ".join(result.output.split())
    assert "disc/disc_0003.jpg, disc/disc_0003.png" in output and "differ only in the extension" in output, output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.tar"))
    assert {p: p.read_bytes() for p in (data / "train").rglob("*.*")} == before
