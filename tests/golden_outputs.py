"""A small pipeline whose output files are pinned by their sha256 (tests/golden_outputs.json), so a refactor that
means to change nothing can show that it changed nothing, byte for byte.

The pipeline runs the CLI in child processes (``python -m autobackswap_cli``), as a user would: sample data, labels
imported from masks, a small-cnn segmenter, segment, inpaint, compose (an ImageFolder), and compose again with the
classes from a ``--metadata`` table into tar shards. Run records, journals and logs carry times and are not pinned.

To see what a commit made (for instance the commit before a refactor), run this file with that commit's package
first on the path; the digests go to stdout as JSON:

    PYTHONPATH=/path/to/old/checkout .venv/bin/python tests/golden_outputs.py /tmp/work > tests/golden_outputs.json
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

NOT_PINNED = {"autobackswap.json", "compose.journal"}  # hold times or the order work finished in


def _cli(work: Path, *args: object) -> None:
    """Run one command in ``work`` with paths relative to it, so no file records where the pipeline ran."""
    env = {**os.environ, "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "autobackswap_cli", *map(str, args)], capture_output=True, text=True, env=env, cwd=work)
    if result.returncode != 0:
        raise RuntimeError(f"autobackswap {' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")


def run_pipeline(work: Path) -> dict[str, Path]:
    """Run the pinned pipeline under ``work``; the output folders by name."""
    sd, data = Path("sd"), work / "sd" / "train"
    _cli(work, "sample-data", sd, "--size", 64, "--train-per-class", 6, "--test-per-group", 2, "--labelled", 12, "--seed", 3)
    quiet = ("--no-progress",)
    _cli(work, "label", sd / "train", "-o", "labels", "--from-masks", sd / "masks" / "train", "--count", 12, *quiet)
    model = "segmenter.safetensors"
    _cli(work, "train-segmenter", sd / "train", "labels", "-o", model, "--backbone", "small-cnn", "--epochs", 20, "--seed", 0, *quiet)
    _cli(work, "segment", sd / "train", "-m", model, "-o", "masks", "--workers", 0, *quiet)
    _cli(work, "inpaint", sd / "train", "masks", "-o", "backgrounds", "--workers", 0, *quiet)
    _cli(work, "compose", sd / "train", "masks", "backgrounds", "-o", "composites", "--per-image", 2, "--workers", 0, *quiet)
    table = work / "metadata.csv"  # every image's class from a table: the classes' order reversed
    classes = sorted(p.name for p in data.iterdir() if p.is_dir())
    with table.open("w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["img_filename", "y"])
        for image in sorted(data.rglob("*.jpg")):
            rows.writerow([image.relative_to(data).as_posix(), len(classes) - 1 - classes.index(image.parent.name)])
    _cli(work, "compose", sd / "train", sd / "masks" / "train", sd / "backgrounds" / "train", "-o", "from_table", "--metadata", table.name,
         "--per-image", 2, "--workers", 0, "--output-layout", "webdataset", "--shard-size", 20, *quiet)
    return {name: work / name for name in ("labels", "masks", "backgrounds", "composites", "from_table")}


def digests(outputs: dict[str, Path]) -> dict[str, str]:
    """sha256 of every pinned file, keyed ``<output>/<path inside it>``."""
    found = {}
    for name, folder in outputs.items():
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.name not in NOT_PINNED and not path.name.startswith("."):
                found[f"{name}/{path.relative_to(folder).as_posix()}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


if __name__ == "__main__":
    work = Path(sys.argv[1]).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(json.dumps(digests(run_pipeline(work)), indent=1, sort_keys=True))
