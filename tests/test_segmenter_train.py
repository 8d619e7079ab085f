"""segmenter/train.py and model.py (`autobackswap train-segmenter`): what the segmenter learns from patch labels,
its checkpoint, and starting from local weights."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from autobackswap_cli.images import scan_image_folder
from autobackswap_cli.segmenter.model import read_checkpoint
from autobackswap_cli.segmenter.predict import mask_iou_report
from autobackswap_cli.segmenter.train import masked_bce
from conftest import SAMPLE_DATA, cli, cli_subprocess


def test_unlabelled_patches_do_not_count_in_the_training_loss():
    """A grid painted in part (128 = not labelled) teaches only what was painted."""
    logits = torch.tensor([[[2.0, -1.0], [0.5, 3.0]]])
    labels = torch.tensor([[[255, 128], [128, 0]]], dtype=torch.uint8)
    expected = F.binary_cross_entropy_with_logits(torch.tensor([2.0, 3.0]), torch.tensor([1.0, 0.0]))
    assert torch.isclose(masked_bce(logits, labels), expected)
    assert masked_bce(logits, torch.full_like(labels, 128)).item() == 0.0


def test_default_segmenter_reaches_iou_080_on_unseen_sample_images(tmp_path):
    """The issue's bar: default options, shipped labels, CPU; IoU >= 0.80 on images not trained on."""
    ckpt = tmp_path / "seg.safetensors"
    t0 = time.perf_counter()
    cli("train-segmenter", SAMPLE_DATA / "train", SAMPLE_DATA / "labels", "-o", ckpt, "--no-progress")
    train_s = time.perf_counter() - t0
    labelled = {str(p.relative_to(SAMPLE_DATA / "labels").with_suffix("")) for p in (SAMPLE_DATA / "labels").rglob("*.png")}
    results = {}
    for split in ("train", "test"):
        cli("segment", SAMPLE_DATA / split, "-m", ckpt, "-o", tmp_path / "masks" / split, "--no-progress")
        items = [it for it in scan_image_folder(SAMPLE_DATA / split).items if it.key not in labelled]
        results[split] = mask_iou_report(items, tmp_path / "masks" / split, SAMPLE_DATA / "masks" / split)
    print(f"\ntrain-segmenter {train_s:.0f}s; unlabelled train: {results['train']}; test: {results['test']}")
    assert results["train"]["images"] == 120 and results["test"]["images"] == 90
    assert results["train"]["mean_iou"] >= 0.80
    assert results["test"]["mean_iou"] >= 0.80
    assert train_s < 300
    meta = read_checkpoint(ckpt)
    assert meta["backbone"] == "small-cnn" and meta["grid"] == 16 and meta["metrics"]["val_patch_iou"] > 0.8
    assert {"state_dict", "image_size", "mean", "std", "options"} <= set(meta)


def test_pretrained_without_cache_or_network_is_a_clear_error(small_sample, tmp_path):
    env = {"TORCH_HOME": str(tmp_path / "empty_cache"), "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    result = cli_subprocess("train-segmenter", small_sample / "train", small_sample / "labels", "-o", tmp_path / "s.safetensors", "--backbone", "resnet18", "--pretrained", "--no-progress", env=env, timeout=120)
    assert result.returncode == 2
    text = " ".join(result.stderr.split())
    assert "not in torch's cache" in text and "--weights" in text
    assert not (tmp_path / "s.safetensors").exists()


def test_local_weights_file_is_loaded_and_a_wrong_one_refused(small_sample, tmp_path):
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    ckpt = tmp_path / "s.safetensors"
    cli("train-segmenter", small_sample / "train", small_sample / "labels", "-o", ckpt, "--backbone", "resnet18", "--weights", tmp_path / "resnet18.pth", "--epochs", "1", "--no-progress")
    meta = read_checkpoint(ckpt)
    assert meta["backbone"] == "resnet18" and meta["image_size"] == 128  # stride 16 x grid 8
    assert meta["options"]["weights"].endswith("resnet18.pth")
    torch.save(torchvision.models.mobilenet_v3_large(weights=None).state_dict(), tmp_path / "mnv3.pth")
    result = cli("train-segmenter", small_sample / "train", small_sample / "labels", "-o", tmp_path / "x.safetensors", "--backbone", "resnet18", "--weights", tmp_path / "mnv3.pth", "--no-progress", expect=2)
    assert "do not fit resnet18" in result.output


def test_weights_are_really_used(tmp_path):
    import torchvision

    from autobackswap_cli.segmenter.model import build_segmenter

    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "r.pth")
    model = build_segmenter("resnet18", 8, weights=tmp_path / "r.pth")
    assert torch.equal(model.features[0].weight, reference.conv1.weight)
    assert torch.equal(model.features[6][0].conv1.weight, reference.layer3[0].conv1.weight)
