"""Real photographs that Debian packages ship, fetched once for the benchmarks (never by the tool or its tests).

``package_dir(NAME)`` runs ``apt-get download NAME`` and ``dpkg -x`` into a cache folder (no install, no root
needed for the unpacking; ``AUTOBACKSWAP_BENCH_CACHE``, default ``~/.cache/autobackswap-bench``) and returns the
unpacked tree. What the benchmarks take from them:

- ``tuxpaint-stamps-default``: real photographs of single objects with an alpha channel (birds, mammals, fruit and
  vegetables, flowers, insects, fish), GPL-2 (Bill Kendrick and the Tux Paint contributors; Debian's
  ``/usr/share/doc/tuxpaint-stamps-default/copyright``). Only the photo folders are used, not ``cartoon/``.
- ``mate-backgrounds``: the ``nature`` wallpapers (leaves, grass, dunes, water, blossoms, wood), GPL-2+ / CC
  licences per file as listed in ``/usr/share/doc/mate-backgrounds/copyright``.

Nothing of them is committed or redistributed: they are unpacked on the benchmarking machine only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

STAMPS_PACKAGE = "tuxpaint-stamps-default"
WALLPAPERS_PACKAGE = "mate-backgrounds"


def cache_root() -> Path:
    return Path(os.environ.get("AUTOBACKSWAP_BENCH_CACHE", Path.home() / ".cache" / "autobackswap-bench"))


def package_dir(name: str) -> Path:
    """The unpacked tree of Debian package ``name`` (downloaded and unpacked on first use)."""
    target = cache_root() / "debian" / name
    if (target / ".unpacked").is_file():
        return target
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise SystemExit(f"the benchmark needs Debian's {name} (apt-get download + dpkg -x); no apt-get/dpkg on this machine")
    with tempfile.TemporaryDirectory(prefix="abs-deb-") as tmp:
        done = subprocess.run(["apt-get", "download", name], cwd=tmp, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"apt-get download {name} failed (run 'apt-get update' once?):\n{done.stderr.strip()}")
        deb = next(Path(tmp).glob(f"{name}_*.deb"))
        staging = target.with_name(target.name + ".partial")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        subprocess.run(["dpkg", "-x", str(deb), str(staging)], check=True)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    (target / ".unpacked").write_text(name + "\n")
    return target


def stamps_dir() -> Path:
    return package_dir(STAMPS_PACKAGE) / "usr/share/tuxpaint/stamps"


def wallpapers_dir() -> Path:
    return package_dir(WALLPAPERS_PACKAGE) / "usr/share/backgrounds/mate/nature"
