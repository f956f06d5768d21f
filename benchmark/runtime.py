"""Where and how a run computes: device, autocast precision, progress bars."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, TypeVar

import torch
from tqdm.auto import tqdm

T = TypeVar("T")


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: Optional[torch.dtype] = None  # bf16 autocast on GPU by default; None = fp32
    progress: bool = True

    @classmethod
    def resolve(cls, device: str = "auto", precision: str = "auto", progress: bool = True) -> Runtime:
        """'auto' device picks CUDA when present; 'auto' precision is bf16 autocast on CUDA and fp32 on CPU."""
        if device == "cuda" and not torch.cuda.is_available():
            from benchmark.errors import ConfigError

            raise ConfigError("device: 'cuda' asked for but no CUDA device is visible; use device: cpu or auto")
        chosen = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                              "cpu" if device == "auto" else device)
        bf16 = precision == "bf16" or (precision == "auto" and chosen.type == "cuda")
        return cls(chosen, torch.bfloat16 if bf16 else None, progress)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def bar(self, iterable: Iterable[T], desc: str, total: Optional[int] = None, leave: bool = False) -> Iterator[T]:
        """A tqdm progress bar, silent when progress is off."""
        return iter(tqdm(iterable, desc=desc, total=total, leave=leave, disable=not self.progress, dynamic_ncols=True))
