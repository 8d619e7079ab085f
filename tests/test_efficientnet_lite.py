"""segmenter/efficientnet_lite.py and the default segmenter's semantic features: EfficientNet-Lite0's ImageNet
weights install with the package (no download), and segmenter files from before them still load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autobackswap_cli.segmenter import efficientnet_lite
from autobackswap_cli.segmenter.model import SalientSegmenter, build_segmenter, load_segmenter, save_checkpoint


def test_the_imagenet_weights_come_from_the_installed_package_and_give_features_at_strides_16_and_32():
    net = efficientnet_lite.pretrained()
    state = torch.load(efficientnet_lite.weights_file(), map_location="cpu", weights_only=True)
    for name, tensor in net.state_dict().items():  # every tensor of the trunk is the file's, none left at random
        assert torch.equal(tensor, state[name]), name
    with torch.no_grad():
        features = net(torch.zeros(2, 3, 161, 160))  # an odd side: "same" padding rounds up, as TensorFlow's does
    assert {s: tuple(f.shape) for s, f in features.items()} == {16: (2, 112, 11, 10), 32: (2, 320, 6, 5)}


def test_efficientnet_lite0_recognises_a_real_photo():
    """Its ImageNet head, rebuilt from the same file, names skimage's cat photo a cat (classes 281-285)."""
    skimage_data = pytest.importorskip("skimage.data", reason="the photo comes with the bench extra")
    import cv2
    import torch.nn.functional as F

    net, state = efficientnet_lite.pretrained(), torch.load(efficientnet_lite.weights_file(), map_location="cpu", weights_only=True)
    head = torch.nn.Conv2d(320, 1280, 1, bias=False)
    head.weight.data = state["_conv_head.weight"]
    norm = torch.nn.BatchNorm2d(1280, eps=efficientnet_lite.BN_EPS).eval()
    norm.load_state_dict({k.removeprefix("_bn1."): v for k, v in state.items() if k.startswith("_bn1.")})
    image = cv2.resize(skimage_data.chelsea(), (224, 224), interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        pooled = F.relu6(norm(head(net(x)[32]))).mean((2, 3))
        probs = (pooled @ state["_fc.weight"].T + state["_fc.bias"]).softmax(1)[0]
    assert 281 <= int(probs.argmax()) <= 285 and probs[281:286].sum() > 0.8


def test_the_default_segmenter_has_frozen_semantic_features_and_older_files_load_without_them(tmp_path):
    model = build_segmenter("u2netp", 16)
    assert model.semantic and not any(p.requires_grad for p in model.semantics.parameters())
    old = SalientSegmenter(16, shipped_weights=False, semantic=False).eval()  # the layout of files before them
    path = tmp_path / "old.safetensors"
    save_checkpoint(path, old, 160, {}, {})
    loaded, _ = load_segmenter(path)
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 3, 160, 160)).astype(np.float32))
    with torch.no_grad():
        assert not loaded.semantic and torch.equal(loaded(x), old(x))
    save_checkpoint(path, model.eval(), 160, {}, {})
    assert load_segmenter(path)[0].semantic
