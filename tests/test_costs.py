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
