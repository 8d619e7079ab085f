"""``train-classifier``: a small CPU-friendly CNN, just enough to see what a dataset teaches.

Not a training framework: it reads an ImageFolder (``compose`` output is one; its
manifest.csv and autobackswap.json are ignored), trains a ~60k-parameter CNN from
scratch with flips and shifts, and writes ONE safetensors file that ``evaluate`` reads
(see model_files). Its description names the architecture, class names and input size.

Input convention, for our models and for any model ``evaluate`` loads: RGB resized
(squashed) to S x S, scaled to [0, 1], normalised with the ImageNet mean and std.
"""

from __future__ import annotations

import json
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .engine import (Dataset, StepError, as_dataset, build_record, check_outputs, console, make_progress, model_record_path, read_items,
                     record_interrupted_training, resolve_device, status_of, write_run_record)
from .images import read_image
from .formats.descriptions import check_classifier
from .formats.model_files import (SAFETENSORS, TORCH_ZIP, check_finite, check_shapes, deprecated, file_kind, is_torchscript, read_header, read_state_dict,
                          read_tensors, save_model)
from .nets import IMAGENET_MEAN, IMAGENET_STD, imagenet_normalise

META_FILE = "autobackswap.json"
MODEL_FORMAT = "autobackswap-classifier"
DEFAULT_FOREIGN_SIZE = 224  # input side for models that do not say (torchvision's)


@dataclass
class ClassifierOptions:
    epochs: int = 50
    batch_size: int = 32
    lr: float = 1e-2
    weight_decay: float = 5e-4
    image_size: int = 64
    width: int = 16  # channels of the first block; doubled twice
    max_shift: float = 0.125  # random shift, as a share of the side
    seed: int = 0
    device: str = "auto"


@dataclass
class TrainedClassifier:
    path: Path
    classes: list[str]
    images: int
    train_accuracy: float
    failures: list[dict]


def build_small_cnn(num_classes: int, width: int = 32) -> nn.Sequential:
    """Four conv-BN-ReLU blocks (three max-pools), global average pooling, one linear layer."""
    channels = [3, width, 2 * width, 4 * width, 4 * width]
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate(zip(channels, channels[1:])):
        layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        if i < len(channels) - 2:
            layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels[-1], num_classes)]
    return nn.Sequential(*layers)


def square(image: np.ndarray, size: int) -> np.ndarray:
    """An RGB array of any size squashed to size x size (area resampling)."""
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def to_uint8_batch(squares: Sequence[np.ndarray]) -> torch.Tensor:
    """Equal-size H x W x 3 uint8 arrays -> N x 3 x H x W uint8 tensor."""
    return torch.from_numpy(np.stack(squares)).permute(0, 3, 1, 2).contiguous()


def normalise(x: torch.Tensor) -> torch.Tensor:
    """uint8 (or [0, 255] float) N x 3 x S x S -> ImageNet-normalised float."""
    return imagenet_normalise(x.float() / 255.0)


@contextmanager
def _no_torchscript_deprecation_warning() -> Iterator[None]:
    """TorchScript is the one file format users can load anywhere; recent torch flags it as deprecated."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


# --------------------------------------------------------------------------- loading any classifier


@dataclass
class Classifier:
    """A model ready to predict, plus how to feed it; ``classes`` is None when the file does not name them."""

    name: str
    source: str
    module: torch.nn.Module
    classes: list[str] | None
    image_size: int
    device: torch.device

    def output_width(self) -> int:
        """How many classes the model scores (one forward pass on a black image)."""
        with torch.inference_mode():
            return int(self.module(torch.zeros(1, 3, self.image_size, self.image_size, device=self.device)).shape[1])

    def predict(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Class indices for RGB uint8 arrays of any size."""
        x = normalise(to_uint8_batch([square(im, self.image_size) for im in images]).to(self.device))
        with torch.inference_mode():
            logits = self.module(x)
        return logits.argmax(dim=1).cpu().numpy()


def load_classifier(path: Path | None = None, arch: str | None = None, weights: Path | None = None, num_classes: int | None = None,
                    image_size: int | None = None, device: str = "auto", torchscript: bool = False) -> Classifier:
    """A model file ``train-classifier`` wrote, a torchvision ``arch`` with a local state dict (``weights``), or,
    with ``torchscript=True`` only, a TorchScript file from another tool.

    Weights are never downloaded: ``arch`` is built with random weights and then loaded from ``weights``.
    """
    dev = resolve_device(device)
    if weights and not arch:
        raise StepError("--weights FILE needs --arch NAME (the torchvision model the state dict belongs to)")
    if arch:
        if not weights:
            raise StepError("--arch needs --weights FILE (a local state dict); weights are never downloaded")
        module = _torchvision_model(arch, Path(weights), num_classes)
        meta: dict = {}
        source, name = f"{arch} + {weights}", Path(weights).stem
    else:
        path = Path(path)
        if not path.is_file():
            raise StepError(f"model file not found: {path}")
        module, meta = _read_model_file(path, dev, torchscript)
        source, name = str(path), path.stem
    size = image_size or meta.get("image_size") or DEFAULT_FOREIGN_SIZE
    return Classifier(name=name, source=source, module=module.to(dev).eval(), classes=meta.get("classes"), image_size=int(size), device=dev)


def _read_model_file(path: Path, device: torch.device, torchscript: bool) -> tuple[nn.Module, dict]:
    """The module and description of a classifier file: ours (safetensors; an old TorchScript one with a
    deprecation note), or a foreign TorchScript file when the user opted in."""
    kind = file_kind(path)
    if kind == SAFETENSORS:
        header, meta = read_header(path, "model")
        if meta.get("format") != MODEL_FORMAT or meta.get("arch") != "small-cnn":
            raise StepError(f"{path} is not a classifier made by `autobackswap train-classifier` "
                            f"(its description says {meta.get('format')!r}); for other weights use --arch NAME --weights FILE")
        check_classifier(meta, path)
        module = build_small_cnn(len(meta["classes"]), int(meta["width"]))
        check_shapes(header, module.state_dict(), "model", path)
        try:
            module.load_state_dict(check_finite(read_tensors(path, "model"), "model", path))
        except RuntimeError as exc:
            raise StepError(f"{path}: its weights do not fit its description: {str(exc).strip().splitlines()[0]}") from None
        return module, meta
    if kind == TORCH_ZIP and is_torchscript(path):
        ours = _has_our_description(path)
        if not (ours or torchscript):
            raise StepError(f"{path} is a TorchScript model from another tool. TorchScript is deprecated by PyTorch and "
                            f"the file carries code that would run here; to load it anyway, pass it with --torchscript {path}")
        if ours and not torchscript:
            deprecated(path)
        extra = {META_FILE: ""}
        try:
            with _no_torchscript_deprecation_warning():
                module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
        except (RuntimeError, ValueError) as exc:
            raise StepError(f"{path} is a damaged TorchScript file: {str(exc).strip().splitlines()[0]}") from None
        return module, json.loads(extra[META_FILE]) if extra[META_FILE] else {}
    if kind == TORCH_ZIP:
        raise StepError(f"{path} holds weights only (a state dict); name the architecture: --arch NAME --weights {path}")
    raise StepError(f"{path} is not a model file (train-classifier writes safetensors; a foreign TorchScript model "
                    f"goes in with --torchscript FILE)")


def _has_our_description(path: Path) -> bool:
    """A TorchScript file made by ``train-classifier`` before 0.2 (it carries ``extra/autobackswap.json``)."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        return any(name.endswith(f"/extra/{META_FILE}") for name in z.namelist())


def _torchvision_model(arch: str, weights: Path, num_classes: int | None) -> nn.Module:
    import torchvision

    if arch not in torchvision.models.list_models():
        raise StepError(f"--arch {arch!r} is not a torchvision model name (e.g. resnet18, efficientnet_b0)")
    if not weights.is_file():
        raise StepError(f"weights file not found: {weights}")
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes or 1000)
    try:
        model.load_state_dict(read_state_dict(weights))
    except (RuntimeError, KeyError, TypeError) as exc:
        raise StepError(f"{weights} does not fit {arch} with {num_classes} classes: {str(exc).strip().splitlines()[0]}") from None
    return model


# --------------------------------------------------------------------------- training


def _read_dataset(dataset: Dataset, size: int, progress: bool) -> tuple[torch.Tensor, torch.Tensor, list[str], list[dict]]:
    """Every readable image of DATA resized to size x size, its class index, the classes, and the unreadable files.
    Classes come from the dataset's layout (``--class-level`` / ``--metadata``; default: the first folder)."""
    data_dir = dataset.root
    if not data_dir.is_dir():
        raise StepError(f"input folder not found: {data_dir}")
    scan, notes = dataset.scan()
    for note in notes:
        console.print(f"[yellow]warning:[/] {note}")
    if len(scan.classes) < 2:
        raise StepError(f"{data_dir} needs at least two classes with images (found: {', '.join(scan.classes) or 'none'})")
    images, targets, failures = [], [], []
    for item, image in read_items(scan.items, lambda it: square(read_image(it.path), size), failures, progress=progress):
        images.append(image)
        targets.append(scan.classes.index(item.cls))
    if not images:
        raise StepError(f"no readable images in {data_dir}")
    return to_uint8_batch(images), torch.tensor(targets), scan.classes, failures


def _augment(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and shifts (reflect-padded crops) of a uint8 batch; float out."""
    flip = torch.rand(len(x), generator=gen) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x).float()
    if not max_shift:
        return x
    size = x.shape[-1]
    padded = F.pad(x, (max_shift,) * 4, mode="reflect")
    offsets = torch.randint(0, 2 * max_shift + 1, (len(x), 2), generator=gen).tolist()
    return torch.stack([padded[i, :, dy : dy + size, dx : dx + size] for i, (dy, dx) in enumerate(offsets)])


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, batch_size: int) -> float:
    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            logits = model(normalise(x[start : start + batch_size].to(device)))
            correct += int((logits.argmax(1).cpu() == y[start : start + batch_size]).sum())
    return correct / len(x)


def _fit(model: nn.Module, x_all: torch.Tensor, y_all: torch.Tensor, optimiser, scheduler, opts: ClassifierOptions,
         gen: torch.Generator, device: torch.device, progress: bool) -> None:
    """The training epochs, with a progress bar."""
    max_shift = round(opts.max_shift * opts.image_size)
    with make_progress(enabled=progress) as bar:
        task = bar.add_task("train-classifier", total=opts.epochs, status="")
        for _ in range(opts.epochs):
            model.train()
            order = torch.randperm(len(x_all), generator=gen)
            total, correct = 0.0, 0
            for start in range(0, len(order), opts.batch_size):
                sel = order[start : start + opts.batch_size]
                logits = model(normalise(_augment(x_all[sel], max_shift, gen).to(device)))
                target = y_all[sel].to(device)
                loss = F.cross_entropy(logits, target)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                scheduler.step()
                total += loss.item() * len(sel)
                correct += int((logits.argmax(1) == target).sum())
            bar.update(task, advance=1, status=f"loss {total / len(x_all):.3f} · train acc (augmented) {correct / len(x_all):.3f}")


def train_classifier(dataset: Dataset | Path, out_path: Path, opts: ClassifierOptions, progress: bool = True) -> TrainedClassifier:
    """Train the small CNN on DATA (a folder, or a ``Dataset`` with its class rule) and write it to ``out_path`` as
    safetensors with its description (plus ``out_path.json``, the run record)."""
    t0 = time.perf_counter()
    dataset = as_dataset(dataset)
    data_dir, metadata = dataset.root, dataset.layout.metadata
    check_outputs([Path(metadata) if metadata else None], files=[("-o", Path(out_path))], data_dir=Path(data_dir))
    device = resolve_device(opts.device)
    torch.manual_seed(opts.seed)
    gen = torch.Generator().manual_seed(opts.seed)
    x_all, y_all, classes, failures = _read_dataset(dataset, opts.image_size, progress)

    model = build_small_cnn(len(classes), opts.width).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    steps_per_epoch = (len(x_all) + opts.batch_size - 1) // opts.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=opts.lr, total_steps=opts.epochs * steps_per_epoch, pct_start=0.2)
    out_path = Path(out_path)
    try:
        _fit(model, x_all, y_all, optimiser, scheduler, opts, gen, device, progress)
    except KeyboardInterrupt as exc:
        raise record_interrupted_training(
            out_path, "train-classifier", exc, options={**asdict(opts), "layout": dataset.layout.recorded()},
            counts={"images": len(x_all), "failed": len(failures)}, wall_time_s=time.perf_counter() - t0, failures=failures) from None

    train_accuracy = _accuracy(model, x_all, y_all, device, 128)
    options = {**asdict(opts), "device_used": str(device), "layout": dataset.layout.recorded()}
    meta = {"format": MODEL_FORMAT, "format_version": 2, "arch": "small-cnn", "width": opts.width, "classes": classes, "image_size": opts.image_size,
            "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
            "data": str(data_dir), "options": options, "train_accuracy": round(train_accuracy, 5)}
    save_model(out_path, model.cpu().state_dict(), meta)
    write_run_record(model_record_path(out_path), build_record(
        "train-classifier", status=status_of(len(failures)), options=options, counts={"images": len(x_all), "failed": len(failures)},
        wall_time_s=time.perf_counter() - t0, failures=failures, model=str(out_path),
        **{k: v for k, v in meta.items() if k != "options"}))
    return TrainedClassifier(out_path, classes, len(x_all), train_accuracy, failures)
