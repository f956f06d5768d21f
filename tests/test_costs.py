import copy

import torch

from benchmark import costs
from benchmark.backbones import build_backbone
from benchmark.evaluation import as_tensors
from benchmark.runtime import Runtime
from benchmark.streams import build_stream
from strategies.base import build_strategy


TOKENS, WIDTH = 50, 32  # tiny vit-mini: width 32, 28x28 input in 4x4 patches -> 49 patches + class token
BLOCK = (2 * TOKENS * WIDTH * 3 * WIDTH  # qkv
         + 2 * 2 * TOKENS * TOKENS * WIDTH  # q k^T and attention x v, all heads
         + 2 * TOKENS * WIDTH * WIDTH  # output projection
         + 2 * 2 * TOKENS * WIDTH * 4 * WIDTH)  # MLP in and out
PATCH_EMBED = 2 * 49 * WIDTH * 16
HEAD = 2 * WIDTH * 2  # two classes after the first task


def flops_after_first_task(name: str, params: dict, backbone_params: dict) -> int:
    backbone = build_backbone("vit-mini", **backbone_params)
    stream = build_stream("mini-split-digits", 0, image_spec=backbone.image_spec)
    runtime = Runtime.resolve("cpu", "fp32", False)
    strategy = build_strategy(name, {"epochs": 1, **params}, copy.deepcopy(backbone.model), runtime)
    strategy.train_task(stream.tasks[0])
    return costs.flops_per_image(strategy, as_tensors(stream.tasks[0].test)[0][0])


def test_flops_match_the_analytic_count_of_a_vit(tiny_backbone_params):
    """The tiny vit-mini has 2 blocks."""
    assert flops_after_first_task("linear", {}, tiny_backbone_params) == 2 * BLOCK + PATCH_EMBED + HEAD


def test_block_expansion_adds_its_blocks_and_merged_lora_adds_nothing(tiny_backbone_params):
    base = 2 * BLOCK + PATCH_EMBED + HEAD
    for p in (1, 2):
        assert flops_after_first_task("block_expansion", {"p": p}, tiny_backbone_params) == base + p * BLOCK
    targets = ["q", "k", "v", "proj", "fc1", "fc2"]
    assert flops_after_first_task("lora", {"rank": 4, "targets": targets}, tiny_backbone_params) == base


def test_cpu_peak_memory_is_reported_as_process_rss():
    report = costs.peak_memory_mb(torch.device("cpu"))
    assert report["memory_kind"] == "process_rss" and report["peak_memory_mb"] > 10


class Predicting(torch.nn.Module):
    """A bare network under the part of the strategy contract that `flops_per_image` uses (predict, runtime)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.runtime = model, Runtime.resolve("cpu", "fp32", False)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


def vit_flops(patches: int, width: int, depth: int, patch_pixels: int, classes: int) -> int:
    """A plain ViT's inference FLOPs (1 multiply-add = 2): blocks (MLP 4x wide), patch embedding, head."""
    tokens = patches + 1  # the class token
    block = (2 * tokens * width * 3 * width + 2 * 2 * tokens * tokens * width + 2 * tokens * width * width
             + 2 * 2 * tokens * width * 4 * width)
    return depth * block + 2 * patches * width * patch_pixels + 2 * width * classes


def test_vit_b16_and_vit_mini_flops_are_the_readme_numbers():
    """docs/performance.md: ViT-B/16 at 224 px is 35.13 GFLOPs per image in the suite's convention (1
    multiply-add = 2 FLOPs; its multiply-add count is the 17.6 G often quoted), 127x the bundled vit-mini's 0.277.
    ViT-B/16 with random weights."""
    import timm

    vit_b = costs.flops_per_image(Predicting(timm.create_model("vit_base_patch16_224").eval()),
                                  torch.zeros(3, 224, 224))
    vit_mini = costs.flops_per_image(Predicting(build_backbone("vit-mini").model.eval()), torch.zeros(1, 28, 28))
    assert vit_b == vit_flops(196, 768, 12, 3 * 16 * 16, 1000) == 35_127_656_448
    assert vit_mini == vit_flops(49, 192, 6, 16, 10) == 277_245_696
    assert round(vit_b / vit_mini) == 127


def test_throughput_counts_stream_images_over_training_and_scored_images_over_evaluation():
    rates = costs.throughput(train_images=600, train_s=[1.0, 2.0], eval_images=250, eval_s=[0.5, 0.5, 1.5])
    assert rates == {"train_images_per_s": 200.0, "eval_images_per_s": 250 * 3 / 2.5}
    assert costs.throughput(10, [0.0], 10, []) == {"train_images_per_s": 0.0, "eval_images_per_s": 0.0}


def test_peak_memory_names_host_and_device():
    report = costs.peak_memory_mb(torch.device("cpu"))
    assert report["peak_host_mb"] == report["peak_memory_mb"] > 10 and "peak_device_mb" not in report
