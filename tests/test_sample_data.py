"""The shipped sample_data/ and its generator."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from autobackswap_cli.labels import read_grid, read_labels_info
from autobackswap_cli.sample_data import CLASSES, FAMILIES
from conftest import SAMPLE_DATA, cli


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_shipped_sample_data_is_what_the_generator_makes(tmp_path):
    """CSV and JSON files match byte for byte, PNGs pixel for pixel, JPEGs nearly (another zlib or libjpeg
    may encode the same pixels differently)."""
    cli("sample-data", tmp_path / "s", "--seed", "0")
    made, shipped = _digests(tmp_path / "s"), _digests(SAMPLE_DATA)
    assert made.keys() == shipped.keys()
    for rel in made:
        if rel.endswith((".jpg", ".png")):
            a = np.asarray(Image.open(tmp_path / "s" / rel), np.float32)
            b = np.asarray(Image.open(SAMPLE_DATA / rel), np.float32)
            assert a.shape == b.shape, rel
            if rel.endswith(".png"):
                assert np.array_equal(a, b), rel
            else:
                assert np.abs(a - b).mean() < 1.0, rel
        else:
            assert made[rel] == shipped[rel], rel


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    args = ["--size", "48", "--train-per-class", "3", "--test-per-group", "1", "--labelled", "3"]
    cli("sample-data", tmp_path / "a", "--seed", "7", *args)
    cli("sample-data", tmp_path / "b", "--seed", "7", *args)
    cli("sample-data", tmp_path / "c", "--seed", "8", *args)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert _digests(tmp_path / "a") != _digests(tmp_path / "c")


def _mean_colour(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), np.float32).reshape(-1, 3).mean(0)


def _family_of(colour: np.ndarray) -> str:
    r, g, b = colour
    return "water" if b > max(r, g) else ("grass" if g > max(r, b) else "desert")


def test_training_backgrounds_are_fully_correlated_and_test_breaks_it():
    assert sum(f.stat().st_size for f in SAMPLE_DATA.rglob("*") if f.is_file()) < 10 * 2**20
    for cls, family in zip(CLASSES, FAMILIES):
        images = sorted((SAMPLE_DATA / "train" / cls).glob("*.jpg"))
        assert len(images) == 60
        for img in images:
            bg = SAMPLE_DATA / "backgrounds/train" / cls / img.name
            assert _family_of(_mean_colour(bg)) == family  # no training image breaks the correlation
    rows = list(csv.DictReader(open(SAMPLE_DATA / "test_groups.csv")))
    assert Counter((r["class"], r["background"]) for r in rows) == {(c, f): 10 for c in CLASSES for f in FAMILIES}
    for r in rows:
        assert _family_of(_mean_colour(SAMPLE_DATA / "backgrounds/test" / r["image"])) == r["background"]


def test_every_image_has_truth_of_its_size_and_labels_are_stratified():
    for split in ("train", "test"):
        for img in (SAMPLE_DATA / split).rglob("*.jpg"):
            rel = img.relative_to(SAMPLE_DATA / split)
            size = Image.open(img).size
            mask = np.asarray(Image.open(SAMPLE_DATA / "masks" / split / rel.with_suffix(".png")))
            assert mask.shape == size[::-1] and set(np.unique(mask)) <= {0, 255} and 0.03 < (mask > 0).mean() < 0.6
            assert Image.open(SAMPLE_DATA / "backgrounds" / split / rel).size == size
    info = read_labels_info(SAMPLE_DATA / "labels")
    assert info.grid == 16 and info.count == 60
    grids = sorted((SAMPLE_DATA / "labels").rglob("*.png"))
    assert Counter(p.parent.name for p in grids) == {c: 20 for c in CLASSES}
    for p in grids:
        g = read_grid(p, 16)
        assert (g == 255).any() and (g == 0).any()
