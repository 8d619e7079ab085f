"""ImageFolder scanning, robust image / mask reading, and atomic writes.

Everything that touches image files on disk lives here, so every step reads and
writes them the same way:

* ``scan_image_folder`` lists ``DATA/<class>/.../<name>.<ext>`` in a stable order;
* ``read_image`` returns an RGB uint8 array whatever the file holds (EXIF rotation,
  grayscale, RGBA, palette, CMYK, 16-bit) or raises ``ImageError`` with a reason a
  person can act on;
* ``write_*_atomic`` write through a temporary file in the target folder and an
  atomic rename, so a final file name never holds a partial file.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Iterable, Iterator, Sequence

import cv2
import numpy as np
from PIL import Image, ImageOps


@dataclass(frozen=True)
class ImageFormat:
    """One image file format: how it is encoded (PIL's format name and save options, ``quality`` when it takes
    ``--quality``), the file extensions the scanner reads as images of it, and whether ``--encode-format`` offers
    it (the others are read, and written only as ``same``)."""

    encoder: str
    extensions: tuple[str, ...]  # lower case, with the dot
    options: tuple[tuple[str, object], ...] = ()  # default save options
    quality: bool = False
    offered: bool = True
    help: str = ""

    def save_options(self, quality: int) -> dict:
        """The options PIL saves it with."""
        return {**dict(self.options), **({"quality": quality} if self.quality else {})}


# THE registry of image formats: name -> format. What a step writes, what the scanner reads (IMAGE_EXTENSIONS)
# and the choices of --encode-format (choices.OutputFormat) all come from here; a new format is one entry.
IMAGE_FORMATS: dict[str, ImageFormat] = {
    "png": ImageFormat("PNG", (".png",), (("compress_level", 6),), help="lossless"),
    "jpg": ImageFormat("JPEG", (".jpg", ".jpeg"), quality=True, help="lossy, --quality"),
    "webp": ImageFormat("WEBP", (".webp",), quality=True, help="lossy, --quality"),
    "bmp": ImageFormat("BMP", (".bmp",), offered=False),
    "tif": ImageFormat("TIFF", (".tif", ".tiff"), offered=False),
}
_BY_EXTENSION = {ext: fmt for fmt in IMAGE_FORMATS.values() for ext in fmt.extensions}
IMAGE_EXTENSIONS = frozenset(_BY_EXTENSION)


def image_format(suffix: str) -> ImageFormat:
    """The format of a file suffix (``.jpg``, ``JPEG``, ``png``; any case); ValueError for one that is not in
    ``IMAGE_FORMATS``."""
    fmt = _BY_EXTENSION.get("." + suffix.lower().lstrip("."))
    if fmt is None:
        raise ValueError(f"unsupported output format: {suffix.lower().lstrip('.')}")
    return fmt


def encode_format_names() -> tuple[str, ...]:
    """What ``--encode-format`` offers besides ``same``: every extension of each offered format (jpg and jpeg)."""
    return tuple(ext.lstrip(".") for fmt in IMAGE_FORMATS.values() if fmt.offered for ext in fmt.extensions)


def encode_format_help() -> str:
    """``--encode-format``'s help, from the registry."""
    names = [f"{'/'.join(e.lstrip('.') for e in fmt.extensions)}" + (f" ({fmt.help})" if fmt.help else "")
             for fmt in IMAGE_FORMATS.values() if fmt.offered]
    return "The encoding of the images written: same (as the input), " + ", ".join(names) + "."


# Temporary files carry this prefix so a later run can recognise and remove
# leftovers of a process that was killed with SIGKILL mid-write.
TEMP_PREFIX = ".abs-tmp-"
# Default ceiling on decoded pixels; larger files fail with a clear reason instead
# of exhausting memory (PIL's own bomb check would only warn below 2x its limit).
DEFAULT_MAX_PIXELS = 178_956_970

# How text files that hold paths (manifests, journals, lists) are read and written: UTF-8, with a file name that
# is not UTF-8 (caf\xe9.jpg from an old archive) carried through byte for byte.
TEXT = {"encoding": "utf-8", "errors": "surrogateescape"}


def path_key(rel: str) -> str:
    """A relative path without its extension (``c/x.jpg`` -> ``c/x``): the name every derived file shares, by
    ``os.path.splitext``'s rule. Two ``rfind`` for the usual name (a million in a fraction of a second); a name
    that starts with a dot goes to ``splitext`` itself."""
    slash, dot = rel.rfind("/") + 1, rel.rfind(".")
    if dot > slash and rel[slash] != ".":
        return rel[:dot]
    return os.path.splitext(rel)[0]


class ImageError(Exception):
    """An input file that cannot be used; the message names the reason."""


@dataclass(frozen=True, order=True)
class ImageItem:
    """One image of a dataset: its path relative to the root, its class and (when a table says) its group.

    Without ``label`` the class is the first folder (an ImageFolder). A scan with a ``DatasetLayout``
    (engine/layout.py: ``--class-level K`` or ``--metadata FILE``) sets ``label``, ``group`` and ``level``.
    """

    rel: PurePosixPath  # e.g. PurePosixPath("cow/0001.jpg")
    root: Path
    label: str | None = field(default=None, compare=False)  # the class, when not the first folder's name
    group: str | None = field(default=None, compare=False)  # the spurious attribute (e.g. Waterbirds' place)
    level: int = field(default=1, compare=False)  # the folder level that names the class; 0: a metadata table

    @property
    def path(self) -> Path:
        return self.root / Path(self.rel)

    @property
    def cls(self) -> str:
        return self.rel.parts[0] if self.label is None else self.label

    @property
    def class_rel(self) -> PurePosixPath:
        """The item's path in a class-first ImageFolder (compose's ``OUT/<class>/...``): its own path when its class
        is its first folder; else the class, then its path without the class folder (whole, for a table's class)."""
        if self.label is None or self.level == 1:
            return self.rel
        parts = self.rel.parts
        rest = parts if self.level == 0 else parts[: self.level - 1] + parts[self.level :]
        return PurePosixPath(self.label, *rest)

    @property
    def key(self) -> str:
        """Relative path without extension: the name every derived file shares (``path_key``)."""
        return path_key(str(self.rel))


@dataclass
class FolderScan:
    items: list[ImageItem]
    classes: list[str]
    empty_classes: list[str]
    skipped_files: list[str]  # files that are not images by extension, or loose files at the root


def is_image_file(path: Path | PurePosixPath) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def is_inside(path: Path, folder: Path) -> bool:
    """True when ``path`` (symlinks resolved) is ``folder`` or lies below it."""
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def scan_image_folder(root: Path | str, exclude: Sequence[Path | str] = ()) -> FolderScan:
    """List the images of an ImageFolder in a stable (sorted) order.

    A class is the first folder level under ``root``; images may sit deeper
    below it. Hidden files and folders, and anything inside ``exclude`` (for
    example an output folder placed inside the input folder), are left out.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"input folder not found: {root}")
    excluded = [Path(e).resolve() for e in exclude if Path(e).exists()]
    items: list[ImageItem] = []
    classes: list[str] = []
    empty: list[str] = []
    skipped: list[str] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            skipped.append(entry.name)
            continue
        if not entry.is_dir() or any(is_inside(entry, e) for e in excluded):
            continue
        found = 0
        for dirpath, dirnames, filenames in os.walk(entry):
            here = Path(dirpath)
            dirnames[:] = sorted(
                d for d in dirnames if not d.startswith(".") and not any(is_inside(here / d, e) for e in excluded)
            )
            rel_dir = here.relative_to(root).as_posix()  # once per folder: a million files cost seconds, not a minute
            for name in filenames:
                if name.startswith("."):
                    continue
                if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                    items.append(ImageItem(PurePosixPath(f"{rel_dir}/{name}"), root))
                    found += 1
                else:
                    skipped.append(f"{rel_dir}/{name}")
        if found:
            classes.append(entry.name)
        else:
            empty.append(entry.name)
    items.sort(key=_path_order)
    skipped.sort()
    return FolderScan(items=items, classes=classes, empty_classes=empty, skipped_files=skipped)


def _path_order(item: ImageItem) -> tuple[str, ...]:
    """The order of the items' paths (PurePosixPath's own), as plain tuples: ~20x faster to sort."""
    return item.rel.parts


def items_from_list(root: Path | str, list_file: Path | str) -> FolderScan:
    """The images named in ``list_file`` (one path per line, relative to ``root`` or absolute inside it; blank
    lines and ``#`` comments skipped), in the same sorted order a scan gives, without touching the files: for
    datasets too big to scan. A listed file that is missing fails as its item, like an unreadable one."""
    root = Path(root)
    prefix = str(root.resolve()) + os.sep
    rels, skipped = set(), []
    with open(list_file, **TEXT) as lines:
        for line in lines:
            name = line.strip()
            if not name or name.startswith("#"):
                continue
            if os.path.isabs(name):
                if not name.startswith(prefix):
                    skipped.append(name)
                    continue
                name = name[len(prefix):]
            parts = [p for p in name.replace(os.sep, "/").split("/") if p not in ("", ".")]
            if len(parts) < 2 or ".." in parts or any(p.startswith(".") for p in parts) or os.path.splitext(parts[-1])[1].lower() not in IMAGE_EXTENSIONS:
                skipped.append(name)
                continue
            rels.add("/".join(parts))
    items = [ImageItem(PurePosixPath(rel), root) for rel in sorted(rels, key=lambda rel: rel.split("/"))]
    return FolderScan(items=items, classes=sorted({it.rel.parts[0] for it in items}), empty_classes=[], skipped_files=skipped)


def bounding_box(mask: np.ndarray, pad: int = 0, relative_pad: float = 0.0) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the box around a 2-D mask's non-zero pixels, grown on every side by
    ``pad`` px or ``relative_pad`` x the box's larger side, whichever is more, and kept inside
    the mask. An empty mask gives an empty box."""
    flat = np.ascontiguousarray(mask)
    x, y, w, h = cv2.boundingRect(flat.view(np.uint8) if flat.dtype == bool else flat)
    pad = max(pad, int(round(relative_pad * max(w, h))))
    return max(0, y - pad), min(mask.shape[0], y + h + pad), max(0, x - pad), min(mask.shape[1], x + w + pad)


class FolderListing:
    """``exists(path)`` from one listing per folder instead of one ``stat`` per file: checking a million outputs
    takes seconds (the names in the folders looked at are held)."""

    def __init__(self):
        self.names: dict[str, frozenset[str]] = {}

    def __call__(self, path: Path | str) -> bool:
        folder, name = os.path.split(path)
        names = self.names.get(folder)
        if names is None:
            try:
                names = frozenset(os.listdir(folder))
            except OSError:
                names = frozenset()
            self.names[folder] = names
        return name in names


def mirror_path(out_root: Path, rel: PurePosixPath | str, suffix: str | None = None) -> Path:
    """The output path for an input's relative path, optionally with a new suffix (string work: a million of
    these take seconds, not half a minute)."""
    rel = str(rel)
    if suffix is not None:
        rel = os.path.splitext(rel)[0] + suffix
    return Path(os.path.join(out_root, rel))


# --------------------------------------------------------------------------- reading


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> HxWx3 uint8 RGB. 16-bit and float images are rescaled, not clipped."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img)
        if mode == "F":
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        elif mode == "I" and arr.max(initial=0) <= 255:
            scaled = arr
        else:  # 16-bit range
            scaled = arr.astype(np.float64) / 257.0
        gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # Flatten transparency onto black: the pixels of a cut-out keep their colour.
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, 1, P, CMYK (PIL applies the inversion), YCbCr, LAB, HSV
    return np.asarray(img, dtype=np.uint8).copy()


def read_image(path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 RGB array, honouring EXIF orientation.

    Raises ``ImageError`` with a readable reason for empty, truncated, corrupt,
    non-image and oversized files.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError(f"cannot read file: {exc.strerror or exc}") from exc
    if size == 0:
        raise ImageError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageError(f"image too large: {w}x{h} = {w * h:,} pixels (limit {max_pixels:,})")
                img.load()
                # 16-bit 48/64-bit colour PNGs arrive from PIL already reduced to 8 bits.
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image too large: {exc}") from exc
    except Image.DecompressionBombWarning as exc:
        raise ImageError(f"image too large: {exc}") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageError("not an image, or a format PIL cannot read") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        text = str(exc)
        if "truncated" in text.lower():
            raise ImageError("truncated file (image data ends early)") from exc
        raise ImageError(f"corrupt image: {text}") from exc


def image_size(path: Path | str) -> tuple[int, int]:
    """(width, height) after EXIF rotation, read from the header only."""
    with Image.open(path) as img:
        w, h = img.size
        orientation = img.getexif().get(0x0112, 1)
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def read_mask(path: Path | str, expected_hw: tuple[int, int] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a single-channel mask PNG as float32 in [0, 1] (value / 255).

    With ``expected_hw`` a size mismatch raises ``ImageError`` naming both sizes. The size is checked from the
    header, before any pixel is decoded (a small file can hold a huge image).
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"mask missing: {path}")
    try:
        with Image.open(path) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError(f"mask too large: {w}x{h} = {w * h:,} pixels (limit {max_pixels:,})")
            if expected_hw is not None and (h, w) != tuple(expected_hw):
                raise ImageError(f"mask size {w}x{h} does not match image size {expected_hw[1]}x{expected_hw[0]}")
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img).astype(np.float32) / 65535.0
            else:
                arr = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"unreadable mask {path.name}: {exc}") from exc
    if expected_hw is not None and arr.shape != tuple(expected_hw):
        raise ImageError(
            f"mask size {arr.shape[1]}x{arr.shape[0]} does not match image size {expected_hw[1]}x{expected_hw[0]}"
        )
    return arr


# --------------------------------------------------------------------------- writing


_UMASK: int | None = None


def new_file_mode() -> int:
    """The mode a new file gets under this process's umask (0o644 under 022): what every output is given, since a
    temporary file is created 0600 and would keep that mode through its rename. The umask is read once."""
    global _UMASK
    if _UMASK is None:
        _UMASK = _read_umask()
    return 0o666 & ~_UMASK


def _read_umask() -> int:
    """The umask, read without changing it where the system says it (Linux); else set and put back at once, to the
    stricter 077 meanwhile, so a file another thread creates then is never more open than it should be."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either absent or complete."""
    with atomic_file(path) as fh:
        fh.write(data)


@contextmanager
def atomic_file(path: Path | str, mode: str = "wb", **open_args) -> Iterator[IO]:
    """A file to write ``path`` through, piece by piece: it is a temporary file until the block ends, then renamed,
    so ``path`` is either absent or complete (an error or a kill leaves only a temporary file behind). The file
    gets the mode the user's umask gives a new file (``new_file_mode``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
    try:
        os.fchmod(fd, new_file_mode())
        with os.fdopen(fd, mode, **open_args) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def encode_image(array: np.ndarray, fmt: str, quality: int = 95) -> bytes:
    """Encode an RGB (HxWx3) or gray (HxW) uint8 array; fmt is a suffix like '.png' (see ``IMAGE_FORMATS``)."""
    image_fmt = image_format(fmt)
    img = Image.fromarray(np.ascontiguousarray(array))
    buf = io.BytesIO()
    img.save(buf, format=image_fmt.encoder, **image_fmt.save_options(quality))
    return buf.getvalue()


def write_image_atomic(path: Path | str, array: np.ndarray, quality: int = 95) -> None:
    """Encode by the path's suffix and write atomically."""
    path = Path(path)
    write_bytes_atomic(path, encode_image(array, path.suffix, quality=quality))


def encode_mask_png(mask: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    """A single-channel 8-bit PNG of a mask. Float input in [0, 1] is scaled to 0..255; ``text`` goes into tEXt
    chunks before the pixels (Latin-1 keys and values; ``read_mask_text`` reads them back from the header alone).

    Written directly: every row with PNG's "Up" filter (masks change little from row to
    row) and zlib's run-length strategy. About 2x faster than OpenCV's encoder with its
    own RLE strategy and 3x faster than PIL, for files within 5% of their size (measured
    on soft masks); decoders see an ordinary PNG.
    """
    if mask.dtype != np.uint8:
        mask = np.clip(np.rint(np.asarray(mask, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"a mask must be a non-empty 2-D array, got shape {mask.shape}")
    h, w = mask.shape
    rows = np.empty((h, w + 1), np.uint8)
    rows[:, 0] = 2  # filter type Up: each byte minus the byte above it
    rows[0, 1:] = mask[0]
    np.subtract(mask[1:], mask[:-1], out=rows[1:, 1:])  # uint8 arithmetic wraps modulo 256, as PNG wants
    deflate = zlib.compressobj(6, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    data = deflate.compress(rows.tobytes()) + deflate.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # 8-bit grayscale, no interlace
    notes = b"".join(chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1")) for key, value in (text or {}).items())
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + notes + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def write_mask_atomic(path: Path | str, mask: np.ndarray, text: dict[str, str] | None = None) -> None:
    """Write a mask as a single-channel 8-bit PNG (see ``encode_mask_png``; ``text``: its tEXt notes), atomically."""
    write_bytes_atomic(path, encode_mask_png(mask, text))


def read_mask_text(path: Path | str) -> dict[str, str]:
    """The tEXt notes of a mask PNG, read from its header (no pixel is decoded); {} for a file that holds none
    or cannot be read."""
    try:
        with Image.open(path) as img:
            # ``info`` holds the notes before the pixels as the header is read (``text`` would decode the image)
            return {k: v for k, v in img.info.items() if isinstance(k, str) and isinstance(v, str)} if img.format == "PNG" else {}
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return {}


def remove_stale_temp_files(folder: Path | str) -> int:
    """Delete temp files a killed run left behind below ``folder``; returns how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for tmp in folder.rglob(TEMP_PREFIX + "*"):
        try:
            tmp.unlink()
            removed += 1
        except OSError:
            pass
    return removed


# --------------------------------------------------------------------------- previews


def overlay_mask(image: np.ndarray, mask: np.ndarray, outline=(255, 230, 0)) -> np.ndarray:
    """Preview of a soft mask (in [0, 1]): background dimmed, the 0.5 contour drawn in yellow."""
    alpha = np.clip(mask, 0, 1)[:, :, None]
    shown = image.astype(np.float32) * (0.3 + 0.7 * alpha)
    out = np.clip(shown, 0, 255).astype(np.uint8)
    contours, _ = cv2.findContours((mask >= 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, outline, max(1, round(max(mask.shape) / 160)))
    return out


def spread_sample(items: Sequence, count: int) -> list:
    """At most ``count`` items evenly spaced over ``items`` (so a preview shows every class, not the first one)."""
    if len(items) <= count:
        return list(items)
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)] if count > 1 else [items[0]]


def preview_grid(tiles: Iterable[np.ndarray], tile_size: int = 160, columns: int = 6, gap: int = 4,
                 captions: Sequence[str] | None = None) -> np.ndarray:
    """Lay RGB tiles (each scaled to fit a square ``tile_size`` cell) out in a grid; ``captions``: a line of text
    written over the top of each tile."""
    tiles = list(tiles)
    if not tiles:
        raise ValueError("no tiles for the preview")
    rows = (len(tiles) + columns - 1) // columns
    cols = min(columns, len(tiles))
    canvas = np.full((rows * (tile_size + gap) + gap, cols * (tile_size + gap) + gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        h, w = tile.shape[:2]
        scale = tile_size / max(h, w)
        img = Image.fromarray(tile).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
        arr = np.asarray(img)
        r, c = divmod(i, columns)
        y = gap + r * (tile_size + gap) + (tile_size - arr.shape[0]) // 2
        x = gap + c * (tile_size + gap) + (tile_size - arr.shape[1]) // 2
        canvas[y : y + arr.shape[0], x : x + arr.shape[1]] = arr
        if captions is not None and captions[i]:
            _caption(canvas, captions[i], gap + c * (tile_size + gap), gap + r * (tile_size + gap), tile_size)
    return canvas


def _caption(canvas: np.ndarray, text: str, x: int, y: int, width: int) -> None:
    """A line of white text on a dark band at (x, y), cut to ``width`` pixels."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.38
    while len(text) > 1 and cv2.getTextSize(text, font, scale, 1)[0][0] > width - 4:
        text = text[:-2] + "~"
    canvas[y : y + 14, x : x + width] = (canvas[y : y + 14, x : x + width] * 0.25).astype(np.uint8)
    cv2.putText(canvas, text, (x + 2, y + 10), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
