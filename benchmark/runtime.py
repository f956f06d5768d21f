"""Where and how a run computes: device, autocast precision, attention kernels, threads, sharing, progress bars."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, TypeVar

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.data import Dataset, TensorDataset
from tqdm.auto import tqdm

T = TypeVar("T")

# CPU feature flags (Linux /proc/cpuinfo) of instructions that compute bf16 products natively: x86's AVX512-BF16 and
# AMX-BF16, Arm's BF16 extension. Without them PyTorch emulates bf16 matrix products, ~15x slower than fp32 (measured on
# a 2-core AMD EPYC without AVX-512: full_ft on mini-split-digits 1,040 s in bf16, 68 s in fp32).
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (x86 `flags`, Arm `Features`); empty where the file is missing."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def auto_precision(device: torch.device, flags: frozenset[str]) -> tuple[str, str]:
    """`precision: auto` -> (fp32 or bf16, why): bf16 on a CUDA device that supports it, and on a CPU only where it
    computes bf16 natively (`BF16_FLAGS` among its `flags`); fp32 otherwise."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: bf16 autocast on a CUDA device that supports it"
        return "fp32", "auto: this CUDA device has no bf16"
    native = sorted(set(BF16_FLAGS) & flags)
    if native:
        return "bf16", f"auto: this CPU computes bf16 natively ({', '.join(native)})"
    return "fp32", ("auto: this CPU has no native bf16 (no " + ", ".join(BF16_FLAGS) + " flag), where bf16 is emulated "
                    "~15x slower than fp32")


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
    precision_reason: str = ""  # why this precision (printed once, recorded in every result)
    cpu_capability: str = ""  # PyTorch's CPU kernel level and whether the CPU has native bf16

    @classmethod
    def resolve(cls, device: str = "auto", precision: str = "auto", progress: bool = True,
                loader_workers: int = 0, share: bool = True, flags: Optional[frozenset[str]] = None) -> Runtime:
        """'auto' device picks CUDA when present; 'auto' precision is bf16 where the device computes it natively
        (`auto_precision`), fp32 elsewhere. `flags`: the CPU's feature flags (default: read from /proc/cpuinfo;
        tests inject them)."""
        if device == "cuda" and not torch.cuda.is_available():
            from benchmark.errors import ConfigError

            raise ConfigError("device: 'cuda' asked for but no CUDA device is visible; use device: cpu or auto")
        chosen = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                              "cpu" if device == "auto" else device)
        flags = cpu_flags() if flags is None else flags
        native = sorted(set(BF16_FLAGS) & flags)
        capability = f"{torch.backends.cpu.get_cpu_capability()}; native bf16: {', '.join(native) or 'none'}"
        resolved, reason = (auto_precision(chosen, flags) if precision == "auto" else
                            (precision, f"{precision}: the suite file's `precision:`"))
        return cls(chosen, torch.bfloat16 if resolved == "bf16" else None, progress, loader_workers, share, reason,
                   capability)

    @property
    def precision(self) -> str:
        """fp32 or bf16: what a run's spec and result record."""
        return "fp32" if self.amp_dtype is None else "bf16"

    def with_precision(self, precision: str) -> Runtime:
        """This runtime at `precision` (fp32 or bf16): a run whose recipe fixes its precision (benchmark/recipe.py)."""
        if precision == self.precision:
            return self
        return dataclasses.replace(self, amp_dtype=torch.bfloat16 if precision == "bf16" else None,
                                   precision_reason=f"{precision}: the strategy's recipe (its `precision:`)")

    def precision_line(self) -> str:
        """The choice of precision in one line, as a suite prints it when it starts."""
        return f"precision: {self.precision} ({self.precision_reason}; CPU {self.cpu_capability})"

    def record(self) -> dict[str, str]:
        """What a result records of how its run computed."""
        return {"device": self.device.type, "precision": self.precision, "precision_reason": self.precision_reason,
                "cpu_capability": self.cpu_capability}

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
        ~15% faster than the math one on inference (docs/performance.md). The two agree to bf16 rounding; on a GPU
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
