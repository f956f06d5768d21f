"""Where and how a run computes: device, autocast precision, attention kernels, threads, sharing, progress bars."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional, TypeVar

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.data import Dataset, TensorDataset
from tqdm.auto import tqdm

T = TypeVar("T")

# Evaluation batch per device type: a GPU wants large batches; on a CPU a batch whose activations stay in cache is
# faster per image (vit-mini on 2 cores, fp32: 2.2 ms per image in batches of 64, 2.6 ms in batches of 512).
EVAL_BATCH = {"cuda": 512, "cpu": 64}


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: Optional[torch.dtype] = None  # bf16 autocast on GPU by default; None = fp32
    progress: bool = True
    loader_workers: int = 0  # worker processes of data loaders over data decoded on access (image files)
    share: bool = True  # evaluations that cannot differ are computed once per process (benchmark.sharing)

    @classmethod
    def resolve(cls, device: str = "auto", precision: str = "auto", progress: bool = True,
                loader_workers: int = 0, share: bool = True) -> Runtime:
        """'auto' device picks CUDA when present; 'auto' precision is bf16 autocast on CUDA and fp32 on CPU."""
        if device == "cuda" and not torch.cuda.is_available():
            from benchmark.errors import ConfigError

            raise ConfigError("device: 'cuda' asked for but no CUDA device is visible; use device: cpu or auto")
        chosen = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                              "cpu" if device == "auto" else device)
        bf16 = precision == "bf16" or (precision == "auto" and chosen.type == "cuda")
        return cls(chosen, torch.bfloat16 if bf16 else None, progress, loader_workers, share)

    @property
    def eval_batch(self) -> int:
        """Images per batch in gradient-free passes (evaluation, feature caching)."""
        return EVAL_BATCH.get(self.device.type, EVAL_BATCH["cpu"])

    def loader_options(self, data: Dataset, persistent: bool) -> dict[str, Any]:
        """DataLoader settings: worker processes unless `data` is already tensors in memory (a worker would only
        copy them), kept alive across epochs when `persistent`; pinned host memory for a CUDA device."""
        workers = 0 if isinstance(data, TensorDataset) else self.loader_workers
        return {"num_workers": workers, "persistent_workers": persistent and workers > 0,
                "pin_memory": self.device.type == "cuda"}

    @property
    def context(self) -> tuple[str, str, int]:
        """What, besides the network and its inputs, decides a pass's outputs: device, precision, batch size."""
        return self.device.type, str(self.amp_dtype), self.eval_batch

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Every forward pass runs in here: autocast to the run's precision, and on a CPU, for passes that will be
        backpropagated (autograd on), the math attention kernel.

        PyTorch's fused CPU attention kernel (flash attention for CPU) has a slow backward pass on the short sequences
        of small ViTs: on vit-mini's 50 tokens it was 28% of a full fine-tuning step's CPU time, against a few
        percent through the math kernel; gradient-free passes (evaluation, cached features) keep the fused kernel,
        ~15% faster than the math one on inference (README, Performance). The two agree to bf16 rounding; on a GPU
        the fused kernels stay throughout."""
        with contextlib.ExitStack() as stack:
            if self.amp_dtype is not None:
                stack.enter_context(torch.autocast(device_type=self.device.type, dtype=self.amp_dtype))
            if self.device.type == "cpu" and torch.is_grad_enabled():
                stack.enter_context(sdpa_kernel(SDPBackend.MATH))
            yield

    def bar(self, iterable: Iterable[T], desc: str, total: Optional[int] = None, leave: bool = False) -> Iterator[T]:
        """A tqdm progress bar, silent when progress is off."""
        return iter(tqdm(iterable, desc=desc, total=total, leave=leave, disable=not self.progress, dynamic_ncols=True))
