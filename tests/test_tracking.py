"""Experiment tracking through the real libraries, every tracked value read back: MLflow through `MlflowClient`
from a real `mlflow server` (started here on a free localhost port) and from a file store, TensorBoard through its
event reader, W&B offline files through W&B's own record schema (W&B 0.31 ships no Python reader for `.wandb` files:
see `wandb_records`). A crashed run resumed from its checkpoint continues the same tracked run in every sink."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Optional

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import TensorDataset

import run_suite
from benchmark.config import load_suite
from benchmark.results import iter_results
from benchmark.runtime import Runtime
from benchmark.tracking import IDS_FILE, TrackingPlan, finish_suite, open_suite, plan_tracking
from benchmark.tracking.mlflow_sink import MlflowParams
from benchmark.tracking.steps import StepLog, current_step_log, listening
from strategies._loop import TrainConfig, fit
from test_checkpoints import FULL_FT_CRASHES_ONCE
from test_suite import ROOT

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from google.protobuf.json_format import MessageToDict  # noqa: E402
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData  # noqa: E402
from wandb.proto.wandb_internal_pb2 import Record  # noqa: E402

EXPERIMENT = "suite"  # the suite's name: write_suite's file is suite.yaml


# ---------------------------------------------------------------- readers


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """`mlflow server` on a free localhost port, with its own file store and artifact folder; stopped afterwards."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", (folder / "store").as_uri(),
         "--artifacts-destination", (folder / "artifacts").as_uri()],
        env={**os.environ, "MLFLOW_ALLOW_FILE_STORE": "true"}, stdout=subprocess.DEVNULL,
        stderr=open(folder / "server.log", "w"))
    uri = f"http://127.0.0.1:{port}"
    for _ in range(600):  # the server takes seconds to start on a loaded machine: poll its health endpoint
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=1) as response:
                if response.status == 200:
                    break
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"mlflow server exited: {(folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("mlflow server did not answer within 120 s")
    yield uri
    process.terminate()
    process.wait(timeout=30)


def mlflow_runs(uri: str, experiment: str = EXPERIMENT) -> tuple[MlflowClient, object, list]:
    """The suite's parent run and its child runs in `experiment` at `uri` (a second parent would mean that resuming
    the suite failed to reopen it; a run outside the parent, that a run lost its parent)."""
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    (parent,) = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(runs) - 1
    return client, parent, children


def mlflow_run(uri: str) -> tuple[MlflowClient, object]:
    """The only child run of the suite's parent at `uri` (a second one would mean resuming failed)."""
    client, _, (run,) = mlflow_runs(uri)
    return client, run


def mlflow_history(client: MlflowClient, run, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))


def tensorboard_scalars(folder: Path) -> tuple[EventAccumulator, dict[str, list[tuple[int, float]]]]:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events, {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def wandb_records(path: Path) -> list[Record]:
    """The records of a W&B `.wandb` file. Its framing is LevelDB's log format after a 7-byte `:W&B` header: 32 KiB
    blocks of chunks, each `crc32c (4) | length (2, little-endian) | type (1: full, 2: first, 3: middle, 4: last)`,
    a block tail shorter than a chunk header zero-padded; each record is a `wandb_internal_pb2.Record`."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, head = 32768, 7
    records, pending, position = [], b"", head
    while position + head <= len(data):
        if block - position % block < head:
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + head])
        chunk = data[position + head:position + head + length]
        position += head + length
        if kind in (1, 4):
            records.append(pending + chunk if kind == 4 else chunk)
        elif kind in (2, 3):
            pending = chunk if kind == 2 else pending + chunk
    return [Record.FromString(record) for record in records]


def wandb_run(out: Path, job_type: str = "") -> dict:
    """Everything the offline W&B files under `out/wandb` of runs of `job_type` ("": the suite's runs, "report": its
    reports) hold: run ids, config, history by key, summary, artifacts, exit codes (a resumed run's second folder is
    merged in, as `wandb sync` merges them)."""
    found = {"ids": [], "names": [], "groups": [], "tags": [], "config": {}, "history": {}, "summary": {},
             "artifacts": [], "exit_codes": []}
    for path in sorted(out.glob("wandb/offline-run-*/run-*.wandb")):
        records = wandb_records(path)
        if next(r.run.job_type for r in records if r.WhichOneof("record_type") == "run") != job_type:
            continue
        for record in records:
            kind = record.WhichOneof("record_type")
            if kind == "run":
                found["groups"].append(record.run.run_group)
                found["ids"].append(record.run.run_id)
                found["names"].append(record.run.display_name)
                found["tags"].append(sorted(record.run.tags))
                found["config"].update({i.key: json.loads(i.value_json) for i in record.run.config.update})
            elif kind == "config":
                found["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
            elif kind == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                for key, value in items.items():
                    if not key.startswith("_"):
                        found["history"].setdefault(key, []).append((items["_step"], value))
            elif kind == "summary":
                found["summary"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                         for i in record.summary.update})
            elif kind == "artifact":
                found["artifacts"].append((record.artifact.name, record.artifact.type,
                                           [c.path for c in record.artifact.manifest.contents]))
            elif kind == "exit":
                found["exit_codes"].append(record.exit.exit_code)
    return found


# ---------------------------------------------------------------- what must have been tracked


def expected(result: dict) -> dict[str, list[tuple[int, float]]]:
    """Every tracked series, written out from the result file: matrix rows per task, retention per protocol from
    step 0, and the final metrics and costs at the last step (the single-protocol pretrain_drop is a number)."""
    matrix, metrics, cost = result["accuracy_matrix"], result["metrics"], result["cost"]
    steps = len(matrix)
    series = {f"accuracy/task_{j}": [(i + 1, row[j]) for i, row in enumerate(matrix)] for j in range(steps)}
    series["retained/head"] = list(enumerate(metrics["retained_pretrain_acc"]))
    for name in ("avg_acc", "avg_inc_acc", "acc_pooled_last", "bwt", "forgetting", "pretrain_drop", "ece_last"):
        series[f"metrics/{name}"] = [(steps, metrics[name])]
    for name, value in metrics["task_incremental"].items():  # the diagnostics' task-incremental metrics, flattened
        series[f"metrics/task_incremental_{name}"] = [(steps, value)]
    for name in ("params_total", "params_trainable", "params_added", "flops_per_image", "wall_time_s",
                 "peak_memory_mb", "threads", "train_images_per_s", "eval_images_per_s", "peak_host_mb"):
        series[f"cost/{name}"] = [(steps, cost[name])]
    series["cost/train_s_total"] = [(steps, sum(cost["train_s"]))]
    series["cost/eval_s_total"] = [(steps, sum(cost["eval_s"]))]
    return series


def per_task(series: dict) -> dict:
    """The series logged per task (everything but the per-step `train/*`)."""
    return {key: points for key, points in series.items() if not key.startswith("train/")}


def check_train_steps(series: dict, result: dict, every: int) -> list[tuple[int, float]]:
    """Per-step training numbers: `train/loss` and `train/lr` at steps 0, every, 2 every, ... of one count over all
    tasks; the lr is the strategy's at each task's first step and decays (cosine) within it. Returns the losses."""
    loss, lr = series["train/loss"], series["train/lr"]
    steps = [step for step, _ in loss]
    assert steps == [step for step, _ in lr] == list(range(0, steps[-1] + 1, every)) and len(steps) > 1
    assert all(0 < value < 20 for _, value in loss)
    base = result["strategy_params"]["lr"]
    assert result["strategy_params"]["schedule"] == "cosine" and lr[0] == (0, pytest.approx(base))
    if every == 1:  # every task's first step is at the full lr: one restart per task
        assert sum(value == pytest.approx(base) for _, value in lr) == len(result["accuracy_matrix"])
    assert all(0 <= value <= base * (1 + 1e-6) for _, value in lr)
    return loss


def approx_series(series: dict) -> dict:
    """TensorBoard stores float32 and W&B JSON numbers: compare with a relative tolerance."""
    return {key: [(step, pytest.approx(value, rel=1e-6)) for step, value in points] for key, points in series.items()}


def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    """The run's configuration as MLflow parameters should hold it, flattened here independently."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flat_params(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value if isinstance(value, str) else json.dumps(value)
    return flat


def code_tags(result: dict) -> dict[str, str]:
    """The tags naming the code: the commit (this test runs in a git checkout), torch and timm as the result records
    them, and the package's version where it is installed (the test venv has it installed; a bare tree has none)."""
    versions = result["versions"]
    tags = {"cl_bench.git_commit": versions["git_commit"], "cl_bench.torch": versions["torch"],
            "cl_bench.timm": versions["timm"]}
    assert len(tags["cl_bench.git_commit"]) == 40
    try:
        return {**tags, "cl_bench.version": importlib.metadata.version("cl-vit-bench")}
    except importlib.metadata.PackageNotFoundError:
        return tags


def check_mlflow(uri: str, result: dict, result_file: Path, tmp_path: Path, every: int) -> list:
    """The child run (name, parent, tags, parameters, every series, artifacts) and the suite's parent run (name,
    tags, status, the report's files as artifacts); returns the per-step losses."""
    client, parent, (run,) = mlflow_runs(uri)
    assert run.info.status == "FINISHED" and run.info.run_name == f"linear · mini-split-digits · {result['seed']}"
    assert {key: run.data.tags[key] for key in ("cl_bench.status", "cl_bench.run_id", "mlflow.parentRunId")} == {
        "cl_bench.status": "ok", "cl_bench.run_id": result["run_id"], "mlflow.parentRunId": parent.info.run_id}
    assert {key: value for key, value in run.data.tags.items() if key.startswith("cl_bench.") and key not in (
        "cl_bench.status", "cl_bench.run_id")} == code_tags(result)
    assert run.data.params == flat_params(result["config"])
    series = {key: mlflow_history(client, run, key) for key in run.data.metrics}
    assert per_task(series) == expected(result)
    downloaded = Path(client.download_artifacts(run.info.run_id, "result.json", str(tmp_path)))
    assert downloaded.read_bytes() == result_file.read_bytes()
    config = Path(client.download_artifacts(run.info.run_id, "config.json", str(tmp_path)))
    assert json.loads(config.read_text()) == result["config"]

    out = result_file.parents[2]
    assert parent.info.run_name == out.name and parent.info.status == "FINISHED"
    assert code_tags(result).items() <= parent.data.tags.items()
    assert parent.data.tags["cl_bench.suite"] == str(out)
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {
        "report.html", "leaderboard.md", "leaderboard.csv", "leaderboard_mini-split-digits.csv", "plots", "pages"}
    stored = Path(client.download_artifacts(parent.info.run_id, "", str(tmp_path / "report")))
    for name in ("report.html", "leaderboard.csv", f"pages/{result['run_id']}.html"):
        assert (stored / name).read_bytes() == (out / name).read_bytes()
    assert sorted(p.name for p in (stored / "plots").iterdir()) == sorted(p.name for p in (out / "plots").iterdir())
    return check_train_steps(series, result, every)


def tensorboard_hparams(events: EventAccumulator) -> tuple[dict, list[str]]:
    """The hyper-parameters of a run's session and the metric tags of its experiment, from the HParams plugin's
    summaries as TensorBoard's reader returns them."""
    content = {tag: HParamsPluginData.FromString(data) for tag, data in events.PluginTagToContent("hparams").items()}
    start = content["_hparams_/session_start_info"].session_start_info
    values = {key: MessageToDict(value) for key, value in start.hparams.items()}
    metrics = [info.name.tag for info in content["_hparams_/experiment"].experiment.metric_infos]
    return values, metrics


# ---------------------------------------------------------------- tests


def test_every_tracked_value_reads_back_from_each_sink(write_suite, mlflow_server, tmp_path):
    """One run tracked by every sink: each value reads back; the server and TensorBoard log the training loss at
    every step (train_every 1), the file store at every 20th (the default), the same numbers at the same steps."""
    tracking = {"mlflow": {}, "mlflow@server": {"tracking_uri": mlflow_server, "train_every": 1},
                "tensorboard": {"train_every": 1}, "wandb": {}}
    config = write_suite(strategies={"linear": {"epochs": 1}}, tracking=tracking)
    out = tmp_path / "out"
    assert run_suite.main(["--config", str(config), "--out", str(out), "--quiet"]) == 0
    (result,) = iter_results(out)
    folder = out / "runs" / result["run_id"]
    result_file = folder / "result.json"

    throttled = check_mlflow((out / "mlruns").as_uri(), result, result_file, tmp_path / "file-store", every=20)
    losses = check_mlflow(mlflow_server, result, result_file, tmp_path / "server", every=1)
    assert throttled == losses[::20]

    events, scalars = tensorboard_scalars(out / "tensorboard" / result["run_id"])
    assert per_task(scalars) == approx_series(expected(result))
    assert check_train_steps(scalars, result, every=1) == approx_series({"loss": losses})["loss"]
    texts = {tag: events.Tensors(tag)[0].tensor_proto.string_val[0].decode() for tag in events.Tags()["tensors"]}
    assert json.loads(texts["config/text_summary"]) == result["config"] and texts["status/text_summary"] == "ok"
    assert (out / "tensorboard" / result["run_id"] / "result.json").read_bytes() == result_file.read_bytes()
    hparams, metric_tags = tensorboard_hparams(events)
    assert {key: hparams[key] for key in ("strategy", "stream", "seed", "strategy_params.lr",
                                          "strategy_params.schedule", "strategy_params.head_init")} == {
        "strategy": "linear", "stream": "mini-split-digits", "seed": result["seed"], "strategy_params.lr": 0.01,
        "strategy_params.schedule": "cosine", "strategy_params.head_init": "trunc_normal"}
    assert set(metric_tags) == {key for key in expected(result) if key.startswith(("metrics/", "cost/"))}

    wandb = wandb_run(out)
    assert wandb["history"] == approx_series(expected(result))
    assert {k: v for k, v in wandb["config"].items() if k != "_wandb"} == result["config"]
    assert wandb["summary"]["status"] == "ok" and wandb["exit_codes"] == [0]
    assert wandb["artifacts"] == [(f"result-{wandb['ids'][0]}", "result", ["result.json"])]
    assert wandb["names"] == [f"linear · mini-split-digits · {result['seed']}"]
    assert wandb["tags"] == [sorted(f"{key}={value}" for key, value in code_tags(result).items())]
    report = wandb_run(out, job_type="report")  # W&B has no parent run: the report is a run of its own in the group
    assert report["names"] == ["report · out"] and report["groups"] == wandb["groups"] == [config.stem]
    assert report["tags"] == wandb["tags"] and report["summary"]["status"] == "ok" and report["exit_codes"] == [0]
    ((name, kind, contents),) = report["artifacts"]
    assert (name, kind) == (f"report-{config.stem}", "report") and f"pages/{result['run_id']}.html" in contents
    assert {path.split("/")[0] for path in contents} == {
        "report.html", "leaderboard.md", "leaderboard.csv", "leaderboard_mini-split-digits.csv", "plots", "pages"}

    ids = json.loads((folder / IDS_FILE).read_text())
    assert set(ids) == set(tracking) and ids["wandb"] == wandb["ids"][0]
    assert ids["tensorboard"] == result["run_id"]  # the run's folder under log_dir: an id, never a path read back
    assert set(json.loads((out / IDS_FILE).read_text())) == {"mlflow", "mlflow@server"}  # the parents, for resuming


def test_two_workers_track_to_a_new_experiment_on_a_server(write_suite, mlflow_server, tmp_path):
    """Two worker processes open their runs at once in an experiment the server does not have yet: the suite creates
    it once before the workers start, and every run reads back finished, with its numbers."""
    tracking = {"mlflow": {"tracking_uri": mlflow_server, "experiment": "two-workers"}}
    config = write_suite(strategies={"linear": {"epochs": 1}}, streams={"mini-split-digits": {"n_tasks": 2}},
                         seeds=[0, 1, 2, 3], tracking=tracking)
    client = MlflowClient(mlflow_server)
    assert client.get_experiment_by_name("two-workers") is None
    out = tmp_path / "out"
    assert run_suite.main(["--config", str(config), "--out", str(out), "--quiet", "--workers", "2"]) == 0
    results = {result["run_id"]: result for result in iter_results(out)}
    _, parent, runs = mlflow_runs(mlflow_server, "two-workers")  # every run a child of the one parent
    assert sorted(run.data.tags["cl_bench.run_id"] for run in runs) == sorted(results) and len(runs) == 4
    assert sorted(run.info.run_name for run in runs) == [f"linear · mini-split-digits · {s}" for s in range(4)]
    assert parent.info.status == "FINISHED"
    for run in runs:
        result = results[run.data.tags["cl_bench.run_id"]]
        assert run.info.status == "FINISHED" and run.data.tags["cl_bench.status"] == "ok"
        assert per_task({key: mlflow_history(client, run, key) for key in run.data.metrics}) == expected(result)


def test_a_resumed_run_continues_its_tracked_run(write_suite, tmp_path):
    """Crash at the third task (tasks 0 and 1 checkpointed and tracked), then resume: one tracked run per sink, one
    parent run, each step logged once (the optimiser-step count goes on from the checkpoint's), the values those of
    the finished result."""
    assert FULL_FT_CRASHES_ONCE.__name__ == "CrashesOnce"
    config = write_suite(strategies={"full_ft_crashes_once": {"epochs": 1}},
                         tracking={"mlflow": {"train_every": 1}, "tensorboard": {"train_every": 1}, "wandb": {}})
    out = tmp_path / "out"
    FULL_FT_CRASHES_ONCE.crashes_left = 1
    assert run_suite.main(["--config", str(config), "--out", str(out), "--quiet"]) == 1
    client, parent, (crashed,) = mlflow_runs((out / "mlruns").as_uri())
    assert crashed.info.status == "FAILED" and crashed.data.tags["cl_bench.status"] == "failed"
    assert parent.info.status == "FAILED"
    assert [step for step, _ in mlflow_history(client, crashed, "accuracy/task_0")] == [1, 2]
    steps_before = [step for step, _ in mlflow_history(client, crashed, "train/loss")]
    (folder,) = (out / "runs").iterdir()
    ids_before = json.loads((folder / IDS_FILE).read_text())

    assert run_suite.main(["--config", str(config), "--out", str(out), "--quiet"]) == 0
    (result,) = iter_results(out)
    client, parent_after, (run,) = mlflow_runs((out / "mlruns").as_uri())  # one parent, one child
    assert parent_after.info.run_id == parent.info.run_id and parent_after.info.status == "FINISHED"
    assert run.info.run_id == crashed.info.run_id == ids_before["mlflow"] and run.info.status == "FINISHED"
    series = {key: mlflow_history(client, run, key) for key in run.data.metrics}
    assert per_task(series) == expected(result)
    losses = check_train_steps(series, result, every=1)
    assert [step for step, _ in losses[:len(steps_before)]] == steps_before == list(range(len(steps_before)))
    assert json.loads((folder / IDS_FILE).read_text()) == ids_before

    tensorboard = out / "tensorboard" / result["run_id"]
    assert len(list(tensorboard.glob("events.out.tfevents.*"))) == 2  # one file per invocation, one run
    scalars = tensorboard_scalars(tensorboard)[1]
    assert per_task(scalars) == approx_series(expected(result))
    assert scalars["train/loss"] == approx_series({"loss": losses})["loss"]

    wandb = wandb_run(out)
    assert wandb["ids"] == [ids_before["wandb"]] * 2  # two offline folders of one W&B run
    assert wandb["history"] == approx_series(expected(result)) and wandb["exit_codes"] == [1, 0]
    report = wandb_run(out, job_type="report")  # a report per invocation: the failed suite's, then the finished one's
    assert report["exit_codes"] == [1, 0] and [a[:2] for a in report["artifacts"]] == [(f"report-{config.stem}",
                                                                                       "report")] * 2


def test_a_resumed_suite_reopens_its_parent_run(tmp_path):
    """The suite's parent run is opened once per results folder: opening the suite again (a resumed suite) reopens
    it; one deleted since is replaced by a new one, with a warning. Nothing is tracked without sinks."""
    plan = TrackingPlan("suite", (("mlflow", MlflowParams()),))
    out = tmp_path / "out"
    out.mkdir()
    first = dict(open_suite(plan, out).parents)["mlflow"]
    client = MlflowClient((out / "mlruns").as_uri())
    finish_suite(open_suite(plan, out), out, [], "ok")
    assert dict(open_suite(plan, out).parents) == {"mlflow": first}
    assert [run.info.run_id for run in client.search_runs([client.get_experiment_by_name("suite").experiment_id])] \
        == [first] and client.get_run(first).info.status == "RUNNING"
    assert client.get_run(first).info.run_name == "out"
    client.delete_run(first)
    with pytest.warns(UserWarning, match=f"MLflow run {first} of the suite out cannot be reopened"):
        second = dict(open_suite(plan, out).parents)["mlflow"]
    assert second != first and json.loads((out / IDS_FILE).read_text()) == {"mlflow": second}
    assert open_suite(TrackingPlan("suite"), tmp_path / "none") == TrackingPlan("suite")
    assert not (tmp_path / "none").exists()


def test_step_log_throttles_and_changes_no_number():
    """The shared loop under a step log (every 3rd step to one sink, every step to another) trains the very same
    weights as without one, and the sinks get the loss and each parameter group's lr at their steps."""
    data = TensorDataset(torch.randn(40, 6, generator=torch.Generator().manual_seed(0)), torch.arange(40) % 3)
    config = TrainConfig(epochs=2, batch_size=8, lr=0.1, schedule="cosine")

    def train(log: Optional[StepLog]) -> tuple[torch.nn.Linear, float]:
        torch.manual_seed(0)
        model = torch.nn.Linear(6, 3)
        groups = [{"params": [model.weight]}, {"params": [model.bias], "lr": 0.5}]
        with listening(log):
            last = fit(lambda x, y: F.cross_entropy(model(x), y), groups, data, config,
                       Runtime.resolve("cpu", "fp32", progress=False))
        return model, last

    class Sink:
        def __init__(self) -> None:
            self.logged: list[tuple[int, dict]] = []

        def log(self, values, step):
            self.logged.append((step, dict(values)))

    every_third, every_step = Sink(), Sink()
    log = StepLog([(3, every_third), (1, every_step)])
    (plain, plain_loss), (tracked, tracked_loss) = train(None), train(log)
    assert torch.equal(plain.weight, tracked.weight) and torch.equal(plain.bias, tracked.bias)
    assert plain_loss == tracked_loss and log.step == 10  # 2 epochs of 5 batches
    assert [step for step, _ in every_step.logged] == list(range(10))
    assert every_third.logged == [entry for entry in every_step.logged if entry[0] % 3 == 0]
    first, last = every_step.logged[0][1], every_step.logged[-1][1]
    assert set(first) == {"train/loss", "train/lr", "train/lr_1"}
    assert (first["train/lr"], first["train/lr_1"]) == (pytest.approx(0.1), pytest.approx(0.5))
    assert last["train/lr"] == pytest.approx(0.1 * (1 + math.cos(math.pi * 9 / 10)) / 2)
    assert first["train/loss"] > 0 and current_step_log() is None


@pytest.mark.parametrize("tracking, message", [
    ({"neptune": {}}, "unknown tracking sink 'neptune'; valid: mlflow, tensorboard, wandb"),
    ({"wandb": {"mode": "cloud"}}, "tracking.wandb.mode: must be one of offline, online, got 'cloud'"),
    ({"mlflow": {"tracking_uri": "localhost"}}, "tracking.mlflow.tracking_uri: must be empty or a URI"),
    ({"tensorboard": {"logdir": "x"}}, "tracking.tensorboard: unknown key 'logdir'; valid keys: log_dir, "
                                       "train_every"),
    ({"mlflow": {"train_every": -1}}, "tracking.mlflow.train_every: must be an integer >= 0"),
    ("mlflow", "tracking: must be a non-empty mapping of name -> hyper-parameters"),
])
def test_bad_tracking_config_is_one_line_exit_2(write_suite, tmp_path, capsys, tracking, message):
    config = write_suite(strategies={"linear": {"epochs": 1}}, tracking=tracking)
    assert run_suite.main(["--config", str(config), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {message}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("sink", ["mlflow", "tensorboard", "wandb"])
def test_a_missing_package_names_its_extra(write_suite, tmp_path, capsys, monkeypatch, sink):
    monkeypatch.setitem(sys.modules, sink, None)  # what an environment without the package looks like to imports
    config = write_suite(strategies={"linear": {"epochs": 1}}, tracking={sink: {}})
    assert run_suite.main(["--config", str(config), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: tracking.{sink}: the {sink} package is not installed; pip install '.[{sink}]' (or pip install "
        f"{sink}), or remove tracking.{sink} from the config"]


def test_no_tracking_by_default():
    assert plan_tracking(load_suite(ROOT / "configs" / "mini.yaml")).sinks == ()
    assert yaml.safe_load((ROOT / "configs" / "mini.yaml").read_text()).get("tracking") is None
