"""Makers of awkward input files, shared by the image-reading and the CLI tests."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def gradient_rgb(w: int = 80, h: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1), np.full_like(xx, 90)], -1).astype(np.uint8)


def write_jpeg(path: Path, arr: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, "JPEG", quality=95, **kwargs)
    return path


def zero_byte(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def truncated_jpeg(path: Path) -> Path:
    buf = io.BytesIO()
    Image.fromarray(gradient_rgb(200, 150)).save(buf, "JPEG", quality=95)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def not_an_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is a text file with an image extension\n")
    return path


def cmyk_jpeg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(gradient_rgb()).convert("CMYK").save(path, "JPEG", quality=95)
    return path


def png16(path: Path) -> Path:
    """16-bit grayscale PNG whose values span 0..65535."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (np.linspace(0, 65535, 80 * 48).reshape(48, 80)).astype(np.uint16)
    Image.fromarray(arr).save(path)
    return path


def rgba_png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgba = np.dstack([gradient_rgb(), np.full((48, 80), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(path)
    return path


def palette_png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(gradient_rgb()).convert("P", palette=Image.ADAPTIVE, colors=16)
    img.save(path, transparency=0)
    return path


def exif_rotated_jpeg(path: Path, w: int = 80, h: int = 48) -> Path:
    """Stored as w x h with EXIF orientation 6 (rotate 90° clockwise): shown as h x w."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return write_jpeg(path, gradient_rgb(w, h), exif=exif.tobytes())


def huge_png_header(path: Path, w: int = 20000, h: int = 20000) -> Path:
    """A PNG that claims w x h pixels (its data is tiny and invalid): must fail on size, not on memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
