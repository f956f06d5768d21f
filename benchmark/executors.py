"""Where the runs of a suite execute: here, in worker processes, on a Ray cluster, or as SLURM jobs (submitit).

Every executor calls the `execute(job)` it is handed (the suite passes `benchmark.suite.execute`, which writes the
run's result file itself, atomically, into the shared results folder), so any executor produces the same files. This
module never imports the suite: the dependency runs one way, suite -> executors. Ray and submitit are optional
extras (`pip install .[ray]`, `.[slurm]`), imported only when chosen.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Protocol

from benchmark.config import ExecutorConfig
from benchmark.errors import ConfigError
from benchmark.registry import Registry


class Job(Protocol):
    """What an executor reads of a job (`benchmark.suite.RunJob`: picklable, self-contained)."""

    spec: Any  # a RunSpec: `spec.backbone` names the backbone
    out_dir: Path


Execute = Callable[[Job, Optional[Any]], str]  # (job, backbone loaded here or None) -> final status; a top-level
# function, so that it pickles into worker processes, Ray tasks and SLURM jobs
Statuses = Iterator[tuple[Job, str]]  # (job, final status) as runs complete
Executor = Callable[[list[Job], Execute, dict[str, Any], ExecutorConfig], Statuses]
EXECUTORS: Registry[Executor] = Registry("executor")


@EXECUTORS.register("local")
def local(jobs: list[Job], execute: Execute, backbones: dict[str, Any], config: ExecutorConfig) -> Statuses:
    """One after another in this process (backbones loaded once), or in `workers` fresh processes."""
    if config.workers == 1:
        for job in jobs:
            yield job, execute(job, backbones[job.spec.backbone])
        return
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no state shared with this one
    with ProcessPoolExecutor(max_workers=config.workers, mp_context=context) as pool:
        futures = {pool.submit(execute, job, None): job for job in jobs}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _optional(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ConfigError(f"executor needs the '{module}' package; install it with `pip install .[{extra}]`") from None


@EXECUTORS.register("ray")
def ray_executor(jobs: list[Job], execute: Execute, backbones: dict[str, Any], config: ExecutorConfig) -> Statuses:
    """Each run is a Ray task asking for `cpus_per_run` / `gpus_per_run`; joins `ray_address` or starts a local
    instance."""
    ray = _optional("ray", "ray")
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=config.ray_address, num_cpus=config.ray_num_cpus if config.ray_address is None else None,
                 include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=config.cpus_per_run, num_gpus=config.gpus_per_run)(execute)
        pending = {remote.remote(job, None): job for job in jobs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            yield pending.pop(done[0]), ray.get(done[0])
    finally:
        if started_here:
            ray.shutdown()


@EXECUTORS.register("submitit")
def submitit_executor(jobs: list[Job], execute: Execute, backbones: dict[str, Any], config: ExecutorConfig
                      ) -> Statuses:
    """Each run is a job of submitit's AutoExecutor (SLURM where present; `submitit_cluster: local` for this
    machine)."""
    submitit = _optional("submitit", "slurm")
    if not jobs:
        return
    folder = Path(jobs[0].out_dir) / config.submitit_folder
    executor = submitit.AutoExecutor(folder=str(folder), cluster=config.submitit_cluster)
    executor.update_parameters(timeout_min=config.timeout_min, cpus_per_task=max(int(config.cpus_per_run), 1),
                               gpus_per_node=int(config.gpus_per_run))
    submitted = [(job, executor.submit(execute, job, None)) for job in jobs]
    for job, handle in submitted:
        yield job, handle.result()
