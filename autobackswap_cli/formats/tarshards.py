"""Tar shards out (WebDataset): samples grouped into ``shard-000000.tar`` files, each written whole under a
temporary name and renamed when complete, and an index the loaders of that format read.

A sample is ``<key>.<ext>`` (the image), ``<key>.cls`` (the class index, ASCII) and ``<key>.json`` (its manifest
row). A tar's bytes depend only on its samples: members sorted by key, fixed owner, mode and time; names of any
length or alphabet (POSIX.1-2001 pax headers). Samples wait for their tar in a spool file beside it, not in memory,
and the tar is streamed to its temporary file.
``index.json`` follows wids' descriptor (``wids.ShardListDataset("OUT/index.json")`` opens it) and adds each
tar's size and SHA-256.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable

from ..images import TEMP_PREFIX, atomic_file, write_bytes_atomic

INDEX_KIND = "wids-shard-index-v1"


@dataclass(frozen=True)
class Sample:
    key: str  # no dots: WebDataset groups a sample's files by the name before the first dot
    image_ext: str  # "jpg", "png", "webp"
    image: bytes
    cls: int
    row: dict


def sample_key(output: str) -> str:
    """A WebDataset key for a composite's output path (``cls/name.jpg`` -> ``cls/name``). Dots are made ``_`` (a
    loader splits at the first dot); a key whose stem had dots also gets 8 hex digits of the stem's hash, so
    ``x.y.jpg`` and ``x_y.jpg`` stay two samples. Stable: the same output always gives the same key."""
    stem = output.rsplit(".", 1)[0] if "." in output.rsplit("/", 1)[-1] else output
    if "." not in stem:
        return stem
    return f"{stem.replace('.', '_')}-{hashlib.sha1(stem.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


class TarSpool:
    """The samples waiting for one tar, spooled to a temporary file in the output folder (memory keeps only
    their keys and manifest rows), written out sorted by ``write``."""

    def __init__(self, folder: Path):
        fd, self.path = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".spool", dir=folder)
        self.file: IO[bytes] = os.fdopen(fd, "w+b")
        self.entries: list[tuple[str, str, int, int, int, dict]] = []  # key, ext, offset, length, class, row

    def add(self, sample: Sample) -> None:
        offset = self.file.seek(0, os.SEEK_END)
        self.file.write(sample.image)
        self.entries.append((sample.key, sample.image_ext, offset, len(sample.image), sample.cls, sample.row))

    def __len__(self) -> int:
        return len(self.entries)

    def write(self, path: Path) -> dict:
        """Stream the tar to ``path`` (atomically) and drop the spool; the tar's index entry."""
        try:
            with atomic_file(path) as out:
                hashing = _Hashing(out)
                with tarfile.open(fileobj=hashing, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    for key, ext, offset, length, cls, row in sorted(self.entries, key=lambda e: e[0]):
                        self.file.seek(offset)
                        _add(tar, f"{key}.{ext}", self.file, length)
                        for member_ext, data in (("cls", str(cls).encode()), ("json", json.dumps(row, sort_keys=True).encode())):
                            _add(tar, f"{key}.{member_ext}", io.BytesIO(data), len(data))
        finally:
            self.close()
        return {"url": Path(path).name, "nsamples": len(self.entries), "filesize": hashing.size, "sha256": hashing.sha.hexdigest()}

    def close(self) -> None:
        self.file.close()
        Path(self.path).unlink(missing_ok=True)


class _Hashing:
    """A write-only file that passes bytes on and keeps their SHA-256 and count."""

    def __init__(self, out: IO[bytes]):
        self.out, self.sha, self.size = out, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.out.write(data)

    def tell(self) -> int:
        return self.size


def _add(tar: tarfile.TarFile, name: str, source: IO[bytes], size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = size, 0, 0o644, 0, 0, "", ""
    tar.addfile(info, source)


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
