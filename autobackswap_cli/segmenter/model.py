"""The secondary network: a backbone from a registry plus a per-patch head on the P x P grid.

Adding a backbone is an entry in ``backbones.py`` (its name, description, stride
and training defaults: the command line's choices and help) and one ``register``
call here: a function that builds the network and how to cut it to a feature
extractor at that stride (or a whole segmenter of its own). Pretrained weights are
opt-in and never downloaded silently: ``--pretrained`` goes through torchvision's
cache (a download happens only if the network allows; otherwise a clear error),
``--weights FILE`` loads a local state dict.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..engine import StepError
from ..formats.descriptions import check_segmenter
from ..formats.model_files import (SAFETENSORS, TORCH_ZIP, check_finite, check_shapes, file_kind, is_torchscript, read_header, read_legacy_checkpoint,
                           read_state_dict, read_tensors, save_model)
from ..nets import IMAGENET_MEAN, IMAGENET_STD
from .backbones import BACKBONE_INFO, BackboneInfo

CHECKPOINT_FORMAT = "autobackswap-segmenter"
CHECKPOINT_VERSION = 2  # 2: safetensors + JSON description; 1: torch.save (still read)


@dataclass(frozen=True)
class Backbone(BackboneInfo):
    """A name of ``backbones.py`` with its network: a torchvision model (or our own) and how to cut it to a
    feature extractor, or a whole segmenter of its own."""

    build: Callable[[], nn.Module] | None = None  # the full torchvision model (or our own), random init
    truncate: Callable[[nn.Module], nn.Module] | None = None  # full model -> feature extractor at `stride`
    # A whole segmenter of its own (grid, with its shipped weights?) -> model, for a backbone that is not a plain
    # feature extractor under the patch head (u2netp: pixel logits); build/truncate are then None.
    # With the names of a checkpoint's tensors (else None: the newest layout), so older files still load.
    segmenter: Callable[[int, bool, set[str] | None], nn.Module] | None = None


BACKBONES: dict[str, Backbone] = {}


def register(name: str, build: Callable[[], nn.Module] | None = None, truncate: Callable[[nn.Module], nn.Module] | None = None,
             segmenter: Callable[[int, bool, set[str] | None], nn.Module] | None = None) -> None:
    """The network of backbone ``name`` (named, described and given its defaults in ``backbones.BACKBONE_INFO``)."""
    if name not in BACKBONE_INFO:
        raise ValueError(f"backbone {name!r} is not in segmenter/backbones.py's BACKBONE_INFO; add it there first")
    info = BACKBONE_INFO[name]
    BACKBONES[name] = Backbone(**{f.name: getattr(info, f.name) for f in fields(BackboneInfo)}, build=build, truncate=truncate,
                               segmenter=segmenter)


def backbone_spec(name: str) -> Backbone:
    """The registry entry of ``name``; an unknown name is a StepError listing the known ones."""
    if name not in BACKBONES:
        raise StepError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name]


def _conv_bn(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """A ~0.3M-parameter CNN at stride 8, trained from scratch in minutes on a CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn(3, 32, stride=2),
            _conv_bn(32, 32),
            _conv_bn(32, 64, stride=2),
            _conv_bn(64, 64),
            _conv_bn(64, 96, stride=2),
            _conv_bn(96, 96, dilation=2),
            _conv_bn(96, 96, dilation=4),
            _conv_bn(96, 96, dilation=8),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _tv(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        return torchvision.models.get_model(name, weights=None)

    return build


def _resnet_trunk(m: nn.Module) -> nn.Module:
    return nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3)


def _stretched_logit(logits: torch.Tensor) -> torch.Tensor:
    """The fused saliency min-max stretched per image, as a logit: u^2-net-p often finds the right object but
    only at P 0.3-0.5 (rembg stretches its output the same way)."""
    p = torch.sigmoid(logits[:, :1])
    low, high = p.amin((2, 3), keepdim=True), p.amax((2, 3), keepdim=True)
    q = ((p - low) / (high - low + 1e-4)).clamp(1e-3, 1 - 1e-3)
    return torch.log(q / (1 - q))


class SalientSegmenter(nn.Module):
    """U^2-Net-p's salient-object logits, corrected by what the patch labels teach: pixel logits at the input's size.

    U^2-Net-p (its weights ship with the package) is frozen: it gives the outline, pixel-accurate. A head at
    stride 8 learns a correction (keep this salient object, drop that one, add the part it missed) from four
    things: U^2-Net-p's decoder features (strides 8 and 16), its saliency, EfficientNet-Lite0's ImageNet features
    (strides 16 and 32, frozen: what kind of thing a region is, which a few hundred labels cannot teach for objects
    they never showed), and a small image branch trained from scratch that learns what the data set's objects and
    backgrounds look like. A 1x1 mix re-weighs the seven side outputs and the stretched saliency (how far the
    outline reaches). The mix starts as the stretched saliency and the correction at zero: an untrained model is
    U^2-Net-p as rembg uses it. Trained through the patch labels pooled to the grid (train.py), so no pixel label
    is ever needed. ``semantic=False`` is the model without EfficientNet-Lite0 (how older checkpoints load)."""

    # Training drops this share of the frozen feature maps (whole channels) before the head: with ~12 objects per
    # class in the labels, a head that can lean on any one feature learns those objects, not the class
    # (held-out-object photos, seed-1 set: mean IoU 0.894 -> 0.900, with distractors 0.743 -> 0.773).
    FEATURE_DROPOUT = 0.3
    SALIENCY_CHANNELS = 64 + 64  # U^2-Net-p's decoder features at strides 8 and 16, first in ``encode``'s features

    def __init__(self, grid: int, shipped_weights: bool = True, semantic: bool = True) -> None:
        super().__init__()
        from . import efficientnet_lite
        from .u2netp import U2NetP, pretrained

        self.backbone_name, self.grid, self.semantic = "u2netp", grid, semantic
        self.saliency = pretrained() if shipped_weights else U2NetP()
        self.saliency.requires_grad_(False)
        semantic_channels = 0
        if semantic:
            self.semantics = efficientnet_lite.pretrained() if shipped_weights else efficientnet_lite.EfficientNetLite0()
            self.semantics.requires_grad_(False)
            self.semantic_reduce = nn.Sequential(nn.Conv2d(sum(efficientnet_lite.FEATURE_CHANNELS.values()), 64, 1, bias=False),
                                                 nn.BatchNorm2d(64), nn.ReLU(inplace=True))
            semantic_channels = 64
        self.feature_dropout = nn.Dropout2d(self.FEATURE_DROPOUT)  # active in training mode only
        self.image_branch = nn.Sequential(_conv_bn(3, 16, 2), _conv_bn(16, 32, 2), _conv_bn(32, 32, 2), _conv_bn(32, 32, dilation=2))
        self.head = nn.Sequential(_conv_bn(self.SALIENCY_CHANNELS + 2 + 32 + semantic_channels, 64), _conv_bn(64, 64), nn.Conv2d(64, 1, 1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        self.mix = nn.Conv2d(8, 1, 1)
        with torch.no_grad():
            self.mix.weight.zero_()
            self.mix.weight[0, 7] = 1.0
            self.mix.bias.zero_()

    def train(self, mode: bool = True) -> "SalientSegmenter":
        super().train(mode)
        self.saliency.eval()  # frozen, always in inference mode
        if self.semantic:
            self.semantics.eval()
        return self

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the frozen parts give (training caches it): the 7 saliency logits at full size, and features at
        stride 8 (U^2-Net-p's, then EfficientNet-Lite0's, upsampled)."""
        with torch.no_grad():
            fused, sides, features = self.saliency(x)
            size = features[8].shape[-2:]
            maps = [features[8], features[16]]
            if self.semantic:
                # ImageNet-normalised (as every backbone here is fed) -> [-1, 1], as the Lite weights were trained
                mean, std = (torch.tensor(v, device=x.device, dtype=x.dtype).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
                maps += list(self.semantics((x * std + mean) * 2 - 1).values())
            upsampled = [m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps]
            return torch.cat([fused, sides], 1), torch.cat(upsampled, 1)

    def decode(self, logits: torch.Tensor, features: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Pixel logits from ``encode``'s outputs and the (normalised) input ``x``."""
        stretched = _stretched_logit(logits)
        size = features.shape[-2:]
        saliency = F.adaptive_avg_pool2d(torch.sigmoid(torch.cat([logits[:, :1], stretched], 1)), size)
        looks = F.adaptive_avg_pool2d(self.image_branch(x), size)
        features = self.feature_dropout(features)
        if self.semantic:
            own = self.SALIENCY_CHANNELS
            features = torch.cat([features[:, :own], self.semantic_reduce(features[:, own:])], 1)
        correction = self.head(torch.cat([features, saliency, looks], 1))
        correction = F.interpolate(correction, size=logits.shape[-2:], mode="bilinear", align_corners=False)
        return (self._mixed(torch.cat([logits, stretched], 1)) + correction)[:, 0]

    def _mixed(self, maps: torch.Tensor) -> torch.Tensor:
        """``self.mix(maps)`` as a weighted sum of the channels: the same numbers, but a convolution with one
        output channel at full size is slow on a CPU (forward and backward: ~100 ms against ~6 ms a batch of 16 at
        160 px, a quarter of a training step)."""
        return (maps * self.mix.weight.view(1, -1, 1, 1)).sum(1, keepdim=True) + self.mix.bias.view(1, 1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(*self.encode(x), x)

    def forward_with_saliency(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward``'s pixel logits, and the stretched saliency logits the model started from (B x H x W each):
        the mask's confidence compares the two."""
        logits, features = self.encode(x)
        return self.decode(logits, features, x), _stretched_logit(logits)[:, 0]


register("u2netp", segmenter=lambda grid, shipped, names=None: SalientSegmenter(
    grid, shipped, semantic=names is None or any(n.startswith("semantics.") for n in names)))
register("small-cnn", SmallCNN, lambda m: m)
register("efficientnet_b0", _tv("efficientnet_b0"), lambda m: m.features[:6])
register("resnet18", _tv("resnet18"), _resnet_trunk)
register("resnet50", _tv("resnet50"), _resnet_trunk)
register("mobilenet_v3_large", _tv("mobilenet_v3_large"), lambda m: m.features[:13])
if set(BACKBONES) != set(BACKBONE_INFO):  # pragma: no cover - a name in backbones.py without its network here
    raise ImportError(f"backbones without a network in segmenter/model.py: {', '.join(sorted(set(BACKBONE_INFO) - set(BACKBONES)))}")


class PatchSegmenter(nn.Module):
    """Backbone features -> P x P grid -> foreground logit per patch (B x P x P)."""

    def __init__(self, backbone: str, grid: int, features: nn.Module | None = None) -> None:
        super().__init__()
        spec = backbone_spec(backbone)
        self.backbone_name = backbone
        self.grid = grid
        self.features = features if features is not None else spec.truncate(spec.build())
        with torch.no_grad():
            was_training = self.features.training
            self.features.eval()
            channels = self.features(torch.zeros(1, 3, 64, 64)).shape[1]
            self.features.train(was_training)
        self.head = nn.Sequential(
            _conv_bn(channels, 96),
            _conv_bn(96, 96),
            nn.Conv2d(96, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        if f.shape[-2:] != (self.grid, self.grid):
            f = F.adaptive_avg_pool2d(f, self.grid) if min(f.shape[-2:]) >= self.grid else F.interpolate(
                f, size=(self.grid, self.grid), mode="bilinear", align_corners=False
            )
        return self.head(f)[:, 0]


def default_image_size(backbone: str, grid: int) -> int:
    """Input side so that the backbone's stride gives exactly one feature per patch."""
    return BACKBONES[backbone].stride * grid


def build_segmenter(backbone: str, grid: int, pretrained: bool = False, weights: Path | None = None) -> nn.Module:
    """A fresh segmenter; ImageNet weights only when asked for (``pretrained`` or a local ``weights`` file). A
    backbone that ships its weights (u2netp) always has them."""
    spec = backbone_spec(backbone)
    if spec.segmenter is not None:
        if weights:
            raise StepError(f"backbone {backbone} ships its own weights; --weights is for the torchvision backbones")
        return spec.segmenter(grid, True, None)
    full = spec.build()
    if pretrained or weights:
        if spec.torchvision_name is None and pretrained:
            raise StepError(f"backbone {backbone} has no pretrained weights; it is trained from scratch")
        state = read_state_dict(weights) if weights else _torchvision_state_dict(spec)
        missing, unexpected = full.load_state_dict(state, strict=False)
        matched = len(full.state_dict()) - len(missing)
        if matched < 0.9 * len(full.state_dict()):
            raise StepError(
                f"weights do not fit {backbone}: {len(missing)} of {len(full.state_dict())} tensors missing "
                f"(e.g. {', '.join(list(missing)[:3])}); {len(unexpected)} unexpected"
            )
    return PatchSegmenter(backbone, grid, features=spec.truncate(full))


def _torchvision_state_dict(spec: Backbone) -> dict:
    import torchvision

    weights = torchvision.models.get_model_weights(spec.torchvision_name).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        return weights.get_state_dict(progress=True)
    except Exception as exc:
        raise StepError(
            f"--pretrained: ImageNet weights for {spec.name} are not in torch's cache ({cached}) and could not be "
            f"downloaded ({type(exc).__name__}: {exc}). Put the file there, pass a local state dict with "
            f"--weights FILE, or train without --pretrained (the default u2netp ships its weights with the package)."
        ) from exc


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, model: PatchSegmenter, image_size: int, options: dict, metrics: dict, extra: dict | None = None) -> None:
    """One safetensors file with everything ``segment`` needs: the weights, and a JSON description (backbone,
    grid, input size and normalisation, thresholds, how it was trained). Written atomically."""
    from .. import __version__

    description = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "package_version": __version__,
        "backbone": model.backbone_name,
        "grid": model.grid,
        "image_size": image_size,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "options": options,
        "metrics": metrics,
        **(extra or {}),
    }
    save_model(path, model.state_dict(), description)


def _checked_description(path: Path) -> tuple[dict | None, dict]:
    """(the safetensors header's tensor entries, or None for an old ``torch.save`` file; the segmenter's
    description, checked field by field by ``descriptions.check_segmenter``). An old file's description still
    holds its weights under ``state_dict``."""
    path = Path(path)
    if not path.is_file():
        raise StepError(f"segmenter not found: {path}")
    kind, header = file_kind(path), None
    if kind == SAFETENSORS:
        header, ckpt = read_header(path, "segmenter")
    elif kind == TORCH_ZIP and not is_torchscript(path):
        ckpt = read_legacy_checkpoint(path, "segmenter")
    else:
        ckpt = None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise StepError(f"{path} is not an autobackswap segmenter (made by `autobackswap train-segmenter`)")
    return header, check_segmenter(ckpt, path, BACKBONES)


def read_checkpoint(path: Path, weights: bool = True) -> dict:
    """A segmenter file's description, checked field by field, plus its weights under ``state_dict`` (on the CPU)
    unless ``weights`` is False (then only the header of a safetensors file is read). Old ``torch.save``
    checkpoints still load (weights only, with a deprecation note)."""
    header, ckpt = _checked_description(path)
    if not weights:
        ckpt.pop("state_dict", None)
    elif header is not None:
        ckpt["state_dict"] = read_tensors(Path(path), "segmenter")
    return ckpt


def load_segmenter(path: Path) -> tuple[nn.Module, dict]:
    """(model in eval mode on the CPU, checkpoint metadata without the weights). The weights' names and shapes
    are checked against the model the description builds before they are read."""
    header, ckpt = _checked_description(path)
    spec = BACKBONES[ckpt["backbone"]]
    grid = int(ckpt["grid"])
    if spec.segmenter is not None:
        model = spec.segmenter(grid, False, set(header if header is not None else ckpt["state_dict"]))
    else:
        model = PatchSegmenter(ckpt["backbone"], grid)
    if header is not None:
        check_shapes(header, model.state_dict(), "segmenter", path)
        state = read_tensors(Path(path), "segmenter")
    else:
        state = ckpt.pop("state_dict")
    check_finite(state, "segmenter", path)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise StepError(f"{path}: its weights do not fit a {ckpt['backbone']} segmenter with a {ckpt['grid']}x{ckpt['grid']} "
                        f"grid: {str(exc).strip().splitlines()[0]}") from None
    model.eval()
    return model, ckpt


def optimize_for_inference(model: nn.Module) -> nn.Module:
    """The eval-mode model with every BatchNorm that follows a convolution folded into it, in
    channels-last layout: the same outputs (to ~1e-5) about 1.5x faster on a CPU (measured
    on small-cnn). Modifies and returns ``model``; feed it channels-last inputs."""
    model.eval()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                seq[i] = torch.nn.utils.fuse_conv_bn_eval(seq[i], seq[i + 1])
                seq[i + 1] = nn.Identity()
    return model.to(memory_format=torch.channels_last)
