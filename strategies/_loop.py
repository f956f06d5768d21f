"""The one training loop strategies call: data, parameters and loss in, trained parameters out.

Kept plain (as nanoGPT's train.py): a strategy with a special phase writes that phase out itself. The loop does not
change train/eval modes; the strategy sets them (a frozen backbone stays in eval mode).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from benchmark.config import require
from benchmark.errors import RunDiverged
from benchmark.recipe import RecipeConfig
from benchmark.datasets.fingerprints import image_set_fingerprint
from benchmark.evaluation import IN_MEMORY_LIMIT_BYTES, apply, as_tensors, fits_in_memory, labels_of
from benchmark.sharing import memoised
from benchmark.tracking.steps import current_step_log
from benchmark.runtime import Runtime
from benchmark.streams import Task
from strategies._heads import HEAD_INITS

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": lambda params, c: torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay),
    "adamw": lambda params, c: torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay),
}


def epoch_cosine(epoch: int, epochs: int) -> float:
    """lr multiplier of `CosineAnnealingLR(T_max=epochs, eta_min=0)` stepped once per epoch (LAMDA-PILOT, RanPAC,
    RevisitingCIL): (1 + cos(pi e / E)) / 2 in epoch e = 0 .. E - 1, so the first epoch runs at the full lr."""
    return (1 + math.cos(math.pi * epoch / epochs)) / 2


def coda_cosine(epoch: int, epochs: int) -> float:
    """lr multiplier of GT-RIPL's `CosineSchedule` as CODA-Prompt and InfLoRA step it (`utils/schedulers.py`, stepped
    at the start of every epoch after the scheduler's own first step): cos(99 pi s / (200 (K - 1))) with s = max(e - 1,
    0), so the first lr is used in epochs 0 and 1 and the last epoch runs at about cos(0.495 pi (K - 2) / (K - 1))
    (0.10 for K = 20). K = 1: the full lr."""
    if epochs == 1:
        return 1.0
    return math.cos(99 * math.pi * max(epoch - 1, 0) / (200 * (epochs - 1)))


def timm_step(epoch: int, every: int = 30, rate: float = 0.1) -> float:
    """lr multiplier of timm's `StepLRScheduler(decay_t=30, decay_rate=0.1)` as HiDe-Prompt steps it (`step(e)` after
    epoch e sets the next epoch's lr): rate ** (max(e - 1, 0) // every), so the decay starts one epoch late (epoch 31
    of 0 .. 49)."""
    return rate ** (max(epoch - 1, 0) // every)


def timm_cosine(epoch: int, epochs: int, base: float, floor: float = 1e-5) -> float:
    """lr multiplier of timm's `CosineLRScheduler(t_initial=epochs, lr_min=1e-5)` as HiDe-Prompt steps it: the lr
    floor + (base - floor) (1 + cos(pi s / epochs)) / 2 with s = max(e - 1, 0), divided by the group's `base` lr (the
    floor is absolute, the same for every parameter group)."""
    return (floor + (base - floor) * (1 + math.cos(math.pi * max(epoch - 1, 0) / epochs)) / 2) / base


def per_group(optimizer: torch.optim.Optimizer,
              multiplier: Callable[[float], Callable[[int], float]]) -> torch.optim.lr_scheduler.LRScheduler:
    """A LambdaLR whose multiplier may depend on each parameter group's own lr: `multiplier(lr)(step)`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, [multiplier(group["lr"]) for group in optimizer.param_groups])


# name -> (optimizer, epochs, steps per epoch) -> a scheduler stepped after every optimizer step, or None (constant)
Schedule = Callable[[torch.optim.Optimizer, int, int], Optional[torch.optim.lr_scheduler.LRScheduler]]
SCHEDULES: dict[str, Schedule] = {
    "constant": lambda optimizer, epochs, steps: None,
    # a half cosine from lr to 0 over every step of the task (the suite's protocol)
    "cosine": lambda optimizer, epochs, steps: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps),
    "cosine-epochs": lambda optimizer, epochs, steps: torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: epoch_cosine(step // steps, epochs)),
    "coda-cosine": lambda optimizer, epochs, steps: torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: coda_cosine(step // steps, epochs)),
    "hide-step": lambda optimizer, epochs, steps: torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: timm_step(step // steps)),
    "hide-cosine": lambda optimizer, epochs, steps: per_group(
        optimizer, lambda base: lambda step: timm_cosine(step // steps, epochs, base)),
}
LOSSES = ("local", "global")
Stage = Callable[[torch.Tensor], torch.Tensor]  # one part of a network: its input -> its output


@dataclass(frozen=True)
class TrainConfig(RecipeConfig):
    """Hyper-parameters of the shared loop; strategy configs extend it."""

    epochs: int = 5  # passes over each task's training set
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adamw"  # sgd or adamw
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    schedule: str = "cosine"  # lr over each task: constant, cosine (per step, to 0), cosine-epochs, coda-cosine, hide-*
    grad_clip: Optional[float] = None  # clip the gradients' global L2 norm to this before each step; null: no clipping
    drop_last: bool = False  # drop each epoch's last, partial batch (CODA-Prompt's loader does)
    head_init: Optional[str] = None  # new head rows (strategies/_heads.py HEAD_INITS); null: trunc_normal (timm's)
    loss: str = "local"  # cross-entropy over the current task's classes (local) or all classes seen (global)
    joint: bool = False  # train once on the union of the stream's tasks: the joint-training upper bound (docs/strategies)

    def __post_init__(self) -> None:
        self.resolve_recipe()
        if self.head_init is None:
            object.__setattr__(self, "head_init", "trunc_normal")
        require(self.epochs >= 1, "epochs", ">= 1", self.epochs)
        require(self.batch_size >= 1, "batch_size", ">= 1", self.batch_size)
        require(self.lr > 0, "lr", "> 0", self.lr)
        require(self.optimizer in OPTIMIZERS, "optimizer", f"one of {', '.join(OPTIMIZERS)}", self.optimizer)
        require(0 <= self.momentum < 1, "momentum", "in [0, 1)", self.momentum)
        require(self.weight_decay >= 0, "weight_decay", ">= 0", self.weight_decay)
        require(self.schedule in SCHEDULES, "schedule", f"one of {', '.join(SCHEDULES)}", self.schedule)
        require(self.grad_clip is None or self.grad_clip > 0, "grad_clip", "> 0 or null", self.grad_clip)
        require(self.head_init in HEAD_INITS, "head_init", f"one of {', '.join(HEAD_INITS)}", self.head_init)
        require(self.loss in LOSSES, "loss", f"one of {', '.join(LOSSES)}", self.loss)


def task_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, task: Task, kind: str) -> torch.Tensor:
    """Cross-entropy over the current task's output units ("local": PyCIL's and PILOT's `finetune`, SLCA's slow
    learner; old classes' logits get no gradient) or over every unit seen so far ("global": old classes are pushed
    down, the classic catastrophic-forgetting set-up). In a domain-incremental stream both are the same."""
    if kind == "global":
        return F.cross_entropy(logits, labels)
    units, position = local_units(task.labels, logits.shape[1], logits.device)
    return F.cross_entropy(logits[:, units], position[labels])


@functools.lru_cache(maxsize=64)
def local_units(labels: tuple[int, ...], num_outputs: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The task's output units, and each unit's position among them (-1 elsewhere), made once per task and device:
    built every step they cost a host-to-device copy and a few kernel launches, a tenth of a small model's GPU step."""
    units = torch.tensor(labels, device=device)
    position = torch.full((num_outputs,), -1, dtype=torch.long, device=device)
    position[units] = torch.arange(len(units), device=device)
    return units, position




class _TooLarge(Exception):
    """Outputs that would not fit in IN_MEMORY_LIMIT_BYTES: nothing to memoise."""


@torch.no_grad()
def precompute(transform: Callable[[torch.Tensor], torch.Tensor], data: Dataset, runtime: Runtime,
               key: Optional[str] = None) -> Optional[TensorDataset]:
    """(transform(image), label) for every item, computed once, or None when the outputs would not fit in
    IN_MEMORY_LIMIT_BYTES (extrapolated from the first batch). With the `key` of a frozen `transform` (a
    `feature_key`), outputs are shared with earlier calls on the same images (`benchmark.sharing`): a data set read
    from files by its files' contents, without decoding them on a hit; any other data set that fits by its decoded
    tensor."""
    if key is not None and runtime.share:
        if image_set_fingerprint(data) is not None:
            return _shared_file_outputs(transform, data, runtime, key)
        if fits_in_memory(data):
            images, labels = as_tensors(data, runtime)
            compute = lambda: apply(transform, images, runtime).cpu()  # noqa: E731  (the same batches as below)
            return TensorDataset(memoised(key, images, runtime.context, compute), labels)
    return _outputs(transform, data, runtime)


def _shared_file_outputs(transform: Callable[[torch.Tensor], torch.Tensor], data: Dataset, runtime: Runtime,
                         key: str) -> Optional[TensorDataset]:
    """`precompute` of a data set read from files, memoised under its fingerprint; labels from its `targets`."""

    def compute() -> torch.Tensor:
        computed = _outputs(transform, data, runtime)
        if computed is None:
            raise _TooLarge
        return computed.tensors[0]

    try:
        return TensorDataset(memoised(key, data, runtime.context, compute), labels_of(data))
    except _TooLarge:
        return None


def _outputs(transform: Callable[[torch.Tensor], torch.Tensor], data: Dataset,
             runtime: Runtime) -> Optional[TensorDataset]:
    """`precompute` without sharing: the data set read in evaluation batches."""
    outputs, labels = [], []
    # A loader of its own generator: caching must not draw from the global RNG that training's shuffling uses.
    loader = DataLoader(data, batch_size=runtime.eval_batch, shuffle=False, generator=torch.Generator(),
                        **runtime.loader_options(data, persistent=False))
    for images, batch_labels in loader:
        with runtime.autocast():
            outputs.append(transform(images.to(runtime.device, non_blocking=True)).float().cpu())
        labels.append(batch_labels)
        if len(outputs) == 1 and outputs[0][0].nbytes * len(data) > IN_MEMORY_LIMIT_BYTES:
            return None
    return TensorDataset(torch.cat(outputs), torch.cat(labels))


def training_data(task: Task, runtime: Runtime) -> Dataset:
    """The task's training set as tensors in memory when its items are fixed (no random augmentation) and fit, so
    that batches are sliced instead of gathered item by item; otherwise the task's data set as it is."""
    in_memory = None if task.train_augmented else precompute(_identity, task.train, runtime)
    return task.train if in_memory is None else in_memory


def frozen_prefix_data(prefix: Stage, task: Task, runtime: Runtime,
                       key: Optional[str] = None) -> tuple[Dataset, Stage]:
    """Training data for the part of a network after a frozen, eval-mode `prefix`, and what to apply to its items.

    Without augmentation the prefix's outputs are computed once (training on them equals training through the
    prefix every epoch, at a fraction of the cost; with the prefix's `key`, once per process for the same images);
    with augmentation, or outputs too large to keep, the prefix runs on every batch without autograd, so no
    backward pass goes through it either way."""
    cached = None if task.train_augmented else precompute(prefix, task.train, runtime, key)
    if cached is None:
        return task.train, torch.no_grad()(prefix)
    return cached, _identity


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (images, labels) -> scalar loss


def fit(loss_fn: Loss, parameters: Iterable[torch.nn.Parameter] | list[dict], data: Dataset, config: TrainConfig,
        runtime: Runtime, desc: str = "train", on_epoch: Optional[Callable[[int], object]] = None,
        after_step: Optional[Callable[[], object]] = None) -> float:
    """Minimise `loss_fn` over `data` for `config.epochs` epochs; returns the mean loss of the last epoch.
    `on_epoch(epoch)` runs before each epoch (e.g. a penalty that starts after warm-up epochs), `after_step()` after
    every optimiser step and lr update (e.g. MOS's merge of the trained adapters with the earlier ones).

    A NaN or infinite loss raises RunDiverged (checked at the end of each epoch)."""
    loader = shuffled_batches(data, config.batch_size, runtime, config.drop_last)
    optimizer = OPTIMIZERS[config.optimizer](parameters, config)
    schedule = SCHEDULES[config.schedule](optimizer, config.epochs, len(loader))
    step = functools.partial(_after_step, schedule, after_step)
    losses: list[torch.Tensor] = []
    for epoch in runtime.bar(range(config.epochs), desc=desc):
        if on_epoch is not None:
            on_epoch(epoch)
        losses = run_epoch(loss_fn, loader, optimizer, runtime, after_step=step, grad_clip=config.grad_clip)
        check_finite(losses, epoch, steps_before=epoch * len(loader))
    return float(torch.stack(losses).mean()) if losses else 0.0


def _after_step(schedule: Optional[torch.optim.lr_scheduler.LRScheduler],
                after_step: Optional[Callable[[], object]]) -> None:
    if schedule is not None:
        schedule.step()
    if after_step is not None:
        after_step()


def shuffled_batches(data: Dataset, batch_size: int, runtime: Runtime,
                     drop_last: bool = False) -> DataLoader | TensorBatches:
    """Mini-batches of `data` in a new order every epoch (drawn from torch's global generator)."""
    if isinstance(data, TensorDataset):
        return TensorBatches(data.tensors, batch_size, drop_last)
    return DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=drop_last,
                      **runtime.loader_options(data, persistent=True))


class TensorBatches:
    """Shuffled mini-batches of tensors in memory, sliced at once instead of gathered item by item and collated:
    what `DataLoader(TensorDataset(...), shuffle=True)` yields, without its per-item cost (on a GPU, where a small
    model's step takes about a millisecond, that cost is most of the step).

    Each epoch draws from torch's global generator exactly what that DataLoader draws (a worker base seed, then the
    sampler's seed for its permutation), so both give the same batches and a run's numbers do not depend on which
    one served them."""

    def __init__(self, tensors: tuple[torch.Tensor, ...], batch_size: int, drop_last: bool = False) -> None:
        self.tensors, self.batch_size, self.drop_last = tensors, batch_size, drop_last

    def __len__(self) -> int:
        items = len(self.tensors[0])
        return items // self.batch_size if self.drop_last else -(-items // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        torch.empty((), dtype=torch.int64).random_()  # DataLoader's worker base seed (unused without workers)
        seed = int(torch.empty((), dtype=torch.int64).random_().item())  # RandomSampler's seed
        order = torch.randperm(len(self.tensors[0]), generator=torch.Generator().manual_seed(seed))
        for batch in range(len(self)):
            indices = order[batch * self.batch_size: (batch + 1) * self.batch_size]
            yield tuple(tensor[indices] for tensor in self.tensors)


Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]  # a DataLoader, or any iterable of (inputs, labels)


def run_epoch(loss_fn: Loss, batches: Batches, optimizer: torch.optim.Optimizer, runtime: Runtime,
              after_step: Optional[Callable[[], object]] = None,
              grad_clip: Optional[float] = None) -> list[torch.Tensor]:
    """One pass over `batches`: loss, backward, with `grad_clip` the gradients' global L2 norm clipped to it (as
    l2p-pytorch's `clip_grad_norm_(model.parameters(), 1.0)`), optimizer step, then `after_step` (a per-step lr
    schedule, LAE's EMA). Returns the detached losses, for `check_finite` once per epoch. Strategies with their own
    epoch structure (an epoch-wise schedule, warm-up epochs) call this instead of `fit`. With experiment tracking on,
    each step is reported to the run's step log (benchmark/tracking/steps.py: throttled loss and lr, no number changed)."""
    clipped = [p for group in optimizer.param_groups for p in group["params"]] if grad_clip else []
    step_log = current_step_log()  # None without tracking: no per-step cost
    losses = []
    for images, labels in batches:
        images = images.to(runtime.device, non_blocking=True)
        labels = labels.to(runtime.device, non_blocking=True)
        with runtime.autocast():
            loss = loss_fn(images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(clipped, grad_clip)
        if step_log is not None:
            step_log.record(loss, optimizer)
        optimizer.step()
        if after_step is not None:
            after_step()
        losses.append(loss.detach())
    return losses


def check_finite(losses: list[torch.Tensor], epoch: int, steps_before: int) -> None:
    """Raise RunDiverged at the first non-finite loss of an epoch: one host sync per epoch, none per step."""
    if not losses:
        return
    finite = torch.isfinite(torch.stack(losses).float())
    if not bool(finite.all()):
        first = int((~finite).nonzero()[0, 0])
        raise RunDiverged(step=steps_before + first, epoch=epoch)
