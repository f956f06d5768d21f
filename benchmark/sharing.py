"""Work that cannot differ between evaluations is done once per process: features memoised by what determines them.

Every run of a suite starts from the same pre-trained backbone, and many strategies leave its features untouched
for a whole run (linear probing, prototype and prompt methods' frozen query) or until their first task: scoring
retention before training, or a frozen backbone's features after every task, repeats the same computation. Here a
network's features of a set of images are kept under a key made of everything they depend on:

- the network: its modules' classes, their plain settings (numbers, strings, flags such as `training`), their
  forward hooks, and the bytes of every parameter and buffer (content, not identity: the copies of a backbone in
  two runs are equal until one of them trains), plus what the strategy says decides its features beyond that
  (`Strategy.feature_identity`: by default its class and configuration);
- the images: the bytes of the tensor; for a data set read from files, the files' contents and the transform that
  decodes them (`benchmark.datasets.fingerprints`: a hit decodes no file);
- how the features were computed: device, autocast precision, evaluation batch size.

So a hit returns exactly the tensor a fresh computation would (same kernels, same batches), and a result is the
same bit for bit with sharing on or off (tested for every strategy). The memo lives in one process: runs in the
same process (the default executor) share it; each worker process or Ray worker has its own, which keeps it correct
under any executor and under resume without any file to invalidate. Images read from disk whose pixels are not
decided by their files (random training augmentation) or not known to be (a data set of another kind) are never
memoised.

A tensor's digest is xxHash's XXH3-128 of its bytes (the `xxhash` package: ~10 GB/s, where hashlib's cryptographic
digests manage ~0.5 GB/s; no adversary here, and 128 bits make an accidental collision negligible), kept per tensor
object and recomputed only when the tensor's version counter has moved: PyTorch counts every in-place change
(optimizer steps, `copy_`, `load_state_dict`), so a frozen backbone is hashed once per run. A strategy must change its
tensors in place through PyTorch operations, never through `.data` (which bypasses the counter).
"""

from __future__ import annotations

import contextlib
import weakref
from collections import OrderedDict
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Optional

import torch
import xxhash
from torch import nn

from benchmark.datasets.fingerprints import image_set_fingerprint

if TYPE_CHECKING:
    from benchmark.feature_store import FeatureStore

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


def content_digest(tensor: torch.Tensor) -> str:
    """XXH3-128 of a tensor's dtype, shape and bytes."""
    digest = xxhash.xxh3_128(repr((str(tensor.dtype), tuple(tensor.shape))).encode())
    digest.update(tensor_bytes(tensor))
    return digest.hexdigest()


class _TensorDigests:
    """Content digests of tensors (dtype, shape, bytes), computed once per tensor object and version (tensors are
    held weakly, so a freed tensor's id, reused by another tensor, is never mistaken for it)."""

    def __init__(self) -> None:
        self._known: dict[int, tuple[weakref.ref, int, str]] = {}
        self._prune_at = 1024

    def __call__(self, tensor: torch.Tensor) -> str:
        known = self._known.get(id(tensor))
        if known is not None and known[0]() is tensor and known[1] == tensor._version:
            return known[2]
        digest = content_digest(tensor)
        if len(self._known) >= self._prune_at:  # forget freed tensors now and then
            self._known = {k: v for k, v in self._known.items() if v[0]() is not None}
            self._prune_at = max(1024, 2 * len(self._known))
        self._known[id(tensor)] = (weakref.ref(tensor), tensor._version, digest)
        return digest


tensor_digest = _TensorDigests()


def module_fingerprint(module: nn.Module, identity: str = "", skip: Iterable[str] = (), hooks: bool = True) -> str:
    """A digest of everything a module's output depends on (see the module docstring); submodules and tensors under
    the names in `skip` (prefixes, e.g. a classifier head that the features never read) are left out, and with
    `hooks` False the forward hooks (for a caller that knows every hook is switched off in the pass it keys)."""
    skipped = tuple(skip)

    def kept(name: str) -> bool:
        return not any(name == s or name.startswith(s + ".") for s in skipped)

    digest = xxhash.xxh3_128(identity.encode())
    for name, sub in module.named_modules():
        if kept(name):  # the root's class is what `identity` says of it (modules alone decide: not recorded)
            kind = type(sub).__qualname__ if name else ""
            digest.update(repr((name, kind, _plain_settings(sub), _hooks(sub) if hooks else ())).encode())
    for name, tensor in chain(module.named_parameters(), module.named_buffers()):
        if kept(name):
            digest.update(repr((name, tensor_digest(tensor))).encode())
    return digest.hexdigest()


class FeatureMemo:
    """Tensors by key, least recently used evicted beyond `limit_bytes`; counts hits and misses."""

    def __init__(self, limit_bytes: int = MEMO_LIMIT_BYTES) -> None:
        self.limit_bytes = limit_bytes
        self._items: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._bytes = 0
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
            self._bytes += value.nbytes
            while self._bytes > self.limit_bytes:
                self._bytes -= self._items.popitem(last=False)[1].nbytes
        return value

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0
        self.hits = self.misses = 0


MEMO = FeatureMemo()  # one per process
STORE: list[Optional[FeatureStore]] = [None]  # the persistent store below the memo (`use_store`), if any
_PAUSED = [0]  # > 0: inside `computing_everything`


@contextlib.contextmanager
def computing_everything() -> Iterator[None]:
    """Within: every pass is computed, none taken from the memo (counting a prediction's FLOPs must see its work)."""
    _PAUSED[0] += 1
    try:
        yield
    finally:
        _PAUSED[0] -= 1


def use_store(folder: Optional[str], limit_bytes: int) -> None:
    """Keep memoised features on disk in `folder` too (benchmark/feature_store.py), or, with None, in memory only."""
    from benchmark.feature_store import FeatureStore  # the store builds on this module's digests

    current = STORE[0]
    if folder is None:
        STORE[0] = None
    elif current is None or current.root != Path(folder) or current.limit_bytes != limit_bytes:
        STORE[0] = FeatureStore(Path(folder), limit_bytes)


def memoised(network_key: str, images: object, context: tuple, compute: Callable[[], torch.Tensor],
             persist: bool = True) -> torch.Tensor:
    """`compute()` (a network's outputs on `images`), or the stored result of the same computation: from this
    process's memo, else, when `persist` and a store is in use, from disk. `images`: a tensor, or a data set read
    from files (`images_digest`); anything else is computed every time."""
    digest = None if _PAUSED[0] else images_digest(images)
    if digest is None:
        return compute()
    key = (network_key, digest, context)
    store = STORE[0] if persist else None
    return MEMO.get_or_compute(key, compute if store is None else lambda: store.get_or_compute(key, compute))


def images_digest(images: object) -> Optional[str]:
    """What keys a set of images: a tensor's content digest, a file-backed data set's fingerprint; None when neither
    decides its images (random augmentation, another kind of data set)."""
    if isinstance(images, torch.Tensor):
        return tensor_digest(images)
    return image_set_fingerprint(images)


def shared_pass(network: nn.Module, identity: str, fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
                share: bool, context: tuple, skip: Iterable[str] = (), hooks: bool = True) -> torch.Tensor:
    """`fn(inputs)`, a gradient-free pass through `network` (whose fingerprint with `identity` and `skip` must
    decide it), or the stored outputs of an earlier pass of an equal network on equal inputs: the same tensor. For
    passes inside a strategy on one batch at a time, such as prompt methods' frozen query. A pass with autograd on,
    or with any module in train mode (dropout would draw random numbers), is always computed. Batches are kept in
    memory only (one file per training batch would cost more than it saves). `hooks`: as in `module_fingerprint`."""
    if not share or torch.is_grad_enabled() or any(module.training for module in network.modules()):
        return fn(inputs)
    key = module_fingerprint(network, identity, skip, hooks)
    return memoised(key, inputs, context, lambda: fn(inputs), persist=False)
