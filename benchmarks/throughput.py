"""Throughput of one job done three ways, and of a grid done two ways; how close the suite gets to the hardware.

    python benchmarks/throughput.py [--strategy full_ft] [--stream mini-split-digits] [--config configs/mini.yaml]
                                    [--repeats 3] [--threads N] [--device auto] [--precision auto] [--json]
    python benchmarks/throughput.py --grid [--grid-strategies full_ft linear lora topk] [--seeds 1993 0]
                                    [--workers 2 [1 ...]] [--repeats 2] [--json]
    python benchmarks/throughput.py --grid --scale vitb [--seeds 1993 0 1] [--repeats 1] [--json]
    python benchmarks/throughput.py --precision-check [--threads N] [--json]
    python benchmarks/throughput.py --pipeline [--images 640] [--loader-workers 0] [--repeats 3] [--json]
    python benchmarks/throughput.py --scale vitb [--vit NAME] [--per-class 1] [--tasks 2] [--batch-size 16]
                                    [--families ...] [--loader-workers 0] [--threads 1] [--repeats 2] [--json]

Pipeline mode: decode-and-transform images/s (and per core) of the suite's image-file pipeline against a bare
torchvision ImageFolder + DataLoader on the same generated 224 px JPEGs (benchmarks/image_pipeline.py).

ViT-B/16 mode (`--scale vitb`): the suite against a bare loop per strategy family (full fine-tuning, LoRA, prompts,
prototypes) on generated 224 px JPEG folders, a random-weight ViT-B/16 loaded through the suite's backbone path
(benchmarks/vitb_job.py); `--vit` names a smaller timm ViT for a quick check.

Precision check: what `precision: auto` chooses on this machine (bf16 only where the CPU computes it natively) and
why, beside the measured fp32 and bf16 matrix-product rates.

Grid mode: the suite (`benchmark.suite.run_suite`, as `make run` runs it: `--workers` processes, sharing on; with
several worker counts, the suite at each) on a grid of strategies x the config's streams x seeds, against the same
runs done one after another by the bare loop (b) below, which shares nothing; they alternate (suite, bare, suite,
bare, ...) and medians are reported. Both score the same retention (head, `--retention-size` images) and the same
T x T matrix.

Grid mode at `--scale vitb`: a ViT-B/16 (`vit_base_patch16_224.augreg_in21k_ft_in1k` with random weights, saved to
a local file and loaded through the suite's backbone path) on generated 224 px JPEG class folders read through the
real class-folder loader (VTAB's layout: 50 classes, 2 tasks, `VITB_TRAIN` / `VITB_TEST` images per class, train
augmentation off), three frozen-feature strategies (SimpleCIL, the linear probe, RanPAC without phase 1) x the seeds,
one worker. Three invocations of `run_suite.py`, each a fresh process, interleaved per repeat: share-nothing
(`share: false`), the first with a new feature store (cold) and the second with the same store (warm); reported:
each invocation's wall time and the sum of its runs' own times (`wall_time_s`: without process start and report),
and the ratios share-nothing / cold and cold / warm.

The job: train `strategy` through `stream` on the config's backbone, and after every task evaluate every task's
test set (the T x T accuracy matrix) and the retained accuracy on the pre-training domain (the backbone's original
head on a fixed subset, before training and after each task). It is done by
  (a) the suite's runner (`benchmark.runner.run`, as `run_suite.py` calls it; without checkpoints);
  (b) a bare PyTorch loop written out below: tensors in memory, one shuffled permutation per epoch, the same
      optimizer, schedule, loss and evaluations; it borrows only the strategy's network (adapters inserted,
      parameters frozen), so both train the same parameters;
  (c) Avalanche's `Naive` strategy with an `EvaluationPlugin` (accuracy per experience) and an iteration-wise cosine
      `LRSchedulerPlugin`, plus the same retention check written by hand after each experience (`full_ft` only:
      Naive is plain fine-tuning).
The three run interleaved (a b c a b c ...) in one process after an untimed warm-up; medians are reported.

Also reported: training images per second of the suite, and its FLOP utilisation: the FLOPs the suite's training
executes (counted with torch's FlopCounterMode over an extra, untimed training of the first task, so a cached
frozen prefix counts once, as it runs; scaled to the stream by image count) divided by (training seconds x this
device's matmul rate, measured here on square products in the run's precision). Precision defaults to the
config's (configs/mini.yaml: auto, bf16 where the CPU computes it natively). Timings are never asserted by tests; they belong here and in docs/performance.md.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import json
import statistics
import subprocess
import sys
import tempfile
from functools import partial
import time
import warnings
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # jpeg_folders
warnings.filterwarnings("ignore", message="no QP solver found")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import strategies  # noqa: E402,F401  (registers the built-in strategies)
from benchmark.backbones import Backbone, build_backbone  # noqa: E402
from benchmark.config import SuiteConfig, load_suite, parse_retention, select  # noqa: E402
from benchmark.evaluation import as_tensors, embed  # noqa: E402
from benchmark.results import RunSpec  # noqa: E402
from benchmark.runner import forget_shared, run, seed_everything  # noqa: E402
from benchmark.runtime import Runtime  # noqa: E402
from benchmark.streams import Stream, build_stream  # noqa: E402
from benchmark.suite import plan_runs, run_suite  # noqa: E402
from strategies.base import Strategy, build_strategy  # noqa: E402

TensorPair = tuple[torch.Tensor, torch.Tensor]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategy", default="full_ft", help="a fine-tuning-family strategy of the config")
    parser.add_argument("--stream", default="mini-split-digits", help="a stream of the config")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "mini.yaml",
                        help="where the backbone, stream and strategy hyper-parameters come from")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each job (median reported)")
    parser.add_argument("--retention-size", type=int, default=500, help="pre-training-domain images scored")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--precision", default=None,
                        help="auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16; default: the config's")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--grid", action="store_true", help="time a grid: the suite against a share-nothing loop")
    parser.add_argument("--precision-check", action="store_true",
                        help="what `precision: auto` picks on this machine and why, with the fp32 and bf16 matmul rates")
    parser.add_argument("--profile", action="store_true",
                        help="profile one suite run of the job: the matrix products' share of CPU time and rate")
    parser.add_argument("--grid-strategies", nargs="+", default=["full_ft", "linear", "lora", "topk"],
                        help="grid mode: fine-tuning-family strategies of the config")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1993, 0], help="grid mode: seeds")
    parser.add_argument("--workers", type=int, nargs="+", default=[2],
                        help="grid mode: the suite's worker processes (several: the suite timed at each, interleaved)")
    parser.add_argument("--pipeline", action="store_true",
                        help="image-file pipeline: the suite's decode and transforms against torchvision's, per core")
    parser.add_argument("--images", type=int, default=640, help="pipeline mode: JPEGs per split")
    parser.add_argument("--loader-workers", type=int, default=0,
                        help="pipeline and vitb modes: data-loader worker processes (each one core)")
    parser.add_argument("--scale", choices=("mini", "vitb"), default="mini",
                        help="mini: the job on the config's stream; vitb: the ViT-B/16 job per strategy family (with "
                             "--grid: a ViT-B/16 grid of frozen-feature strategies on generated 224 px JPEG folders: "
                             "share-nothing, cold store, warm store)")
    parser.add_argument("--vit", default="vit_base_patch16_224.augreg_in21k_ft_in1k",
                        help="vitb mode: the timm ViT (random weights) to build through the suite's backbone path")
    parser.add_argument("--per-class", type=int, default=1, help="vitb mode: JPEGs per class and split (50 classes)")
    parser.add_argument("--tasks", type=int, default=2, help="vitb mode: tasks (a divisor of 50)")
    parser.add_argument("--batch-size", type=int, default=16, help="vitb mode: training batch")
    parser.add_argument("--families", nargs="+", default=None,
                        help="vitb mode: strategy families: full-ft, lora, prompts, prototypes (default: all)")
    parser.add_argument("--threads", type=int, default=None,
                        help="single-job mode: compute on this many threads (make run's workers use 1 each); "
                             "default: PyTorch's (the machine's cores)")
    return parser.parse_args(argv)


def job_spec(args: argparse.Namespace, runtime: Runtime) -> RunSpec:
    config = select(load_suite(args.config), streams=[args.stream], strategies=[args.strategy])
    spec = plan_runs(config, runtime)[0]
    retention = {"protocols": {"head": {}}, "eval_size": args.retention_size, "subset_seed": 0}
    return dataclasses.replace(spec, retention=retention)


def clock(runtime: Runtime) -> float:
    if runtime.device.type == "cuda":
        torch.cuda.synchronize(runtime.device)
    return time.perf_counter()


# --- (a) the suite -------------------------------------------------------------------------------------------------

def suite_job(spec: RunSpec, runtime: Runtime, backbone: Backbone) -> dict[str, Any]:
    """One run by the suite's runner, from a cold start: nothing an earlier repeat left in this process (shared
    features, streams) is reused, as the bare loop and Avalanche reuse nothing."""
    forget_shared()
    result = run(spec, runtime, backbone)
    return {**result, "train_s": sum(result["cost"]["train_s"])}


# --- (b) a bare PyTorch loop ---------------------------------------------------------------------------------------

def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.forward_head(model.forward_features(x), pre_logits=True)


def bare_accuracy(predict: Callable[[torch.Tensor], torch.Tensor], data: TensorPair, runtime: Runtime) -> float:
    images, labels = data
    correct = 0
    with torch.no_grad(), runtime.autocast():
        for start in range(0, len(labels), runtime.eval_batch):
            logits = predict(images[start: start + runtime.eval_batch].to(runtime.device))
            correct += int((logits.argmax(1).cpu() == labels[start: start + runtime.eval_batch]).sum())
    return 100.0 * correct / len(labels)


def bare_job(spec: RunSpec, runtime: Runtime, backbone: Backbone) -> dict[str, Any]:
    stream = build_stream(spec.stream, spec.seed, image_spec=backbone.image_spec, **spec.stream_params)
    retention_set = backbone.pretrain_data("test", spec.retention["eval_size"], spec.retention["subset_seed"])
    retention_data = (retention_set.images, retention_set.labels)
    tests = [as_tensors(task.test) for task in stream.tasks]
    seed_everything(spec.seed)
    network: Strategy = build_strategy(spec.strategy, spec.strategy_params, copy.deepcopy(backbone.model), runtime)
    model, config = network.backbone, network.config
    head = nn.Linear(network.feature_dim, len(stream.class_order)).to(runtime.device)
    original_head = copy.deepcopy(backbone.model.get_classifier()).to(runtime.device)
    retained = lambda: bare_accuracy(lambda x: original_head(features(model, x)), retention_data, runtime)  # noqa
    model.eval()
    history = {"retained": [retained()], "matrix": [], "train_s": 0.0}
    for task in stream.tasks:
        start = clock(runtime)
        train_bare_task(model, head, task, as_tensors(task.train), config, runtime)
        history["train_s"] += clock(runtime) - start
        model.eval()
        predict = lambda x: head(features(model, x))[:, :task.num_outputs]  # noqa: E731
        history["matrix"].append([bare_accuracy(predict, data, runtime) for data in tests])
        history["retained"].append(retained())
    return history


def train_bare_task(model: nn.Module, head: nn.Linear, task, data: TensorPair, config, runtime: Runtime) -> None:
    images, labels = data
    units = torch.tensor(task.labels, device=runtime.device)
    position = torch.full((head.out_features,), -1, dtype=torch.long, device=runtime.device)
    position[units] = torch.arange(len(units), device=runtime.device)
    trainable = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * -(-len(labels) // config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(labels))
        for start in range(0, len(labels), config.batch_size):
            batch = order[start: start + config.batch_size]
            x, y = images[batch].to(runtime.device), labels[batch].to(runtime.device)
            with runtime.autocast():
                loss = F.cross_entropy(head(features(model, x))[:, units], position[y])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()


# --- (c) Avalanche's Naive -----------------------------------------------------------------------------------------

class Classifier(nn.Module):
    def __init__(self, model: nn.Module, num_classes: int, feature_dim: int, runtime: Runtime) -> None:
        super().__init__()
        self.model, self.head, self.runtime = model, nn.Linear(feature_dim, num_classes), runtime

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.runtime.autocast():  # Naive has no mixed precision of its own
            return self.head(features(self.model, x))


def avalanche_job(spec: RunSpec, runtime: Runtime, backbone: Backbone) -> dict[str, Any]:
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin, LRSchedulerPlugin
    from avalanche.training.supervised import Naive

    stream = build_stream(spec.stream, spec.seed, image_spec=backbone.image_spec, **spec.stream_params)
    retention_set = backbone.pretrain_data("test", spec.retention["eval_size"], spec.retention["subset_seed"])
    seed_everything(spec.seed)
    network = build_strategy(spec.strategy, spec.strategy_params, copy.deepcopy(backbone.model), runtime)
    config = network.config
    classifier = Classifier(network.backbone, len(stream.class_order), network.feature_dim, runtime)
    classifier.to(runtime.device)
    original_head = copy.deepcopy(backbone.model.get_classifier()).to(runtime.device)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * -(-len(stream.tasks[0].train) // config.batch_size)
    schedule = LRSchedulerPlugin(torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps),
                                 reset_scheduler=True, reset_lr=True, step_granularity="iteration")
    evaluator = EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])
    naive = Naive(classifier, optimizer, nn.CrossEntropyLoss(), train_mb_size=config.batch_size,
                  train_epochs=config.epochs, eval_mb_size=runtime.eval_batch, device=runtime.device,
                  plugins=[schedule], evaluator=evaluator)
    retained = lambda: bare_accuracy(lambda x: original_head(features(classifier.model, x)),  # noqa: E731
                                     (retention_set.images, retention_set.labels), runtime)
    classifier.eval()
    history = {"retained": [retained()], "evaluations": [], "train_s": 0.0}
    for experience in stream.benchmark.train_stream:
        start = clock(runtime)
        naive.train(experience)
        history["train_s"] += clock(runtime) - start
        history["evaluations"].append(naive.eval(stream.benchmark.test_stream))
        classifier.eval()
        history["retained"].append(retained())
    return history


# --- the hardware --------------------------------------------------------------------------------------------------

def matmul_rate(runtime: Runtime, repeats: int = 10) -> float:
    """Peak FLOP/s of square matrix products in the run's precision: the best of `repeats` timed batches after a
    warm-up (the best, not the median: the hardware's rate is what it reaches, noise only lowers it)."""
    size = 8192 if runtime.device.type == "cuda" else 1024
    dtype = runtime.amp_dtype or torch.float32
    a = torch.randn(size, size, device=runtime.device, dtype=dtype)
    b = torch.randn(size, size, device=runtime.device, dtype=dtype)
    a @ b
    rates = []
    for _ in range(repeats):
        start = clock(runtime)
        for _ in range(5):
            a @ b
        rates.append(5 * 2 * size**3 / (clock(runtime) - start))
    return max(rates)


def precision_rates(runtime: Runtime) -> dict[str, float]:
    """The device's fp32 and bf16 matmul rates (FLOP/s): on a CPU without native bf16 the second is a fraction of the
    first, which is why `precision: auto` chooses fp32 there (benchmark/runtime.py)."""
    return {precision: matmul_rate(runtime.with_precision(precision)) for precision in ("fp32", "bf16")}


def precision_main(args: argparse.Namespace) -> int:
    """`--precision-check`: what `precision: auto` chooses on this machine and why, beside the measured rates."""
    runtime = Runtime.resolve(args.device, "auto", progress=False)
    rates = precision_rates(runtime)
    report = {"mode": "precision", "device": runtime.device.type, "threads": torch.get_num_threads(),
              "auto": runtime.precision, "reason": runtime.precision_reason, "cpu": runtime.cpu_capability,
              "matmul_flops_per_s": rates, "bf16_over_fp32": rates["bf16"] / rates["fp32"]}
    print(f"precision: auto -> {report['auto']} ({report['reason']}; CPU {report['cpu']})")
    print(f"matmul, {report['threads']} threads: fp32 {rates['fp32'] / 1e9:.0f} GFLOP/s, bf16 "
          f"{rates['bf16'] / 1e9:.0f} GFLOP/s (bf16 / fp32 {report['bf16_over_fp32']:.2f})")
    if args.json:
        print(json.dumps(report))
    return 0


def training_flops(spec: RunSpec, runtime: Runtime, backbone: Backbone) -> int:
    """FLOPs the suite's training of the whole stream executes: counted over an untimed training of the first task,
    scaled by the stream's training images over the first task's (every image costs the same; the growing head's
    share, under 0.1% on vit-mini, is the one thing this scaling ignores)."""
    stream = build_stream(spec.stream, spec.seed, image_spec=backbone.image_spec, **spec.stream_params)
    seed_everything(spec.seed)
    strategy = build_strategy(spec.strategy, spec.strategy_params, copy.deepcopy(backbone.model), runtime)
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        strategy.train_task(stream.tasks[0])
    return round(counter.get_total_flops() * sum(len(t.train) for t in stream.tasks) / len(stream.tasks[0].train))


# --- main ----------------------------------------------------------------------------------------------------------

def timed(job: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    """Seconds `job(*args)` takes, after collecting the previous job's garbage (its cycles are not its successor's
    cost)."""
    runtime = args[1]
    gc.collect()
    start = clock(runtime)
    output = job(*args)
    return clock(runtime) - start, output


# --- grid mode ------------------------------------------------------------------------------------------------------

def grid_config(args: argparse.Namespace, workers: int) -> SuiteConfig:
    config = select(load_suite(args.config), strategies=args.grid_strategies, seeds=args.seeds,
                    executor={"workers": workers})
    retention = parse_retention({"protocols": {"head": {}}, "eval_size": args.retention_size})
    return dataclasses.replace(config, retention=retention)


def suite_grid(config: SuiteConfig, runtime: Runtime) -> dict[str, Any]:
    """The grid as `run_suite.py` runs it (its workers, sharing on), into a fresh folder, from a cold start: nothing
    this process kept from an earlier repeat (features, streams) is reused."""
    forget_shared()
    with tempfile.TemporaryDirectory() as out:
        outcome = run_suite(config, Path(out), runtime)
    return {"runs": len(outcome.ran), "failed": len(outcome.failed)}


def bare_grid(config: SuiteConfig, runtime: Runtime) -> dict[str, Any]:
    """The grid's runs one after another, each loading its backbone and data anew: nothing shared."""
    specs = plan_runs(config, runtime)
    for spec in specs:
        bare_job(spec, runtime, build_backbone(spec.backbone, **spec.backbone_params))
    return {"runs": len(specs), "failed": 0}


def grid_main(args: argparse.Namespace) -> int:
    runtime = Runtime.resolve(args.device, args.precision or load_suite(args.config).precision, progress=False)
    configs = {f"suite, {workers} workers": grid_config(args, workers) for workers in args.workers}
    jobs = {**{name: partial(suite_grid, config) for name, config in configs.items()},
            "bare": partial(bare_grid, next(iter(configs.values())))}
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(args.repeats):
        for name, job in jobs.items():
            gc.collect()
            start = clock(runtime)
            done = job(runtime)
            times[name].append(clock(runtime) - start)
            if done["failed"]:
                raise SystemExit(f"{name}: {done['failed']} runs failed")
    median = {name: statistics.median(values) for name, values in times.items()}
    config = next(iter(configs.values()))
    report = {"mode": "grid", "strategies": args.grid_strategies, "streams": [s.name for s in config.streams],
              "seeds": args.seeds, "runs": len(plan_runs(config, runtime)), "workers": args.workers,
              "device": runtime.device.type, "precision": "bf16" if runtime.amp_dtype else "fp32",
              "repeats": args.repeats, "seconds": {k: round(v, 2) for k, v in median.items()},
              "all_seconds": {k: [round(v, 2) for v in values] for k, values in times.items()},
              "bare_over_suite": {name: median["bare"] / median[name] for name in configs}}
    print(f"grid of {report['runs']} runs ({', '.join(args.grid_strategies)} x {', '.join(report['streams'])} x seeds "
          f"{args.seeds}), {report['device']} {report['precision']}, median of {args.repeats}")
    for name in configs:
        print(f"{name} (sharing): {median[name]:.1f} s   bare / suite: {report['bare_over_suite'][name]:.2f}")
    print(f"bare loop, one run after another, nothing shared: {median['bare']:.1f} s")
    if args.json:
        print(json.dumps(report))
    return 0


VITB = "vit_base_patch16_224.augreg_in21k_ft_in1k"
VITB_STRATEGIES = {"simplecil": {}, "linear": {"epochs": 1}, "ranpac": {"epochs": 0, "precision": "bf16"}}
VITB_TRAIN, VITB_TEST = 2, 1  # images per class and split (50 classes): 100 training and 50 test images
VITB_RETENTION = {"protocols": {"knn": {"k": 2, "bank_size": 4}}, "eval_size": 4}  # 4 classes of generated images


def write_vitb_job(folder: Path, seeds: list[int], device: str, precision: str) -> dict[str, Any]:
    """The ViT-B/16 grid's files under `folder` (random weights, JPEG folders, a small ImageNet-style retention set)
    and its suite settings, without `share` / `cache`."""
    import timm
    from safetensors.torch import save_file

    from jpeg_folders import write_class_folders

    torch.manual_seed(0)
    weights = folder / "vit_base_random.safetensors"
    save_file(timm.create_model(VITB, pretrained=False).state_dict(), str(weights))
    write_class_folders(folder / "data" / "vtab", 50, VITB_TRAIN, 224, seed=0, test_per_class=VITB_TEST)
    write_class_folders(folder / "imagenet", 4, 1, 224, seed=2, splits=("train", "val"))
    return {"backbones": {VITB: {"pretrained_file": str(weights), "imagenet_dir": str(folder / "imagenet")}},
            "streams": {"split-vtab": {"data_dir": str(folder / "data"), "n_tasks": 2, "shuffle": True,
                                       "augment": "none"}},
            "strategies": VITB_STRATEGIES, "seeds": seeds, "retention": VITB_RETENTION, "device": device,
            "precision": precision, "executor": {"workers": 1}}


def invocation(settings: dict[str, Any], folder: Path) -> dict[str, float]:
    """One `run_suite.py` invocation in a fresh process: its wall time and the sum of its runs' own times."""
    import yaml

    folder.mkdir(parents=True)
    (folder / "suite.yaml").write_text(yaml.safe_dump(settings))
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "run_suite.py"), "--config", str(folder / "suite.yaml"), "--out",
                    str(folder / "out"), "--quiet"], check=True, capture_output=True)
    wall = time.perf_counter() - start
    results = [json.loads(path.read_text()) for path in sorted((folder / "out" / "runs").glob("*/result.json"))]
    if len(results) != len(VITB_STRATEGIES) * len(settings["seeds"]) or any(r["status"] != "ok" for r in results):
        raise SystemExit(f"{folder}: not every run finished ok")
    return {"wall_s": wall, "runs_s": sum(r["cost"]["wall_time_s"] for r in results)}


def vitb_grid_main(args: argparse.Namespace) -> int:
    """`--grid --scale vitb`: share-nothing, cold store, warm store, interleaved per repeat (see the docstring)."""
    seeds = args.seeds if len(args.seeds) > 2 else [1993, 0, 1]
    legs = ("share-nothing", "cold store", "warm store")
    times: dict[str, list[dict[str, float]]] = {leg: [] for leg in legs}
    with tempfile.TemporaryDirectory() as work:
        job = write_vitb_job(Path(work), seeds, args.device, args.precision or "auto")
        for repeat in range(args.repeats):
            store = {"cache": str(Path(work) / f"store-{repeat}")}
            for leg, extra in zip(legs, ({"share": False}, store, store)):
                times[leg].append(invocation({**job, **extra}, Path(work) / f"{leg.replace(' ', '-')}-{repeat}"))
    median = {leg: {kind: statistics.median(t[kind] for t in values) for kind in ("wall_s", "runs_s")}
              for leg, values in times.items()}
    ratios = {kind: {"share_nothing_over_cold": median["share-nothing"][kind] / median["cold store"][kind],
                     "cold_over_warm": median["cold store"][kind] / median["warm store"][kind]}
              for kind in ("wall_s", "runs_s")}
    report = {"mode": "grid", "scale": "vitb", "backbone": VITB, "strategies": list(VITB_STRATEGIES), "seeds": seeds,
              "images": {"train": 50 * VITB_TRAIN, "test": 50 * VITB_TEST}, "repeats": args.repeats,
              "seconds": median, "all": times, "ratios": ratios}
    print(f"ViT-B/16 grid ({', '.join(VITB_STRATEGIES)} x seeds {seeds}, {50 * VITB_TRAIN} training and "
          f"{50 * VITB_TEST} test images, 1 worker), median of {args.repeats}")
    for leg in legs:
        print(f"{leg:<14} invocation {median[leg]['wall_s']:7.1f} s   its runs {median[leg]['runs_s']:7.1f} s")
    for kind, label in (("wall_s", "invocations"), ("runs_s", "runs")):
        print(f"{label}: share-nothing / cold {ratios[kind]['share_nothing_over_cold']:.2f}, cold / warm "
              f"{ratios[kind]['cold_over_warm']:.2f}")
    if args.json:
        print(json.dumps(report))
    return 0


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.precision_check:
        return precision_main(args)
    if args.grid:
        return vitb_grid_main(args) if args.scale == "vitb" else grid_main(args)
    if args.pipeline:
        return pipeline_main(args)
    if args.scale == "vitb":
        return vitb_main(args)
    if args.profile:
        return profile_main(args)
    runtime = Runtime.resolve(args.device, args.precision or load_suite(args.config).precision, progress=False)
    spec = job_spec(args, runtime)
    backbone = build_backbone(spec.backbone, **spec.backbone_params)
    jobs: dict[str, Callable[..., Any]] = {"suite": suite_job, "bare": bare_job}
    if args.strategy == "full_ft":
        jobs["avalanche"] = avalanche_job
    flops = training_flops(spec, runtime, backbone)  # doubles as the warm-up of the training kernels
    rate = matmul_rate(runtime)
    times: dict[str, list[float]] = {name: [] for name in jobs}
    train_s: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(args.repeats):
        for name, job in jobs.items():
            seconds, output = timed(job, spec, runtime, backbone)
            times[name].append(seconds)
            train_s[name].append(output["train_s"])
    report = summarise(spec, runtime, times, train_s, flops, rate, train_images(spec, backbone))
    print_table(report)
    if args.json:
        print(json.dumps(report))
    return 0


def pipeline_main(args: argparse.Namespace) -> int:
    """`--pipeline`: benchmarks/image_pipeline.py on `--images` generated JPEGs per split (10 classes)."""
    from benchmarks import image_pipeline
    from benchmarks.jpeg_folders import write_class_folders

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per-core numbers: one thread per process
    try:
        with tempfile.TemporaryDirectory() as folder:
            root = write_class_folders(Path(folder), 10, max(1, args.images // 10), 224, seed=0)
            report = image_pipeline.measure(root, args.loader_workers, args.repeats)
    finally:
        torch.set_num_threads(threads)
    image_pipeline.print_report(report)
    if args.json:
        print(json.dumps(report))
    return 0


def vitb_main(args: argparse.Namespace) -> int:
    """`--scale vitb`: benchmarks/vitb_job.py."""
    from benchmarks import vitb_job

    runtime = Runtime.resolve(args.device, args.precision or "auto", progress=False,
                              loader_workers=args.loader_workers)
    families = args.families or list(vitb_job.FAMILIES)
    unknown = [family for family in families if family not in vitb_job.FAMILIES]
    if unknown:
        raise SystemExit(f"--families: unknown {unknown[0]!r}; choose from {', '.join(vitb_job.FAMILIES)}")
    report = vitb_job.measure(args.vit, args.per_class, args.tasks, args.batch_size, args.repeats, runtime,
                              families)
    vitb_job.print_report(report)
    if args.json:
        print(json.dumps(report))
    return 0


MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def profile_main(args: argparse.Namespace) -> int:
    """Where the job's CPU time goes, in its two kinds of work (torch.profiler, after an unprofiled warm-up): the
    suite's training of the first task, and an evaluation pass (the strategy's features of `--retention-size`
    pre-training images, as retention scores them after every task). For each: the matrix products' share of self
    CPU time, the FLOP rate they reach (the profiler's FLOP counts) against the measured matmul rate, and the floor:
    the time if everything but the matrix products took none and they ran at the measured rate."""
    runtime = Runtime.resolve(args.device, args.precision or load_suite(args.config).precision, progress=False)
    spec = job_spec(args, runtime)
    backbone = build_backbone(spec.backbone, **spec.backbone_params)
    stream = build_stream(spec.stream, spec.seed, image_spec=backbone.image_spec, **spec.stream_params)
    images = backbone.pretrain_data("test", args.retention_size, 0).images
    rate = matmul_rate(runtime)

    def phases(strategy: Strategy) -> dict[str, Callable[[], Any]]:
        return {"training (task 0)": lambda: strategy.train_task(stream.tasks[0]),
                "evaluation pass": lambda: embed(strategy.features, images, runtime)}

    seed_everything(spec.seed)
    for work in phases(build_strategy(spec.strategy, spec.strategy_params, copy.deepcopy(backbone.model),
                                      runtime)).values():
        work()  # warm-up
    seed_everything(spec.seed)
    strategy = build_strategy(spec.strategy, spec.strategy_params, copy.deepcopy(backbone.model), runtime)
    report: dict[str, Any] = {"mode": "profile", "strategy": spec.strategy, "stream": spec.stream,
                              "threads": torch.get_num_threads(), "precision": "bf16" if runtime.amp_dtype else "fp32",
                              "peak_matmul_flops_per_s": rate, "phases": {}}
    for name, work in phases(strategy).items():
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_flops=True) as profiler:
            seconds, _ = timed(lambda *_: work(), None, runtime)
        events = profiler.key_averages()
        total_us = sum(event.self_cpu_time_total for event in events)
        products = [event for event in events if event.key in MATMULS]
        product_us = sum(event.self_cpu_time_total for event in products)
        product_flops = sum(event.flops for event in products)
        report["phases"][name] = {
            "profiled_seconds": round(seconds, 2), "matmul_share": product_us / total_us,
            "matmul_flops_per_s": product_flops / (product_us * 1e-6), "floor_seconds": product_flops / rate,
            "top": [(event.key, round(event.self_cpu_time_total / total_us, 4))
                    for event in sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]]}
    print(f"{spec.strategy} on {spec.stream}, {report['precision']}, {report['threads']} threads, measured matmul "
          f"rate {rate / 1e9:.0f} GFLOP/s")
    for name, phase in report["phases"].items():
        print(f"{name}: profiled {phase['profiled_seconds']:.1f} s; matrix products {100 * phase['matmul_share']:.0f}% "
              f"of CPU time at {phase['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s; floor {phase['floor_seconds']:.1f} s")
        for key, share in phase["top"]:
            print(f"  {key:<60}{100 * share:6.1f}%")
    if args.json:
        print(json.dumps(report))
    return 0


def train_images(spec: RunSpec, backbone: Backbone) -> int:
    stream: Stream = build_stream(spec.stream, spec.seed, image_spec=backbone.image_spec, **spec.stream_params)
    epochs = spec.strategy_params.get("epochs", 1)
    return epochs * sum(len(task.train) for task in stream.tasks)


def summarise(spec: RunSpec, runtime: Runtime, times: dict[str, list[float]], train_s: dict[str, list[float]],
              flops: int, rate: float, images: int) -> dict[str, Any]:
    median = {name: statistics.median(values) for name, values in times.items()}
    median_train = {name: statistics.median(values) for name, values in train_s.items()}
    suite_train_s = median_train["suite"]
    return {
        "strategy": spec.strategy, "stream": spec.stream, "backbone": spec.backbone,
        "device": runtime.device.type, "precision": "bf16" if runtime.amp_dtype else "fp32",
        "threads": torch.get_num_threads(), "repeats": len(times["suite"]),
        "seconds": {name: round(value, 3) for name, value in median.items()},
        "train_seconds": {name: round(value, 3) for name, value in median_train.items()},
        "all_seconds": {name: [round(v, 3) for v in values] for name, values in times.items()},
        "bare_over_suite": median["bare"] / median["suite"],
        "avalanche_over_suite": median["avalanche"] / median["suite"] if "avalanche" in median else None,
        "suite_train_s": suite_train_s,
        "images_per_s": images / suite_train_s,
        "training_flops": flops,
        "matmul_flops_per_s": rate,
        "flop_utilisation": flops / (suite_train_s * rate),
    }


def print_table(report: dict[str, Any]) -> None:
    print(f"{report['strategy']} on {report['stream']} ({report['backbone']}), {report['device']} "
          f"{report['precision']}, {report['threads']} threads, median of {report['repeats']}")
    print(f"{'job':<12}{'seconds':>10}{'job / suite':>14}{'training s':>12}{'rest s':>10}")
    for name, seconds in report["seconds"].items():
        train = report["train_seconds"][name]
        print(f"{name:<12}{seconds:>10.2f}{seconds / report['seconds']['suite']:>14.3f}{train:>12.2f}"
              f"{seconds - train:>10.2f}")
    print(f"suite training: {report['suite_train_s']:.2f} s, {report['images_per_s']:.0f} images/s, "
          f"{report['training_flops'] / 1e9:.1f} GFLOP at {report['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s matmul "
          f"-> FLOP utilisation {100 * report['flop_utilisation']:.1f}%")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
