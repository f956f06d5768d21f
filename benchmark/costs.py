"""Costs measured centrally, never self-reported by strategies: parameters, FLOPs, time, memory.

FLOPs follow `torch.utils.flop_counter.FlopCounterMode`: one multiply-add counts as 2 FLOPs (a matrix product
of (m x k) by (k x n) is 2mkn); only matrix products, convolutions and attention are counted, so element-wise work
(norms, activations, softmax) is not. Attention is counted through PyTorch's math kernel: the fused CPU kernel has no
FLOP formula and would silently drop the attention products, so CPU and GPU would disagree.
"""

from __future__ import annotations

import resource
from itertools import chain

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from benchmark.sharing import computing_everything
from strategies.base import Strategy


def parameter_counts(strategy: Strategy) -> dict[str, int]:
    """total and trainable parameters, and numbers the strategy stores beyond the pre-trained backbone."""
    parameters = list(strategy.parameters())
    stored = chain(parameters, strategy.buffers())
    return {
        "params_total": sum(p.numel() for p in parameters),
        "params_trainable": sum(p.numel() for p in parameters if p.requires_grad),
        "params_added": sum(t.numel() for t in stored if id(t) not in strategy.pretrained_ids),
    }


@torch.no_grad()
def flops_per_image(strategy: Strategy, image: torch.Tensor) -> int:
    """Inference FLOPs of `strategy.predict` on one image, in eval mode, in the steady state: one uncounted call
    first, so that one-time work (merging LoRA updates into the weights) is not charged to every image. Nothing is
    taken from shared passes (`benchmark.sharing`): the count is what a prediction computes."""
    strategy.eval()
    batch = image.unsqueeze(0).to(strategy.runtime.device)
    with computing_everything():
        strategy.predict(batch)
        counter = FlopCounterMode(display=False)
        with sdpa_kernel(SDPBackend.MATH), counter:
            strategy.predict(batch)
    return int(counter.get_total_flops())


def throughput(train_images: int, train_s: list[float], eval_images: int, eval_s: list[float]) -> dict[str, float]:
    """Images per second: the stream's training images (each counted once, whatever the epochs) over the training
    time, and the images scored at each evaluation point (test sets and retention images; a k-NN bank's embedding
    counts as time, not as images) over the evaluation time."""
    return {"train_images_per_s": train_images / sum(train_s) if sum(train_s) > 0 else 0.0,
            "eval_images_per_s": eval_images * len(eval_s) / sum(eval_s) if sum(eval_s) > 0 else 0.0}


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> dict[str, object]:
    """`peak_host_mb`: the process's peak resident set so far (ru_maxrss); on CUDA also `peak_device_mb`, the peak
    memory allocated by tensors during the run. `peak_memory_mb` is the device's figure on CUDA and the host's on a CPU
    (`memory_kind` says which), as earlier results have it."""
    host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        device_mb = torch.cuda.max_memory_allocated(device) / 2**20
        return {"peak_memory_mb": device_mb, "memory_kind": "cuda_allocated", "peak_host_mb": host,
                "peak_device_mb": device_mb}
    return {"peak_memory_mb": host, "memory_kind": "process_rss", "peak_host_mb": host}
