"""The ImageNet-pre-trained backbones, loaded through the same code paths as real weights: timm ViTs from a local
weights file, CLIP from a local open_clip file (a tiny config: ViT-B/16 would be a 600 MB file), ImageNet as
image folders of a few PNGs, and the retention protocols that apply to each. No network: the hub test blocks it."""

from __future__ import annotations

import copy
import json
import socket
from pathlib import Path

import huggingface_hub
import numpy as np
import open_clip
import pytest
import timm
import torch
import torch.nn.functional as F
from open_clip import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES
from PIL import Image
from safetensors.torch import save_file
from timm.data import ImageNetInfo
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from benchmark.backbones import BACKBONES, PretrainEvalSet, backbone_params, build_backbone
from benchmark.backbones.clip import timm_vit_args
from benchmark.datasets.imagenet import class_names, per_class_subset
from benchmark.errors import ConfigError, DatasetMissingError
from benchmark.evaluation import StrategyFeatures
from benchmark.retention import PROTOCOLS, build_retention, protocol_params
from benchmark.runtime import Runtime
from benchmark.streams.base import LabelledTensors, Task
from strategies.base import build_strategy

IN1K = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"  # a real timm name with an ImageNet-1k head, 5.7 M parameters
IN21K = "vit_tiny_patch16_224.augreg_in21k"  # its 21,843-class parent: no ImageNet-1k head
WNIDS = ("n01440764", "n01443537", "n01484850")
RUNTIME = Runtime.resolve("cpu", "fp32", False)
TINY_CLIP = dict(embed_dim=24, vision_cfg=dict(image_size=32, layers=2, width=64, head_width=32, patch_size=8),
                 text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=2))


def retention(protocols: dict, eval_size: int = 6) -> dict:
    return {"protocols": protocols, "eval_size": eval_size, "subset_seed": 0}


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ImageNet's layout in miniature: val/<wnid>/ 4 PNGs and train/<wnid>/ 5 PNGs of 3 classes (each class its own
    colour, plus noise), a hidden file and a text file that must be ignored."""
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for split, count in (("val", 4), ("train", 5)):
        for label, wnid in enumerate(WNIDS):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 80, size=(40, 48, 3)) + np.eye(3, dtype=np.int64)[label] * 170
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{wnid}_{i}.png")
            (folder / "._hidden.png").write_bytes(b"macOS metadata")
            (folder / "notes.txt").write_text("not an image")
    return root


def save_random_timm(name: str, path: Path) -> VisionTransformer:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    save_file(model.state_dict(), str(path))
    return model


@pytest.fixture(scope="module")
def in1k_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, VisionTransformer]:
    path = tmp_path_factory.mktemp("weights") / "model.safetensors"
    return path, save_random_timm(IN1K, path)


@pytest.fixture(scope="module")
def in21k_backbone(tmp_path_factory: pytest.TempPathFactory, imagenet_dir: Path):
    path = tmp_path_factory.mktemp("weights") / "model.safetensors"
    save_random_timm(IN21K, path)
    return build_backbone(IN21K, pretrained_file=str(path), imagenet_dir=str(imagenet_dir))


def test_timm_weights_load_from_a_local_file_through_timms_pretrained_path(in1k_file, imagenet_dir):
    path, saved = in1k_file
    backbone = build_backbone(IN1K, pretrained_file=str(path), imagenet_dir=str(imagenet_dir))
    assert isinstance(backbone.model, VisionTransformer) and not backbone.model.training
    assert all(torch.equal(saved.state_dict()[k], v) for k, v in backbone.model.state_dict().items())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(backbone.model(x), saved(x))
    spec = backbone.image_spec  # from the tag's pretrained config, as timm evaluates it
    assert (spec.input_size, spec.mean, spec.interpolation, spec.crop_pct) == ((3, 224, 224), (0.5,) * 3, "bicubic",
                                                                                0.9)
    assert backbone.head_classifies_pretrain_data and backbone.text_tower is None


def test_registered_and_family_names(in1k_file):
    for name in ("vit_base_patch16_224.dino", "vit_base_patch16_224.augreg_in21k",
                 "vit_base_patch16_224.augreg_in21k_ft_in1k", "clip-vit-b16", "vit-mini"):
        assert name in BACKBONES
    assert backbone_params("vit_small_patch16_224.dino", {"pretrained_file": str(in1k_file[0])})
    for name in ("resnet18.a1_in1k", "deit_base_distilled_patch16_224.fb_in1k", "vit_base_patch16_224",
                 "vit_base_patch16_224.nope"):
        with pytest.raises(ConfigError, match=f"unknown backbone '{name}'; valid: clip-vit-b16, vit-mini, .*"
                                              "or any pretrained timm VisionTransformer as <architecture>.<tag>"):
            backbone_params(name, {})


def test_missing_corrupt_or_mismatched_weights_are_one_line_errors(tmp_path, in1k_file):
    with pytest.raises(ConfigError, match=f"backbones.{IN1K}.pretrained_file: must be an existing file"):
        build_backbone(IN1K, pretrained_file=str(tmp_path / "missing.safetensors"))
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file")
    mismatched = tmp_path / "in1k.safetensors"
    mismatched.write_bytes(in1k_file[0].read_bytes())
    for path, name in ((corrupt, IN1K), (mismatched, IN21K)):  # IN21K's head has 21,843 rows, the file 1,000
        with pytest.raises(ConfigError, match=f"backbones.{name}.pretrained_file: cannot load .*{path.name}") as error:
            build_backbone(name, pretrained_file=str(path))
        assert "\n" not in str(error.value)


@pytest.mark.parametrize("name, message", [
    (IN1K, f"backbones.{IN1K}: cannot fetch its weights from the Hugging Face hub .*huggingface.co/timm/{IN1K} "),
    ("clip-vit-b16", "backbones.clip-vit-b16: cannot download open_clip's ViT-B-16-quickgelu 'openai' weights .*"
                     "huggingface.co/timm/vit_base_patch16_clip_224.openai"),
])
def test_hub_without_network_says_to_set_pretrained_file(monkeypatch, tmp_path, name, message):
    def no_network(*args, **kwargs):
        raise AssertionError("the test touched the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    with pytest.raises(ConfigError, match=message + ".*set pretrained_file") as error:
        build_backbone(name)
    assert "\n" not in str(error.value)


def test_imagenet_subsets_are_per_class_seeded_and_in_wnid_order(in21k_backbone):
    load = in21k_backbone.pretrain_data
    test = load("test", 6, 0)
    assert test.name == "imagenet-val" and test.class_names == WNIDS  # fewer than 1000 classes: named by wnid
    assert test.images.shape == (6, 3, 224, 224) and test.images.dtype == torch.float32
    assert test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    again = load("test", 6, 0)
    assert torch.equal(again.images, test.images)
    assert not torch.equal(load("test", 6, 1).images, test.images)
    bank = load("train", 9, 0)
    assert bank.name == "imagenet-train" and bank.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert len(load("test", 100, 0).labels) == 12  # all 3 x 4 validation images, no hidden or text file


def test_per_class_subset_spreads_evenly_and_extends():
    labels = [0] * 10 + [1] * 3 + [2] * 7
    subset = per_class_subset(labels, 7, seed=5)
    counts = np.bincount([labels[i] for i in subset], minlength=3)
    assert sorted(counts.tolist()) == [2, 2, 3] and subset == sorted(subset)
    assert per_class_subset(labels, 7, seed=5) == subset
    assert set(subset) <= set(per_class_subset(labels, 12, seed=5))
    assert np.bincount([labels[i] for i in per_class_subset(labels, 15, seed=5)]).tolist() == [6, 3, 6]


def test_imagenet_1k_classes_are_named_by_clip_in_wnid_order():
    wnids = ImageNetInfo("imagenet-1k").label_names()
    assert class_names(wnids) == tuple(IMAGENET_CLASSNAMES) and class_names(wnids)[0] == "tench"
    with pytest.raises(DatasetMissingError, match="not ImageNet-1k's wnids"):
        class_names(list(reversed(wnids)))


def test_missing_or_inconsistent_imagenet_is_a_clear_error(in1k_file, tmp_path, imagenet_dir):
    backbone = build_backbone(IN1K, pretrained_file=str(in1k_file[0]), imagenet_dir=str(tmp_path / "nowhere"))
    with pytest.raises(DatasetMissingError, match=f"no folder {tmp_path / 'nowhere' / 'val'}; expected "
                                                  r"<imagenet_dir>/val/<wnid>/\*.JPEG") as error:
        backbone.pretrain_data("test", 6, 0)
    assert "\n" not in str(error.value)
    partial = tmp_path / "partial"
    for split, wnids in (("val", WNIDS), ("train", WNIDS[:2])):
        for wnid in wnids:
            (partial / split / wnid).mkdir(parents=True)
    backbone = build_backbone(IN1K, pretrained_file=str(in1k_file[0]), imagenet_dir=str(partial))
    with pytest.raises(DatasetMissingError, match="hold different class folders"):
        backbone.pretrain_data("train", 6, 0)
    flat = tmp_path / "flat" / "val"  # ImageNet's val archive unpacks without wnid folders
    flat.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(flat / "ILSVRC2012_val_00000001.png")
    backbone = build_backbone(IN1K, pretrained_file=str(in1k_file[0]), imagenet_dir=str(flat.parent))
    with pytest.raises(DatasetMissingError, match=r"images directly in .*flat/val .*expected <imagenet_dir>/val/"):
        backbone.pretrain_data("test", 6, 0)


def test_head_protocol_needs_an_imagenet_head(in21k_backbone, in1k_file, imagenet_dir):
    with pytest.raises(ConfigError, match=f"retention.protocols.head: backbone '{IN21K}' has no classifier over its "
                                          r"pre-training classes \(imagenet-val\); use knn$"):
        build_retention(retention({"head": {}}), in21k_backbone, RUNTIME)
    in1k = build_backbone(IN1K, pretrained_file=str(in1k_file[0]), imagenet_dir=str(imagenet_dir))
    with pytest.raises(ConfigError, match="predicts 1000 classes but imagenet-val holds 3"):
        build_retention(retention({"head": {}}), in1k, RUNTIME)
    with pytest.raises(ConfigError, match=f"zeroshot: backbone '{IN21K}' has no text tower"):
        build_retention(retention({"zeroshot": {}}), in21k_backbone, RUNTIME)
    scores = build_retention(retention({"knn": {"k": 3, "bank_size": 9}}), in21k_backbone, RUNTIME)(StrategyFeatures(
        build_strategy("linear", {}, copy.deepcopy(in21k_backbone.model), RUNTIME), RUNTIME))
    assert 0.0 <= scores["knn"] <= 100.0


# --- CLIP -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, tuple[str, Path, torch.nn.Module]]:
    """quick_gelu -> (open_clip config name, random weights saved as a state dict, the open_clip model).

    At random initialisation the class token's output barely depends on the image, so every image would get the same
    zero-shot class; the QuickGELU model (the zero-shot tests' one) has its class and position embeddings zeroed to
    make its predictions vary. The GELU one keeps them random, for the conversion test."""
    folder = tmp_path_factory.mktemp("clip")
    files = {}
    for quick_gelu in (True, False):
        name = f"cltest-tiny-clip{'-quickgelu' if quick_gelu else ''}"
        (folder / f"{name}.json").write_text(json.dumps({**TINY_CLIP, "quick_gelu": quick_gelu}))
        open_clip.add_model_config(folder / f"{name}.json")
        torch.manual_seed(1)
        model = open_clip.create_model(name).eval()
        if quick_gelu:
            with torch.no_grad():
                model.visual.class_embedding.zero_()
                model.visual.positional_embedding.zero_()
        torch.save(model.state_dict(), folder / f"{name}.bin")
        files[quick_gelu] = name, folder / f"{name}.bin", model
    return files


def build_clip(clip_files, imagenet_dir: Path, quick_gelu: bool = True):
    name, path, _ = clip_files[quick_gelu]
    return build_backbone("clip-vit-b16", model=name, pretrained="", pretrained_file=str(path),
                          imagenet_dir=str(imagenet_dir))


@pytest.fixture(scope="module")
def clip_backbone(clip_files, imagenet_dir: Path):
    return build_clip(clip_files, imagenet_dir)


@pytest.mark.parametrize("quick_gelu", [True, False])
def test_clip_image_tower_as_timm_vit_equals_encode_image(clip_files, imagenet_dir, quick_gelu):
    backbone = build_clip(clip_files, imagenet_dir, quick_gelu)
    assert type(backbone.model) is VisionTransformer and len(backbone.model.blocks) == 2
    reference = clip_files[quick_gelu][2]
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = reference.encode_image(x)
        assert torch.allclose(backbone.model(x), expected, atol=1e-5, rtol=0)
        assert not torch.allclose(backbone.model(x), build_clip(clip_files, imagenet_dir, not quick_gelu).model(x),
                                  atol=1e-3)  # other weights and activation: the check can fail
    spec = backbone.image_spec
    assert (spec.input_size, spec.mean, spec.interpolation, spec.crop_pct, spec.crop_mode) == (
        (3, 32, 32), open_clip.OPENAI_DATASET_MEAN, "bicubic", 1.0, "center")
    assert not backbone.head_classifies_pretrain_data and backbone.text_tower.model.visual is None


def test_clip_vit_b16_openai_converts_key_for_key():
    """The real architecture (ViT-B-16-quickgelu, OpenAI's activation) on the meta device: timm's conversion of its
    visual state dict fills timm's CLIP ViT exactly, names and shapes."""
    config = open_clip.get_model_config("ViT-B-16-quickgelu")
    assert timm_vit_args(config) == dict(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12,
                                         mlp_ratio=4.0, act_layer="quick_gelu", num_classes=512)
    with torch.device("meta"):
        clip = open_clip.CLIP(**config)
        model = timm.create_model("vit_base_patch16_clip_224", **timm_vit_args(config))
    converted = {k: v.shape for k, v in checkpoint_filter_fn(clip.state_dict(), model).items()}
    assert converted == {k: v.shape for k, v in model.state_dict().items()}


def test_clip_params_are_checked():
    params = backbone_params("clip-vit-b16", {})
    assert (params.model, params.pretrained) == ("ViT-B-16-quickgelu", "openai")
    for raw, message in (({"model": "ViT-B-16"}, "model: must be the architecture the 'openai' weights were trained "
                                                 "with \\(QuickGELU"),
                         ({"model": "RN50"}, "model: must be a plain ViT image tower"),
                         ({"pretrained": "laion9b"}, "pretrained: must be one of openai, "),
                         ({"pretrained_file": "/nonexistent.bin"}, "pretrained_file: must be an existing file")):
        with pytest.raises(ConfigError, match=f"backbones.clip-vit-b16.{message}"):
            backbone_params("clip-vit-b16", raw)


def test_corrupt_clip_file_is_a_one_line_error(clip_files, tmp_path):
    corrupt = tmp_path / "corrupt.bin"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="backbones.clip-vit-b16.pretrained_file: cannot load .*corrupt.bin") as error:
        build_backbone("clip-vit-b16", model=clip_files[True][0], pretrained="", pretrained_file=str(corrupt))
    assert "\n" not in str(error.value)


def direct_zero_shot(clip: torch.nn.Module, images: torch.Tensor, names: tuple[str, ...], templates) -> torch.Tensor:
    """CLIP's zero-shot prediction from open_clip's own encoders: cosine similarity of the image embedding to each
    class's normalised mean of normalised prompt embeddings."""
    tokenizer = open_clip.get_tokenizer("cltest-tiny-clip-quickgelu")
    with torch.no_grad():
        classes = torch.stack([F.normalize(clip.encode_text(tokenizer([t(c) for t in templates]), normalize=True)
                                           .mean(0), dim=0) for c in names])
        return (clip.encode_image(images, normalize=True) @ classes.T).argmax(1)


@pytest.mark.parametrize("templates", ["simple", "openai"])
def test_zeroshot_predicts_what_open_clip_predicts(clip_backbone, clip_files, templates):
    eval_set = clip_backbone.pretrain_data("test", 12, 0)
    prompts = OPENAI_IMAGENET_TEMPLATES if templates == "openai" else (lambda c: f"a photo of a {c}.",)
    direct = direct_zero_shot(clip_files[True][2], eval_set.images, eval_set.class_names, prompts)
    assert len(set(direct.tolist())) >= 2  # not a constant prediction: the comparison means something
    strategy = build_strategy("linear", {}, copy.deepcopy(clip_backbone.model), RUNTIME)
    features = StrategyFeatures(strategy, RUNTIME)
    build = PROTOCOLS.builder("zeroshot")
    for labels, expected in ((direct, 100.0), ((direct + 1) % 3, 0.0)):
        relabelled = PretrainEvalSet(eval_set.name, eval_set.images, labels, eval_set.class_names)
        score = build(protocol_params("zeroshot", {"templates": templates}), clip_backbone, relabelled, RUNTIME)
        assert score(features) == expected


def test_clip_retention_by_zeroshot_and_knn_but_not_head(clip_backbone):
    with pytest.raises(ConfigError, match="backbone 'clip-vit-b16' has no classifier .*; use knn or zeroshot$"):
        build_retention(retention({"head": {}}), clip_backbone, RUNTIME)
    measure = build_retention(retention({"zeroshot": {"templates": "simple"}, "knn": {"k": 3, "bank_size": 9}}),
                              clip_backbone, RUNTIME)
    linear = build_strategy("linear", {}, copy.deepcopy(clip_backbone.model), RUNTIME)
    scores = measure(StrategyFeatures(linear, RUNTIME))
    assert list(scores) == ["zeroshot", "knn"] and all(0.0 <= s <= 100.0 for s in scores.values())


def test_lora_trains_a_step_on_the_clip_image_tower(clip_backbone):
    strategy = build_strategy("lora", {"epochs": 1, "batch_size": 4, "rank": 2}, copy.deepcopy(clip_backbone.model),
                              RUNTIME)
    before = {k: v.clone() for k, v in strategy.named_parameters() if v.requires_grad}
    generator = torch.Generator().manual_seed(0)
    train = LabelledTensors(torch.randn(4, 3, 32, 32, generator=generator), torch.tensor([0, 1, 0, 1]))
    strategy.train_task(Task(0, "task 0", (0, 1), (0, 1), 2, train, train))
    after = dict(strategy.named_parameters())
    moved = [k for k, v in before.items() if not torch.equal(v, after[k])]
    assert any("blocks.0.attn.qkv" in k for k in moved)  # the LoRA factors on timm's fused qkv of a CLIP block
    assert strategy.predict(torch.randn(2, 3, 32, 32)).shape == (2, 2)
