"""Tar shards out (WebDataset): samples grouped into ``shard-000000.tar`` files, each written whole under a
temporary name and renamed when complete, and an index the loaders of that format read.

A sample is ``<key>.<ext>`` (the image), ``<key>.cls`` (the class index, ASCII) and ``<key>.json`` (its manifest
row). A tar's bytes depend only on its samples: members sorted by key, fixed owner, mode and time.
``index.json`` follows wids' descriptor (``wids.ShardListDataset("OUT/index.json")`` opens it) and adds each
tar's size and SHA-256.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .images import write_bytes_atomic

INDEX_KIND = "wids-shard-index-v1"


@dataclass(frozen=True)
class Sample:
    key: str  # no dots: WebDataset groups a sample's files by the name before the first dot
    image_ext: str  # "jpg", "png", "webp"
    image: bytes
    cls: int
    row: dict


def sample_key(output: str) -> str:
    """A WebDataset key for a composite's output path (``cls/name.jpg`` -> ``cls/name``, dots made ``_``)."""
    stem = output.rsplit(".", 1)[0] if "." in output.rsplit("/", 1)[-1] else output
    return stem.replace(".", "_")


def tar_bytes(samples: Iterable[Sample]) -> bytes:
    """One tar of ``samples``, sorted by key, byte-identical for the same samples."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in sorted(samples, key=lambda s: s.key):
            meta = json.dumps(sample.row, sort_keys=True).encode()
            for ext, data in ((sample.image_ext, sample.image), ("cls", str(sample.cls).encode()), ("json", meta)):
                info = tarfile.TarInfo(f"{sample.key}.{ext}")
                info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = len(data), 0, 0o644, 0, 0, "", ""
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_tar(path: Path, samples: list[Sample]) -> dict:
    """Write one tar shard atomically; its index entry (file, samples, size, checksum)."""
    data = tar_bytes(samples)
    write_bytes_atomic(Path(path), data)
    return {"url": Path(path).name, "nsamples": len(samples), "filesize": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def describe_tar(path: Path) -> dict:
    """The index entry of a tar already on disk (a run killed between the tar and its index line)."""
    data = Path(path).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        keys = {m.name.rsplit(".", 1)[0] for m in tar.getmembers()}
    return {"url": Path(path).name, "nsamples": len(keys), "filesize": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def read_index(path: Path) -> dict[str, dict]:
    """The entries of an index on disk, by file name ({} when there is none or it cannot be read)."""
    try:
        return {e["url"]: e for e in json.loads(Path(path).read_text())["shardlist"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def write_index(path: Path, entries: Iterable[dict], name: str) -> None:
    shardlist = sorted(entries, key=lambda e: e["url"])
    index = {"__kind__": INDEX_KIND, "wids_version": 1, "name": name, "shardlist": shardlist,
             "nsamples": sum(e["nsamples"] for e in shardlist)}
    write_bytes_atomic(Path(path), (json.dumps(index, indent=1) + "\n").encode())


def read_samples(path: Path) -> list[dict]:
    """The samples of one tar as dicts of extension -> bytes (plus ``__key__``), in file order: a loader with
    nothing but the standard library."""
    samples: dict[str, dict] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key, ext = member.name.rsplit(".", 1)
            samples.setdefault(key, {"__key__": key})[ext] = tar.extractfile(member).read()
    return list(samples.values())
