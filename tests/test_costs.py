import copy

import torch

from benchmark import costs
from benchmark.backbones import build_backbone
from benchmark.evaluation import as_tensors
from benchmark.runtime import Runtime
from benchmark.streams import build_stream
from strategies.base import build_strategy


def test_flops_match_the_analytic_count_of_a_vit(tiny_backbone_params):
    """Tiny vit-mini: 1 block, width 32, 28x28 input in 4x4 patches -> 49 patches + class token = 50 tokens."""
    backbone = build_backbone("vit-mini", **tiny_backbone_params)
    stream = build_stream("mini-split-digits", 0, image_spec=backbone.image_spec)
    strategy = build_strategy("linear", {"epochs": 1}, copy.deepcopy(backbone.model), Runtime.resolve("cpu", "fp32", False))
    strategy.train_task(stream.tasks[0])
    tokens, width = 50, 32
    block = (2 * tokens * width * 3 * width      # qkv
             + 2 * 2 * tokens * tokens * width   # q k^T and attention x v, all heads
             + 2 * tokens * width * width        # output projection
             + 2 * 2 * tokens * width * 4 * width)  # MLP in and out
    patch_embed = 2 * 49 * width * 16
    head = 2 * width * 2  # two classes after the first task
    image = as_tensors(stream.tasks[0].test)[0][0]
    assert costs.flops_per_image(strategy, image) == block + patch_embed + head


def test_cpu_peak_memory_is_reported_as_process_rss():
    report = costs.peak_memory_mb(torch.device("cpu"))
    assert report["memory_kind"] == "process_rss" and report["peak_memory_mb"] > 10
