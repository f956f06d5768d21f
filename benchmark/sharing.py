"""Work that cannot differ between evaluations is done once per process: features memoised by what determines them.

Every run of a suite starts from the same pre-trained backbone, and many strategies leave its features untouched
for a whole run (linear probing, prototype and prompt methods' frozen query) or until their first task: scoring
retention before training, or a frozen backbone's features after every task, repeats the same computation. Here a
network's features of a set of images are kept under a key made of everything they depend on:

- the network: its modules' classes, their plain settings (numbers, strings, flags such as `training`), their
  forward hooks, and the bytes of every parameter and buffer (content, not identity: the copies of a backbone in
  two runs are equal until one of them trains), plus what the strategy says decides its features beyond that
  (`Strategy.feature_identity`: by default its class and configuration);
- the images: the bytes of the tensor (hashed once per tensor object; image sets are never modified);
- how the features were computed: device, autocast precision, evaluation batch size.

So a hit returns exactly the tensor a fresh computation would (same kernels, same batches), and a result is the
same bit for bit with sharing on or off (tested for every strategy). The memo lives in one process: runs in the
same process (the default executor) share it; each worker process or Ray worker has its own, which keeps it correct
under any executor and under resume without any file to invalidate. Hashing costs about 15 ms for vit-mini and
0.4 s for ViT-B/16 per evaluation, against the hundreds of images each evaluation runs through the network.
Images that are read from disk on every pass (data sets too large to hold) are never memoised.
"""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from itertools import chain
from typing import Callable, Iterable, Optional

import torch
from torch import nn

PLAIN = (bool, int, float, str, type(None))
MEMO_LIMIT_BYTES = 1 * 2**30  # features kept at most; the least recently used go first


def _plain_settings(module: nn.Module) -> list[tuple[str, object]]:
    """A module's attributes that are plain values (or tuples of them): its settings, such as a LoRA scale."""
    items = []
    for name, value in sorted(vars(module).items()):
        if isinstance(value, PLAIN) or (isinstance(value, tuple) and all(isinstance(v, PLAIN) for v in value)):
            items.append((name, value))
    return items


def _hooks(module: nn.Module) -> list[str]:
    hooks = chain(module._forward_pre_hooks.values(), module._forward_hooks.values())
    return [getattr(hook, "__qualname__", type(hook).__qualname__) for hook in hooks]


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The raw bytes of a tensor (any dtype, any device), in memory order of a contiguous copy."""
    flat = tensor.detach().contiguous().reshape(-1)
    return flat.view(torch.uint8).cpu().numpy().tobytes() if flat.numel() else b""


def module_fingerprint(module: nn.Module, identity: str = "", skip: Iterable[str] = ()) -> str:
    """A digest of everything a module's output depends on (see the module docstring); submodules and tensors under
    the names in `skip` (prefixes, e.g. a classifier head that the features never read) are left out."""
    skipped = tuple(skip)

    def kept(name: str) -> bool:
        return not any(name == s or name.startswith(s + ".") for s in skipped)

    digest = hashlib.blake2b(identity.encode(), digest_size=20)
    for name, sub in module.named_modules():
        if kept(name):  # the root's class is what `identity` says of it (modules alone decide: not recorded)
            kind = type(sub).__qualname__ if name else ""
            digest.update(repr((name, kind, _plain_settings(sub), _hooks(sub))).encode())
    for name, tensor in chain(module.named_parameters(), module.named_buffers()):
        if kept(name):
            digest.update(repr((name, str(tensor.dtype), tuple(tensor.shape))).encode())
            digest.update(tensor_bytes(tensor))
    return digest.hexdigest()


class _TensorKeys:
    """Content digests of image tensors, computed once per tensor object and version (tensors are held weakly, so a
    freed tensor's id, reused by another tensor, is never mistaken for it)."""

    def __init__(self) -> None:
        self._keys: dict[int, tuple[weakref.ref, int, str]] = {}

    def __call__(self, tensor: torch.Tensor) -> str:
        known = self._keys.get(id(tensor))
        if known is not None and known[0]() is tensor and known[1] == tensor._version:
            return known[2]
        digest = hashlib.blake2b(repr((str(tensor.dtype), tuple(tensor.shape))).encode(), digest_size=20)
        digest.update(tensor_bytes(tensor))
        self._keys = {k: v for k, v in self._keys.items() if v[0]() is not None}
        self._keys[id(tensor)] = (weakref.ref(tensor), tensor._version, digest.hexdigest())
        return digest.hexdigest()


class FeatureMemo:
    """Tensors by key, least recently used evicted beyond `limit_bytes`; counts hits and misses."""

    def __init__(self, limit_bytes: int = MEMO_LIMIT_BYTES) -> None:
        self.limit_bytes = limit_bytes
        self._items: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.hits = self.misses = 0

    def get_or_compute(self, key: tuple, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        if key in self._items:
            self.hits += 1
            self._items.move_to_end(key)
            return self._items[key]
        self.misses += 1
        value = compute()
        if value.nbytes <= self.limit_bytes:
            self._items[key] = value
            while sum(v.nbytes for v in self._items.values()) > self.limit_bytes:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        self._items.clear()
        self.hits = self.misses = 0


MEMO = FeatureMemo()  # one per process
image_key = _TensorKeys()


def memoised(network_key: str, images: object, context: tuple,
             compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """`compute()` (a network's outputs on `images`), or the stored result of the same computation. Images that are
    not a tensor in memory are computed every time."""
    if not isinstance(images, torch.Tensor):
        return compute()
    return MEMO.get_or_compute((network_key, image_key(images), context), compute)


def frozen_key(module: nn.Module, identity: str = "") -> Optional[str]:
    """The fingerprint of a module none of whose parameters train, or None if one does (its outputs may change)."""
    if any(p.requires_grad for p in module.parameters()):
        return None
    return module_fingerprint(module, identity)
