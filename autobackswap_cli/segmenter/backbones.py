"""The segmenter backbones by name: what each is, its training defaults. Torch-free, so the command line takes its
choices and help from here without importing torch; ``model.py`` registers the network of each name (a name
without a network there is an error at import, and so is a network without a name here).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackboneInfo:
    name: str
    description: str  # the --backbone help of this name
    stride: int  # input pixels per patch at the default input size
    torchvision_name: str | None = None  # for torchvision's weight registry; None = our own, no pretrained weights
    # Training defaults (train-segmenter's --epochs / --lr / --patience when not given), chosen per backbone on
    # benchmarks/real_photos.py: a frozen encoder's small head wants more, faster epochs than a whole network.
    epochs: int = 40
    lr: float = 2e-3
    patience: int = 10
    heavy: bool = False  # its forward pass is most of segment's work (Step.compute_bound)


DEFAULT_BACKBONE = "u2netp"
BACKBONE_INFO: dict[str, BackboneInfo] = {b.name: b for b in (
    BackboneInfo("u2netp", ("U^2-Net-p's pixel-accurate saliency, corrected by the labels with EfficientNet-Lite0's ImageNet features (both frozen; "
                            "weights installed with the package, no download) (default)"),
                 10, epochs=80, lr=4e-3, patience=20, heavy=True),
    BackboneInfo("small-cnn", "small CNN from scratch, patch resolution (CPU friendly)", 8),
    BackboneInfo("efficientnet_b0", "EfficientNet-B0 (the paper's choice)", 16, "efficientnet_b0"),
    BackboneInfo("resnet18", "ResNet-18", 16, "resnet18"),
    BackboneInfo("resnet50", "ResNet-50", 16, "resnet50"),
    BackboneInfo("mobilenet_v3_large", "MobileNetV3-Large", 16, "mobilenet_v3_large"),
)}
BACKBONE_NAMES = tuple(BACKBONE_INFO)


def backbone_help() -> str:
    """``--backbone``'s help: every name with what it is."""
    pretrained = [b.name for b in BACKBONE_INFO.values() if b.torchvision_name]
    return ("Segmenter backbone: " + "; ".join(f"{b.name}: {b.description}" for b in BACKBONE_INFO.values())
            + f". ImageNet weights ({', '.join(pretrained)}) only when asked: --pretrained, or train-segmenter's --weights FILE.")


def default_help(attribute: str) -> str:
    """A training default of every backbone, for a help text: ``u2netp 80, others 40`` (the most common value as
    ``others``)."""
    values = {name: getattr(info, attribute) for name, info in BACKBONE_INFO.items()}
    common = max(set(values.values()), key=list(values.values()).count)
    named = [f"{name} {value:g}" for name, value in values.items() if value != common]
    return ", ".join(named + [f"others {common:g}"])
