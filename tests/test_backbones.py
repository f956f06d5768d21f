import json

import pytest
import torch
from safetensors.torch import load_file

from benchmark.backbones import VIT_MINI_CHECKPOINT, build_backbone, read_card
from benchmark.datasets.fashion_mnist import DEBIAN_DIR
from benchmark.errors import ConfigError
from benchmark.evaluation import accuracy
from benchmark.runtime import Runtime


def test_checkpoint_loads_through_timms_pretrained_path(tiny_checkpoint, tiny_backbone_params):
    backbone = build_backbone("vit-mini", **tiny_backbone_params)
    stored = load_file(str(tiny_checkpoint))
    assert all(torch.equal(stored[k], v) for k, v in backbone.model.state_dict().items())
    assert backbone.image_spec.input_size == (1, 28, 28)
    assert backbone.model.get_classifier().out_features == 10
    eval_set = backbone.pretrain_data("test", 50, 0)
    assert eval_set.images.shape == (50, 1, 28, 28) and eval_set.labels.shape == (50,)
    bank = backbone.pretrain_data("train", 60, 0)
    assert bank.name == "fashion-mnist-train" and bank.images.shape == (60, 1, 28, 28)
    assert backbone.pretrain_data("test", 50, 0) is eval_set  # loaded once per process (preflight, then each run)
    assert backbone.pretrain_data("test", 50, 1) is not eval_set


def test_pretraining_at_toy_size_writes_weights_and_card(tiny_checkpoint):
    card = read_card(tiny_checkpoint)
    assert card["architecture"]["depth"] == 2 and card["architecture"]["embed_dim"] == 32
    assert 0.0 <= card["fashion_mnist_test_acc"] <= 100.0 and card["n_train"] == 400
    assert card["command"].startswith("python -m benchmark.pretrain --epochs 1")
    assert not list(tiny_checkpoint.parent.glob("*.partial"))


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path, tiny_checkpoint, tiny_backbone_params):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    (tmp_path / "broken.json").write_text(json.dumps(read_card(tiny_checkpoint)))
    with pytest.raises(ConfigError, match="cannot load .*broken.safetensors.*benchmark.pretrain") as error:
        build_backbone("vit-mini", **{**tiny_backbone_params, "checkpoint": str(broken)})
    assert "\n" not in str(error.value)


def test_bundled_vit_mini_card_meets_the_bar():
    card = read_card(VIT_MINI_CHECKPOINT)
    assert card["fashion_mnist_test_acc"] >= 85.0
    assert 1_000_000 <= card["parameters"] <= 5_000_000


@pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="needs Fashion-MNIST (make test installs it)")
def test_bundled_vit_mini_really_classifies_fashion_mnist():
    backbone = build_backbone("vit-mini", download=False)
    eval_set = backbone.pretrain_data("test", 1000, 0)
    acc = accuracy(backbone.model, eval_set.images, eval_set.labels, Runtime.resolve("cpu", "fp32", False))
    assert acc >= 85.0
    assert abs(acc - read_card()["fashion_mnist_test_acc"]) < 3.0  # a 1,000-image subset of the card's test set
