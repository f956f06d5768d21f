"""Where the runs of a suite execute: here, in worker processes, on a Ray cluster, or as SLURM jobs (submitit).

Every executor calls the `execute(job)` it is handed (the suite passes `benchmark.suite.execute`, which writes the
run's result file itself, atomically, into the shared results folder), so any executor produces the same files. This
module never imports the suite: the dependency runs one way, suite -> executors. Ray and submitit are optional
extras (`pip install .[ray]`, `.[slurm]`), imported only when chosen.

Runs that execute at once divide the machine's cores: each of `--workers N` processes computes on cores / N threads,
and a Ray task or SLURM job on the `cpus_per_run` it asked for (PyTorch would otherwise give each process all the
cores: on 2 cores two workers were 2.2x slower than one). A worker process loads each backbone once for all the runs
it executes, as the in-process executor does for the whole suite, and executes whole share groups (`Job.share_group`:
runs that compute some of the same features), so that its memo of features serves every run of a group.

Interrupts: whatever ends an executor early (Ctrl-C, SIGTERM turned into `Terminated` by the command line, a worker's
error, the suite closing the executor's generator) stops its work before the executor returns: local worker
processes are terminated (SIGTERM, then SIGKILL after `STOP_GRACE_S`) and waited for, pending Ray tasks cancelled,
submitit jobs cancelled. Worker processes ignore SIGINT (a Ctrl-C reaches the whole process group): the main process
decides. Runs finished by then have written their results; a rerun resumes the others from their checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Protocol

from benchmark.config import ExecutorConfig
from benchmark.errors import ConfigError, signal_handlers
from benchmark.registry import Registry
from benchmark.safe_io import real_folder


class Job(Protocol):
    """What an executor reads of a job (`benchmark.suite.RunJob`: picklable, self-contained)."""

    spec: Any  # a RunSpec: `spec.backbone` names the backbone
    out_dir: Path
    share_group: str  # runs of one group compute some of the same features: worker processes keep them together


Execute = Callable[[Job, Optional[Any]], str]  # (job, backbone loaded here or None) -> final status; a top-level
# function, so that it pickles into worker processes, Ray tasks and SLURM jobs
Statuses = Iterator[tuple[Job, str]]  # (job, final status) as runs complete
Executor = Callable[[list[Job], Execute, dict[str, Any], ExecutorConfig], Statuses]
EXECUTORS: Registry[Executor] = Registry("executor")
STOP_GRACE_S = 5.0  # how long a worker may take to exit after SIGTERM before it is killed


def machine_cores() -> int:
    """CPU cores this process may run on (its affinity mask: a container's or a SLURM allocation's share)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    return max(1, machine_cores() // workers)


def limit_threads(threads: int) -> None:
    """Make this process's PyTorch compute on `threads` threads."""
    import torch

    torch.set_num_threads(max(1, threads))


_BACKBONES: dict[str, Any] = {}  # this worker process's backbones, by name and parameters


def in_worker(execute: Execute, job: Job, threads: int) -> str:
    """`execute(job)` in a worker process, Ray task or SLURM job, on `threads` threads, with the backbone this
    process loaded for an earlier run (so that run's pre-training data and shared features serve this one too)."""
    limit_threads(threads)
    from benchmark.backbones import build_backbone

    key = json.dumps([job.spec.backbone, job.spec.backbone_params], sort_keys=True)
    if key not in _BACKBONES:
        try:
            _BACKBONES[key] = build_backbone(job.spec.backbone, **job.spec.backbone_params)
        except Exception:  # the run itself fails on it and records why
            return execute(job, None)
    return execute(job, _BACKBONES[key])


def in_worker_one_by_one(execute: Execute, jobs: list[Job], threads: int) -> list[str]:
    """`in_worker` for each job in order, in one process (a share group)."""
    return [in_worker(execute, job, threads) for job in jobs]


def share_groups(jobs: list[Job]) -> list[list[Job]]:
    """The jobs by `share_group`, in their order within a group; larger groups first (a longest-first schedule:
    the last groups to start are the single runs, so the workers end close together)."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.share_group, []).append(job)
    return sorted(groups.values(), key=len, reverse=True)


def _exit_on_terminate(number: int, frame: Any) -> None:
    raise SystemExit(128 + number)


def ignore_interrupts() -> None:
    """A worker process's initializer: Ctrl-C reaches every process of the terminal's group, and the main process
    alone decides what stops (it terminates the workers). SIGTERM exits through SystemExit, so that the worker's
    exit handlers run (multiprocessing releases the semaphores it registered instead of leaking them)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_terminate)


def signals_held() -> contextlib.AbstractContextManager[None]:
    """SIGINT and SIGTERM ignored while the workers are being stopped (a second Ctrl-C must not cut that short)."""
    return signal_handlers({signal.SIGINT: signal.SIG_IGN, signal.SIGTERM: signal.SIG_IGN})


def stop_processes(processes: list[multiprocessing.process.BaseProcess]) -> None:
    """Terminate `processes` (SIGTERM, SIGKILL after STOP_GRACE_S) and wait until every one is gone."""
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(STOP_GRACE_S)
        if process.is_alive():
            process.kill()
            process.join()


@EXECUTORS.register("local")
def local(jobs: list[Job], execute: Execute, backbones: dict[str, Any], config: ExecutorConfig) -> Statuses:
    """One after another in this process (backbones loaded once), or in `workers` fresh processes, each share group
    in one of them (its statuses come when the whole group is done). Ended early, it stops its worker processes and
    waits for them before returning."""
    if config.workers == 1:
        for job in jobs:
            yield job, execute(job, backbones[job.spec.backbone])
        return
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no state shared with this one
    threads = threads_per_worker(config.workers)
    others = set(multiprocessing.active_children())  # processes this one had before the pool (none, usually)
    pool = ProcessPoolExecutor(max_workers=config.workers, mp_context=context, initializer=ignore_interrupts)
    futures: Any = {}
    try:
        futures = {pool.submit(in_worker_one_by_one, execute, group, threads): group for group in share_groups(jobs)}
        for future in as_completed(futures):
            yield from zip(futures[future], future.result())
    except BaseException:  # an interrupt, the generator closed early, a worker's error: stop every worker first
        with signals_held():
            pool.shutdown(wait=False, cancel_futures=True)
            stop_processes([p for p in multiprocessing.active_children() if p not in others])
            pool.shutdown(wait=True)
            pool = futures = None  # the traceback keeps this frame: let the pool's queues go (no leaked semaphores)
        raise
    pool.shutdown(wait=True)


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
        remote = ray.remote(num_cpus=config.cpus_per_run, num_gpus=config.gpus_per_run)(in_worker)
        threads = max(1, int(config.cpus_per_run))
        pending = {remote.remote(execute, job, threads): job for job in jobs}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                yield pending.pop(done[0]), ray.get(done[0])
        except BaseException:  # stop the runs still going (force: their worker processes are killed)
            with signals_held():
                for reference in pending:
                    ray.cancel(reference, force=True)
            raise
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
    folder = real_folder(Path(jobs[0].out_dir), *Path(config.submitit_folder).parts)  # never through a planted link
    executor = submitit.AutoExecutor(folder=str(folder), cluster=config.submitit_cluster)
    executor.update_parameters(timeout_min=config.timeout_min, cpus_per_task=max(int(config.cpus_per_run), 1),
                               gpus_per_node=int(config.gpus_per_run))
    threads = max(1, int(config.cpus_per_run))
    submitted = [(job, executor.submit(in_worker, execute, job, threads)) for job in jobs]
    try:
        for job, handle in submitted:
            yield job, handle.result()
    except BaseException:  # cancel the jobs still queued or running (scancel; a local job's process is killed)
        with signals_held():
            for _, handle in submitted:
                if not handle.done():
                    handle.cancel(check=False)
        raise
