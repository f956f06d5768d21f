"""Where the runs of a suite execute: here, in worker processes, on a Ray cluster, or as SLURM jobs (submitit).

Every executor calls the same `benchmark.suite.execute(job)`, which writes the run's result file itself (atomically,
into the shared results folder), so any executor produces the same files. Ray and submitit are optional extras
(`pip install .[ray]`, `.[slurm]`), imported only when chosen.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from benchmark.config import ExecutorConfig
from benchmark.errors import ConfigError
from benchmark.registry import Registry

if TYPE_CHECKING:
    from benchmark.suite import RunJob

Statuses = Iterator[tuple["RunJob", str]]  # (job, final status) as runs complete


Executor = Callable[[list["RunJob"], dict[str, Any], ExecutorConfig], Statuses]
EXECUTORS: Registry[Executor] = Registry("executor")


_BACKBONES: dict[str, Any] = {}  # a worker process's backbones, loaded once for all the runs it executes


def _execute(job: "RunJob", threads: int | None = None) -> str:
    """`suite.execute` in a worker process (or Ray task, SLURM job): its backbone loaded once per process, as the
    in-process executor loads it once per suite, so later runs also reuse its pre-training data and features."""
    if threads is not None:
        limit_threads(threads)
    from benchmark.backbones import build_backbone
    from benchmark.suite import execute

    key = json.dumps([job.spec.backbone, job.spec.backbone_params], sort_keys=True)
    if key not in _BACKBONES:
        try:
            _BACKBONES[key] = build_backbone(job.spec.backbone, **job.spec.backbone_params)
        except Exception:  # the run itself will fail on it and record why
            return execute(job)
    return execute(job, _BACKBONES[key])


def machine_cores() -> int:
    """CPU cores this process may run on (its affinity mask: a container's or a SLURM allocation's share)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def limit_threads(threads: int) -> None:
    """Make this process's PyTorch compute on `threads` threads: runs that execute at once divide the machine's
    cores instead of each taking all of them (on 2 cores, two workers of 2 threads each were 2.2x slower than one)."""
    import torch

    torch.set_num_threads(max(1, threads))


def threads_per_worker(workers: int) -> int:
    return max(1, machine_cores() // workers)


@EXECUTORS.register("local")
def local(jobs: list["RunJob"], backbones: dict[str, Any], config: ExecutorConfig) -> Statuses:
    """One after another in this process (backbones loaded once), or in `workers` fresh processes."""
    if config.workers == 1:
        from benchmark.suite import execute

        for job in jobs:
            yield job, execute(job, backbones[job.spec.backbone])
        return
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no state shared with this one
    with ProcessPoolExecutor(max_workers=config.workers, mp_context=context, initializer=limit_threads,
                             initargs=(threads_per_worker(config.workers),)) as pool:
        futures = {pool.submit(_execute, job): job for job in jobs}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _optional(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ConfigError(f"executor needs the '{module}' package; install it with `pip install .[{extra}]`") from None


@EXECUTORS.register("ray")
def ray_executor(jobs: list["RunJob"], backbones: dict[str, Any], config: ExecutorConfig) -> Statuses:
    """Each run is a Ray task asking for `cpus_per_run` / `gpus_per_run`; joins `ray_address` or starts a local
    instance."""
    ray = _optional("ray", "ray")
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=config.ray_address, num_cpus=config.ray_num_cpus if config.ray_address is None else None,
                 include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=config.cpus_per_run, num_gpus=config.gpus_per_run)(_execute)
        threads = max(1, int(config.cpus_per_run))  # each task computes on the CPUs it asked for
        pending = {remote.remote(job, threads): job for job in jobs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            yield pending.pop(done[0]), ray.get(done[0])
    finally:
        if started_here:
            ray.shutdown()


@EXECUTORS.register("submitit")
def submitit_executor(jobs: list["RunJob"], backbones: dict[str, Any], config: ExecutorConfig) -> Statuses:
    """Each run is a job of submitit's AutoExecutor (SLURM where present; `submitit_cluster: local` for this
    machine)."""
    submitit = _optional("submitit", "slurm")
    if not jobs:
        return
    folder = Path(jobs[0].out_dir) / config.submitit_folder
    executor = submitit.AutoExecutor(folder=str(folder), cluster=config.submitit_cluster)
    executor.update_parameters(timeout_min=config.timeout_min, cpus_per_task=max(int(config.cpus_per_run), 1),
                               gpus_per_node=int(config.gpus_per_run))
    threads = max(1, int(config.cpus_per_run))
    submitted = [(job, executor.submit(_execute, job, threads)) for job in jobs]
    for job, handle in submitted:
        yield job, handle.result()
