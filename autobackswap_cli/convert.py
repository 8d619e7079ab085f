"""``convert-model``: an old-style model file (pickle or TorchScript) rewritten as safetensors weights with a JSON
description, read without pickle from then on."""

from __future__ import annotations

from pathlib import Path

from .classifier import MODEL_FORMAT, load_classifier
from .engine import StepError, check_outputs
from .formats.model_files import SAFETENSORS, existing_file, file_kind, is_torchscript, save_model
from .segmenter.model import load_segmenter, save_checkpoint


def convert_model(source: Path, target: Path | None = None) -> tuple[Path, str]:
    """Rewrite an old-style segmenter (``torch.save``) or classifier (TorchScript from ``train-classifier``) as a
    safetensors model file; ``target`` defaults to SOURCE with the suffix ``.safetensors``. Returns (target, kind)."""
    source = existing_file(source, "model file")
    target = Path(target) if target else source.with_suffix(".safetensors")
    check_outputs([source], files=[("-o", target)])
    if file_kind(source) == SAFETENSORS:
        raise StepError(f"{source} is already a safetensors model file")
    if is_torchscript(source):
        model = load_classifier(source, device="cpu", torchscript=True)
        state = {k: v for k, v in model.module.state_dict().items()}
        if not model.classes or "0.weight" not in state:
            raise StepError(f"{source} is not a classifier made by `autobackswap train-classifier`; nothing to convert")
        description = {"format": MODEL_FORMAT, "format_version": 2, "arch": "small-cnn", "width": int(state["0.weight"].shape[0]),
                       "classes": model.classes, "image_size": model.image_size, "converted_from": str(source)}
        save_model(target, state, description)
        return target, "classifier"
    model, meta = load_segmenter(source)
    save_checkpoint(target, model, int(meta["image_size"]), meta.get("options", {}), meta.get("metrics", {}),
                    extra={k: v for k, v in meta.items() if k in ("labels", "val_items", "thresholds")} | {"converted_from": str(source)})
    return target, "segmenter"
