"""Model files: safetensors weights with a JSON description, read without pickle. ONE room for every model file
the package writes or reads (segmenters, classifiers, ``--weights`` state dicts).

A model file is a plain safetensors file. Its header's ``__metadata__["autobackswap"]`` holds the description as
JSON: ``format`` (what kind of model), the architecture, classes, preprocessing (input size, mean, std) and how it
was trained. Loading builds the architecture from the description and copies the tensors in; no code in the file
ever runs. ``safetensors`` (Hugging Face) reads it from any language.

Older files still load, with a deprecation note: ``torch.save`` checkpoints (read with torch's weights-only
unpickler, which refuses code) and TorchScript classifiers made by ``train-classifier`` before 0.2.
``autobackswap convert-model OLD`` (``convert``) rewrites one as a safetensors file.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import torch

from ..engine import StepError, console
from ..images import write_bytes_atomic

METADATA_KEY = "autobackswap"
SAFETENSORS, TORCH_ZIP, UNKNOWN = "safetensors", "torch zip", "unknown"
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


def save_model(path: Path, state_dict: dict, description: dict) -> None:
    """Write ``state_dict`` (tensors) and ``description`` (JSON-able) as one safetensors file, atomically."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    write_bytes_atomic(Path(path), save(tensors, metadata={METADATA_KEY: json.dumps(description, default=str)}))


def file_kind(path: Path) -> str:
    """``safetensors``, ``torch zip`` (``torch.save`` or TorchScript) or ``unknown``, from the first bytes."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04":
        return TORCH_ZIP
    if len(head) == 9 and 0 < struct.unpack("<Q", head[:8])[0] <= _MAX_HEADER and head[8:9] == b"{":
        return SAFETENSORS
    return UNKNOWN


def read_header(path: Path, what: str) -> tuple[dict, dict]:
    """The tensor entries (name -> dtype, shape, data_offsets) and the description of a safetensors model file,
    from its header alone: the body is not read, so a damaged or hostile file costs at most the header's 100 MB.
    Every problem is a ``StepError`` naming the file."""
    path = existing_file(path, what)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            if not 0 < length <= _MAX_HEADER:
                raise ValueError("no safetensors header")
            header = _json(f.read(length))
        body = path.stat().st_size - 8 - length
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        for name, entry in header.items():
            start, end = entry["data_offsets"]
            if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= body):
                raise ValueError(f"tensor {name} lies outside the file")
        description = _json(metadata[METADATA_KEY]) if METADATA_KEY in metadata else {}
    except (ValueError, KeyError, TypeError, AttributeError, struct.error, OSError) as exc:
        raise StepError(f"{what} {path} is damaged or not a safetensors file: {_first_line(exc)}") from None
    if not isinstance(description, dict):
        raise StepError(f"{what} {path}: its description must be a JSON object; got {type(description).__name__}")
    return header, description


def _json(text: bytes | str):
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


# torch dtype -> the dtype name a safetensors header gives it
_SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "int64": "I64", "int32": "I32",
                       "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}


def check_shapes(header: dict, expected: dict, what: str, path: Path) -> None:
    """The file's tensors (from ``read_header``) have exactly the names, shapes and dtypes of ``expected`` (a
    model's state dict), checked before the body is read."""
    found = {name: tuple(entry.get("shape") or ()) for name, entry in header.items()}
    wanted = {name: tuple(t.shape) for name, t in expected.items()}
    if found == wanted:
        for name, tensor in expected.items():
            dtype = _SAFETENSORS_DTYPES.get(str(tensor.dtype).replace("torch.", ""))
            if dtype is not None and header[name].get("dtype") != dtype:
                raise StepError(f"{what} {path}: its weights do not fit its description: {name} is {header[name].get('dtype')}, "
                                f"expected {dtype}")
        return
    missing, unexpected = sorted(set(wanted) - set(found)), sorted(set(found) - set(wanted))
    wrong = sorted(n for n in set(found) & set(wanted) if found[n] != wanted[n])
    detail = (f"{len(missing)} missing (e.g. {', '.join(missing[:2])})" if missing else
              f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:2])})" if unexpected else
              f"{wrong[0]} is {list(found[wrong[0]])}, expected {list(wanted[wrong[0]])}")
    raise StepError(f"{what} {path}: its weights do not fit its description: {detail}")


def read_tensors(path: Path, what: str) -> dict:
    """The tensors of a safetensors file, on the CPU (memory-mapped while read: no second copy of the file)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, ValueError, OSError) as exc:
        raise StepError(f"{what} {path} is damaged or not a safetensors file: {_first_line(exc)}") from None


def check_finite(tensors: dict, what: str, path: Path) -> dict:
    """``tensors`` when every floating-point value is finite; a NaN or an infinity (a diverged training, a damaged
    file) is a ``StepError`` naming the tensor: such a model would write nothing but empty masks."""
    import torch

    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise StepError(f"{what} {path}: its weights hold NaN or infinite values ({name}); the training diverged or the "
                            f"file is damaged: train it again")
    return tensors


def read_model(path: Path, what: str) -> tuple[dict, dict]:
    """The tensors (on the CPU) and the description of a safetensors model file; ``what`` names the model in
    errors. The header is checked before the body is read."""
    _, description = read_header(path, what)
    return read_tensors(Path(path), what), description


def read_state_dict(path: Path, what: str = "--weights") -> dict:
    """A plain state dict from a safetensors file or a ``torch.save`` file (weights-only: no code runs); a
    ``{"state_dict": ...}`` wrapper is unwrapped. For ``--weights`` files made by other tools."""
    path = existing_file(path, what)
    kind = file_kind(path)
    if kind == SAFETENSORS:
        return read_model(path, what)[0]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise StepError(f"{what} {path} is not a safetensors or PyTorch weights file: {_first_line(exc)}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise StepError(f"{what} {path} does not hold a state dict (names -> tensors)")
    return state


def read_legacy_checkpoint(path: Path, what: str) -> dict:
    """A pre-0.2 ``torch.save`` checkpoint (a dict), read with the weights-only unpickler, with a deprecation note."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise StepError(f"{what} {path} is damaged or not a model file: {_first_line(exc)}") from None
    deprecated(path)
    return ckpt


def deprecated(path: Path) -> None:
    console.print(f"[yellow]note:[/] {path} is an old-style model file (pickle/TorchScript); it still loads, but a later "
                  f"version will stop reading it. Convert it once: autobackswap convert-model {path}")


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive (a zip with ``code/``), told apart from a ``torch.save`` zip without loading it."""
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in name for name in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def existing_file(path: Path, what: str) -> Path:
    """``path`` as a Path, when it is a file; else a ``StepError`` naming ``what`` is not found."""
    path = Path(path)
    if not path.is_file():
        raise StepError(f"{what} not found: {path}")
    return path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
