"""images.py: reading awkward files, scanning ImageFolders, atomic writes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

import badfiles
from autobackswap_cli.images import (
    TEMP_PREFIX,
    ImageError,
    read_image,
    read_mask,
    remove_stale_temp_files,
    scan_image_folder,
    write_bytes_atomic,
    write_mask_atomic,
)


@pytest.mark.parametrize(
    "maker, reason",
    [
        (badfiles.zero_byte, "empty file"),
        (badfiles.truncated_jpeg, "truncated"),
        (badfiles.not_an_image, "not an image"),
        (badfiles.huge_png_header, "too large"),
    ],
)
def test_unusable_files_raise_a_readable_reason(tmp_path, maker, reason):
    path = maker(tmp_path / "x.png" if maker is not badfiles.truncated_jpeg else tmp_path / "x.jpg")
    with pytest.raises(ImageError, match=reason):
        read_image(path)


@pytest.mark.parametrize("maker", [badfiles.cmyk_jpeg, badfiles.png16, badfiles.rgba_png, badfiles.palette_png])
def test_odd_modes_become_rgb_uint8(tmp_path, maker):
    img = read_image(maker(tmp_path / ("x.jpg" if maker is badfiles.cmyk_jpeg else "x.png")))
    assert img.shape == (48, 80, 3) and img.dtype == np.uint8


def test_sixteen_bit_is_rescaled_not_clipped(tmp_path):
    img = read_image(badfiles.png16(tmp_path / "x.png"))
    assert img[0, 0, 0] == 0 and img[-1, -1, 0] == 255
    assert 100 < img[24, 40, 0] < 160  # mid-grey stays mid-grey


def test_cmyk_colours_survive(tmp_path):
    ref = badfiles.gradient_rgb().astype(int)
    img = read_image(badfiles.cmyk_jpeg(tmp_path / "x.jpg")).astype(int)
    assert np.abs(img - ref).mean() < 12


def test_exif_orientation_is_applied(tmp_path):
    img = read_image(badfiles.exif_rotated_jpeg(tmp_path / "x.jpg", w=80, h=48))
    assert img.shape == (80, 48, 3)


def test_scan_lists_classes_skips_hidden_and_reports_empty(tmp_path):
    for rel in ["b/2.PNG", "a/1.jpg", "a/sub/3.webp", "a/.hidden.jpg", "a/notes.txt"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "o.png").write_bytes(b"x")
    scan = scan_image_folder(tmp_path, exclude=[tmp_path / "out"])
    assert [str(i.rel) for i in scan.items] == ["a/1.jpg", "a/sub/3.webp", "b/2.PNG"]
    assert scan.items[1].cls == "a" and scan.items[1].key == "a/sub/3"
    assert scan.classes == ["a", "b"] and scan.empty_classes == ["empty"]
    assert scan.skipped_files == ["a/notes.txt"]


def test_atomic_write_leaves_no_temp_on_failure(tmp_path, monkeypatch):
    import os

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_bytes_atomic(tmp_path / "a" / "f.bin", b"data")
    assert list((tmp_path / "a").iterdir()) == []


def test_stale_temp_files_are_removed(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / (TEMP_PREFIX + "abc")).write_bytes(b"partial")
    (tmp_path / "c" / "done.png").write_bytes(b"x")
    assert remove_stale_temp_files(tmp_path) == 1
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["done.png"]


@pytest.mark.parametrize("shape", [(1, 1), (1, 37), (23, 1), (64, 80)])
def test_mask_png_decodes_exactly_in_pil_and_opencv(shape):
    import io

    from PIL import Image

    from autobackswap_cli.images import encode_mask_png

    mask = np.random.default_rng(shape[1]).integers(0, 256, shape, dtype=np.uint8)  # every row-to-row difference, wrapping
    data = encode_mask_png(mask)
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == "L" and np.array_equal(np.asarray(img), mask)
    assert np.array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), mask)


def test_mask_round_trip_and_size_check(tmp_path):
    mask = np.linspace(0, 1, 30 * 20, dtype=np.float32).reshape(20, 30)
    write_mask_atomic(tmp_path / "m.png", mask)
    back = read_mask(tmp_path / "m.png", (20, 30))
    assert np.abs(back - mask).max() <= 0.5 / 255 + 1e-6
    with pytest.raises(ImageError, match="does not match"):
        read_mask(tmp_path / "m.png", (21, 30))


def test_mask_and_grid_sizes_are_checked_from_the_header_before_decoding(tmp_path):
    """A PNG whose header says 12000 x 12000 but whose pixel data is cut off: had it been decoded first, the
    error would be about the truncation (and, whole, it would cost ~1.6 GB)."""
    from autobackswap_cli.labels import read_grid

    Image.new("L", (12000, 12000), 0).save(tmp_path / "big.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "big.png").read_bytes()[:4000])
    with pytest.raises(ImageError, match="mask size 12000x12000 does not match image size 64x64"):
        read_mask(tmp_path / "cut.png", (64, 64))
    with pytest.raises(ImageError, match="label grid cut.png is 12000x12000, expected 16x16"):
        read_grid(tmp_path / "cut.png", 16)
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(ImageError, match="unreadable label grid junk.png"):
        read_grid(tmp_path / "junk.png", 16)
