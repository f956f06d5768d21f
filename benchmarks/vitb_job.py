"""The ViT-B/16 job (`benchmarks/throughput.py --scale vitb`): the suite against a bare loop, per strategy family, on
generated 224 px JPEG folders.

Set-up, in a temporary folder: a VTAB-shaped benchmark (`vtab/train/<class>/` and `vtab/test/<class>/`, 50 classes,
`--per-class` JPEGs of each class in each split, benchmarks/jpeg_folders.py) as the stream `split-vtab` in
`--tasks` tasks (unshuffled, as split-vtab runs); ImageNet-1k-shaped folders (`imagenet/val/<wnid>/`, one 224 px
JPEG, hard-linked into every class) of which the retention head scores 10 images after every task; and random
weights of
`--vit` (default `vit_base_patch16_224.augreg_in21k_ft_in1k`) saved as a safetensors file, which the suite's backbone
path (`build_backbone(name, pretrained_file=...)`) loads as it loads downloaded weights.

Per family, one strategy on one epoch per task:
  full fine-tuning `full_ft`, LoRA `lora` (rank 8), prompts `l2p` (its mini preset), prototypes `simplecil`.
The suite: `benchmark.runner.run` (as `run_suite.py` runs a run; no checkpoints), reading the files through its
stream. The bare loop: torchvision `ImageFolder` + `DataLoader` with torchvision's PIL transforms on the same files,
the same optimiser, schedule and loss as the strategy, the same T x T evaluations and retention scores (the
backbone's own head on the same retention images); it borrows only the strategy's network (LoRA layers, prompts and
their selection), so both train the same parameters, and shares nothing between evaluations (the borrowed network
runs with the runtime's `share` off, so L2P's prompt-free query is computed every time it is asked for, and the memo
an earlier suite run filled is cleared first). The two alternate per family, who goes first alternating (suite,
bare, bare, suite, ...), after an untimed training step and evaluation batch of the backbone; medians are reported,
and the ratio bare seconds / suite seconds (>= 1: the suite is no slower). Both read the retention images from the
backbone's cache of them (decoded once per process).
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import timm
from timm.data import ImageNetInfo
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from benchmark.backbones import Backbone, build_backbone
from benchmark.config import parse_suite
from benchmark.results import RunSpec
from benchmark.runner import forget_shared, run, seed_everything
from benchmark.runtime import Runtime
from benchmark.streams import Task, build_stream
from benchmark.suite import plan_runs
from benchmarks.image_pipeline import bare_datasets
from benchmarks.jpeg_folders import write_class_folders
from strategies._prompts import key_pull
from strategies.base import Strategy, build_strategy

VIT_B16 = "vit_base_patch16_224.augreg_in21k_ft_in1k"
VTAB_CLASSES = 50  # split-vtab's folder must hold VTAB's 50 classes
IMAGENET_CLASSES = 1000  # the head protocol scores the backbone's ImageNet-1k head: val/ holds its 1000 wnids
RETENTION_IMAGES = 10
FAMILIES = {"full-ft": ("full_ft", {"lr": 1.0e-4}), "lora": ("lora", {"lr": 1.0e-3, "rank": 8}),
            "prompts": ("l2p", {"preset": "mini"}), "prototypes": ("simplecil", {})}


def prepare(folder: Path, vit: str, per_class: int, seed: int = 0) -> dict[str, str]:
    """The job's files under `folder`: the benchmark, the retention images, the random weights."""
    write_class_folders(folder / "vtab", VTAB_CLASSES, per_class, 224, seed)
    image = next((write_class_folders(folder / "one", 1, 1, 224, seed + 1) / "test").rglob("*.jpg"))
    for wnid in ImageNetInfo("imagenet-1k").label_names():  # a 1000-class val/ must hold ImageNet-1k's wnids
        (folder / "imagenet" / "val" / wnid).mkdir(parents=True)
        os.link(image, folder / "imagenet" / "val" / wnid / "0.jpg")
    torch.manual_seed(seed)
    weights = folder / "weights.safetensors"
    save_file(timm.create_model(vit.split(".")[0]).state_dict(), str(weights))
    return {"data_dir": str(folder), "imagenet_dir": str(folder / "imagenet"), "pretrained_file": str(weights)}


def job_specs(files: dict[str, str], vit: str, tasks: int, batch_size: int, runtime: Runtime) -> dict[str, RunSpec]:
    """One run spec per family: the suite's planning of a suite file naming the job."""
    strategies = {name: {**params, "epochs": 1, "batch_size": batch_size} if name != "simplecil" else params
                  for name, params in FAMILIES.values()}
    config = parse_suite({
        "backbones": {vit: {"pretrained_file": files["pretrained_file"], "imagenet_dir": files["imagenet_dir"]}},
        "streams": {"split-vtab": {"data_dir": files["data_dir"], "n_tasks": tasks}},
        "strategies": strategies, "seeds": [1993], "precision": runtime.precision, "device": runtime.device.type,
        "retention": {"protocols": {"head": {}}, "eval_size": RETENTION_IMAGES}}, "vitb job")
    specs = {spec.strategy: spec for spec in plan_runs(config, runtime)}
    return {family: specs[strategy] for family, (strategy, _) in FAMILIES.items()}


# --- the bare loop -------------------------------------------------------------------------------------------------

def pre_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.forward_head(model.forward_features(x), pre_logits=True)


class BareTuned:
    """Full fine-tuning and LoRA: a linear head over every class on the borrowed network's features, AdamW with a
    per-step cosine schedule per task, cross-entropy over the task's classes."""

    def __init__(self, network: Strategy, classes: int, runtime: Runtime) -> None:
        self.model, self.config, self.runtime = network.backbone, network.config, runtime
        self.head = nn.Linear(network.feature_dim, classes).to(runtime.device)
        self.seen = 0

    def train(self, task: Task, loader: DataLoader) -> None:
        self.seen = task.num_outputs
        units, position = task_units(task, self.head.out_features, self.runtime)
        trainable = [p for p in self.model.parameters() if p.requires_grad] + list(self.head.parameters())
        optimizer = torch.optim.AdamW(trainable, lr=self.config.lr, weight_decay=self.config.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.config.epochs * len(loader))
        self.model.train()
        for _ in range(self.config.epochs):
            for x, y in loader:
                with self.runtime.autocast():
                    loss = F.cross_entropy(self.head(pre_logits(self.model, x))[:, units], position[y])
                step(loss, optimizer)
                schedule.step()
        self.model.eval()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(pre_logits(self.model, x))[:, :self.seen]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return pre_logits(self.model, x)


class BarePrompts:
    """L2P: the borrowed pool, keys, selection and head; per batch a prompt-free query pass without autograd, the
    prompted pass, cross-entropy over the task's classes minus the key pull; Adam at a constant lr."""

    def __init__(self, network: Strategy, classes: int, runtime: Runtime) -> None:
        self.network, self.classes, self.runtime = network, classes, runtime

    def train(self, task: Task, loader: DataLoader) -> None:
        network, config = self.network, self.network.config
        network.head.grow(task.num_outputs)
        units, position = task_units(task, self.classes, self.runtime)
        counts = network.selections.new_zeros(config.pool_size)
        optimizer = torch.optim.Adam([network.prompts, network.keys, *network.head.parameters()], lr=config.lr)
        for _ in range(config.epochs):
            for x, y in loader:
                with self.runtime.autocast():
                    with torch.no_grad():
                        query = network.prompted.query(x)
                    chosen = network.selected(query)
                    counts.add_(torch.bincount(chosen.flatten(), minlength=config.pool_size))
                    loss = (F.cross_entropy(network.logits(x, chosen)[:, units], position[y])
                            - config.pull * key_pull(query, network.keys, chosen))
                step(loss, optimizer)
        network.selections = torch.cat([network.selections, counts.unsqueeze(0)])

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.predict(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.features(x)


class BarePrototypes:
    """SimpleCIL: per class the mean frozen feature of its training images (test transform), cosine logits."""

    def __init__(self, network: Strategy, classes: int, runtime: Runtime) -> None:
        self.model, self.runtime = network.backbone, runtime
        self.sums = torch.zeros(classes, network.feature_dim, dtype=torch.float64, device=runtime.device)
        self.counts = torch.zeros(classes, dtype=torch.float64, device=runtime.device)
        self.seen = 0

    def train(self, task: Task, loader: DataLoader) -> None:
        self.seen = task.num_outputs
        with torch.no_grad(), self.runtime.autocast():
            for x, y in loader:
                self.sums.index_add_(0, y, pre_logits(self.model, x).double())
                self.counts.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        means = (self.sums[:self.seen] / self.counts[:self.seen, None]).float()
        return F.normalize(pre_logits(self.model, x).float(), dim=1) @ F.normalize(means, dim=1).T

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return pre_logits(self.model, x)


BARE = {"full_ft": BareTuned, "lora": BareTuned, "l2p": BarePrompts, "simplecil": BarePrototypes}


def task_units(task: Task, classes: int, runtime: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    """The task's output units, and each unit's position among them (-1 elsewhere): task-local cross-entropy."""
    units = torch.tensor(task.labels, device=runtime.device)
    position = torch.full((classes,), -1, dtype=torch.long, device=runtime.device)
    position[units] = torch.arange(len(units), device=runtime.device)
    return units, position


def step(loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def accuracy(predict: Callable[[torch.Tensor], torch.Tensor], batches: Iterable, runtime: Runtime) -> float:
    correct = total = 0
    with torch.no_grad(), runtime.autocast():
        for x, y in batches:
            correct += int((predict(x.to(runtime.device)).argmax(1).cpu() == y).sum())
            total += len(y)
    return 100.0 * correct / total


def of_classes(dataset: Dataset, classes: Iterable[int]) -> Subset:
    wanted = set(classes)
    return Subset(dataset, [i for i, target in enumerate(dataset.targets) if target in wanted])


def bare_job(spec: RunSpec, runtime: Runtime, backbone: Backbone) -> dict[str, Any]:
    """The run written out with torchvision's data pipeline and no sharing (see the module docstring): the borrowed
    network gets a runtime that shares nothing, and nothing an earlier suite run shared is left to reuse."""
    forget_shared()
    runtime = dataclasses.replace(runtime, share=False)
    stream = build_stream(spec.stream, spec.seed, image_spec=backbone.image_spec, **spec.stream_params)
    label_of = {c: label for task in stream.tasks for c, label in zip(task.classes, task.labels)}
    data = bare_datasets(Path(spec.stream_params["data_dir"]) / "vtab", backbone.image_spec, label_of.__getitem__)
    retention_set = backbone.pretrain_data("test", spec.retention["eval_size"], spec.retention["subset_seed"])
    workers = {"num_workers": runtime.loader_workers, "persistent_workers": runtime.loader_workers > 0}
    tests = [DataLoader(of_classes(data["test"], task.classes), batch_size=runtime.eval_batch, **workers)
             for task in stream.tasks]
    seed_everything(spec.seed)
    network = build_strategy(spec.strategy, spec.strategy_params, copy.deepcopy(backbone.model), runtime)
    learner = BARE[spec.strategy](network, len(stream.class_order), runtime)
    original_head = copy.deepcopy(backbone.model.get_classifier()).to(runtime.device)
    retained = lambda: accuracy(lambda x: original_head(learner.features(x)),  # noqa: E731
                                [(retention_set.images, retention_set.labels)], runtime)
    history: dict[str, Any] = {"retained": [retained()], "matrix": [], "train_s": 0.0}
    for task in stream.tasks:
        train = data["plain" if spec.strategy == "simplecil" else "train"]  # SimpleCIL: test transform, no training
        batch = getattr(network.config, "batch_size", runtime.eval_batch)
        loader = DataLoader(of_classes(train, task.classes), batch_size=batch, shuffle=True, **workers)
        start = time.perf_counter()
        learner.train(task, loader)
        history["train_s"] += time.perf_counter() - start
        history["matrix"].append([accuracy(learner.logits, test, runtime) for test in tests])
        history["retained"].append(retained())
    return history


def suite_job(spec: RunSpec, runtime: Runtime, backbone: Backbone) -> dict[str, Any]:
    """One run by the suite's runner from a cold start (nothing an earlier repeat shared is reused)."""
    forget_shared()
    result = run(spec, runtime, backbone)
    return {"train_s": sum(result["cost"]["train_s"]), "matrix": result["accuracy_matrix"]}


def warm_up(backbone: Backbone, batch_size: int, runtime: Runtime) -> None:
    """One training step and one evaluation batch of the backbone, untimed: the first run in a process would
    otherwise pay the kernels' first calls, whichever job it is."""
    model = copy.deepcopy(backbone.model).train()
    x = torch.randn(batch_size, *backbone.image_spec.input_size, device=runtime.device)
    with runtime.autocast():
        model(x).float().sum().backward()
    with torch.no_grad(), runtime.autocast():
        model.eval()(x)


def interleaved(specs: dict[str, RunSpec], families: Iterable[str], repeats: int, runtime: Runtime,
                backbone: Backbone) -> tuple[dict[str, dict[str, list[float]]], dict[str, dict[str, Any]]]:
    """Seconds of each family's suite run and bare loop, `repeats` times, who goes first alternating; and each one's
    last accuracy matrix."""
    seconds: dict[str, dict[str, list[float]]] = {}
    matrices: dict[str, dict[str, Any]] = {}
    gc.freeze()  # what lives now is no job's garbage: each collection below scans only what the jobs left
    try:
        for family in families:
            seconds[family], matrices[family] = {"suite": [], "bare": []}, {}
            for repeat in range(repeats):
                jobs = (("suite", suite_job), ("bare", bare_job))
                for name, job in jobs[::-1] if repeat % 2 else jobs:
                    gc.collect()
                    start = time.perf_counter()
                    matrices[family][name] = job(specs[family], runtime, backbone)["matrix"]
                    seconds[family][name].append(time.perf_counter() - start)
                    print(f"{family} {name}: {seconds[family][name][-1]:.1f} s", file=sys.stderr, flush=True)
    finally:
        gc.unfreeze()
    return seconds, matrices


def measure(vit: str, per_class: int, tasks: int, batch_size: int, repeats: int, runtime: Runtime,
            families: Iterable[str]) -> dict[str, Any]:
    """The job's files written, the backbone loaded and warmed up, then `interleaved`; medians and ratios."""
    with tempfile.TemporaryDirectory() as folder:
        files = prepare(Path(folder), vit, per_class)
        specs = job_specs(files, vit, tasks, batch_size, runtime)
        backbone = build_backbone(vit, pretrained_file=files["pretrained_file"], imagenet_dir=files["imagenet_dir"])
        warm_up(backbone, batch_size, runtime)
        seconds, matrices = interleaved(specs, families, repeats, runtime, backbone)
    median = {family: {name: statistics.median(values) for name, values in jobs.items()}
              for family, jobs in seconds.items()}
    return {"mode": "vitb", "vit": vit, "tasks": tasks, "train_images": VTAB_CLASSES * per_class,
            "test_images": VTAB_CLASSES * per_class, "retention_images": RETENTION_IMAGES,
            "batch_size": batch_size, "precision": runtime.precision, "threads": torch.get_num_threads(),
            "loader_workers": runtime.loader_workers, "repeats": repeats,
            "strategies": {family: FAMILIES[family][0] for family in seconds},
            "seconds": {f: {n: round(v, 2) for n, v in jobs.items()} for f, jobs in median.items()},
            "all_seconds": {f: {n: [round(v, 2) for v in vs] for n, vs in jobs.items()} for f, jobs in seconds.items()},
            "bare_over_suite": {family: jobs["bare"] / jobs["suite"] for family, jobs in median.items()},
            "accuracy_matrices": matrices}


def print_report(report: dict[str, Any]) -> None:
    print(f"{report['vit']} (random weights), split-vtab of generated 224 px JPEGs: {report['tasks']} tasks, "
          f"{report['train_images']} train / {report['test_images']} test images, 1 epoch, batch "
          f"{report['batch_size']}, {report['precision']}, {report['threads']} threads, "
          f"{report['loader_workers']} loader workers, median of {report['repeats']}")
    for family, jobs in report["seconds"].items():
        print(f"{family:<18}{report['strategies'][family]:<11}suite {jobs['suite']:8.1f} s   bare {jobs['bare']:8.1f} s"
              f"   bare / suite {report['bare_over_suite'][family]:.2f}")
