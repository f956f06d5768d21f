"""Experiment tracking through the real libraries, every tracked value read back: MLflow through `MlflowClient`
from a real `mlflow server` (started here on a free localhost port) and from a file store, TensorBoard through its
event reader, W&B offline files through W&B's own record schema (W&B 0.31 ships no Python reader for `.wandb` files:
see `wandb_records`). A crashed run resumed from its checkpoint continues the same tracked run in every sink."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

import run_suite
from benchmark.config import load_suite
from benchmark.results import iter_results
from benchmark.tracking import IDS_FILE, plan_tracking
from test_checkpoints import FULL_FT_CRASHES_ONCE
from test_suite import ROOT

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
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


def mlflow_run(uri: str) -> tuple[MlflowClient, object]:
    """The only MLflow run of the suite's experiment at `uri` (a second one would mean resuming failed)."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id])
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


def wandb_run(out: Path) -> dict:
    """Everything the offline W&B files under `out/wandb` hold: run ids, config, history by key, summary, artifacts,
    exit codes (a resumed run's second folder is merged in, as `wandb sync` merges them)."""
    found = {"ids": [], "config": {}, "history": {}, "summary": {}, "artifacts": [], "exit_codes": []}
    for path in sorted(out.glob("wandb/offline-run-*/run-*.wandb")):
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                found["ids"].append(record.run.run_id)
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


def check_mlflow(uri: str, result: dict, result_file: Path, tmp_path: Path) -> None:
    client, run = mlflow_run(uri)
    assert run.info.status == "FINISHED" and run.info.run_name == result["run_id"]
    assert run.data.tags["cl_bench.status"] == "ok"
    assert run.data.params == flat_params(result["config"])
    assert {key: mlflow_history(client, run, key) for key in run.data.metrics} == expected(result)
    downloaded = Path(client.download_artifacts(run.info.run_id, "result.json", str(tmp_path)))
    assert downloaded.read_bytes() == result_file.read_bytes()
    config = Path(client.download_artifacts(run.info.run_id, "config.json", str(tmp_path)))
    assert json.loads(config.read_text()) == result["config"]


# ---------------------------------------------------------------- tests


def test_every_tracked_value_reads_back_from_each_sink(write_suite, mlflow_server, tmp_path):
    tracking = {"mlflow": {}, "mlflow@server": {"tracking_uri": mlflow_server}, "tensorboard": {}, "wandb": {}}
    config = write_suite(strategies={"linear": {"epochs": 1}}, tracking=tracking)
    out = tmp_path / "out"
    assert run_suite.main(["--config", str(config), "--out", str(out), "--quiet"]) == 0
    (result,) = iter_results(out)
    folder = out / "runs" / result["run_id"]
    result_file = folder / "result.json"

    check_mlflow((out / "mlruns").as_uri(), result, result_file, tmp_path / "file-store")  # the default store
    check_mlflow(mlflow_server, result, result_file, tmp_path / "server")

    events, scalars = tensorboard_scalars(out / "tensorboard" / result["run_id"])
    assert scalars == approx_series(expected(result))
    texts = {tag: events.Tensors(tag)[0].tensor_proto.string_val[0].decode() for tag in events.Tags()["tensors"]}
    assert json.loads(texts["config/text_summary"]) == result["config"] and texts["status/text_summary"] == "ok"
    assert (out / "tensorboard" / result["run_id"] / "result.json").read_bytes() == result_file.read_bytes()

    wandb = wandb_run(out)
    assert wandb["history"] == approx_series(expected(result))
    assert {k: v for k, v in wandb["config"].items() if k != "_wandb"} == result["config"]
    assert wandb["summary"]["status"] == "ok" and wandb["exit_codes"] == [0]
    assert wandb["artifacts"] == [(f"result-{wandb['ids'][0]}", "result", ["result.json"])]

    ids = json.loads((folder / IDS_FILE).read_text())
    assert set(ids) == set(tracking) and ids["wandb"] == wandb["ids"][0]
    assert ids["tensorboard"] == str(out / "tensorboard" / result["run_id"])


def test_a_resumed_run_continues_its_tracked_run(write_suite, tmp_path):
    """Crash at the third task (tasks 0 and 1 checkpointed and tracked), then resume: one tracked run per sink,
    each step logged once, the values those of the finished result."""
    assert FULL_FT_CRASHES_ONCE.__name__ == "CrashesOnce"
    config = write_suite(strategies={"full_ft_crashes_once": {"epochs": 1}},
                         tracking={"mlflow": {}, "tensorboard": {}, "wandb": {}})
    out = tmp_path / "out"
    FULL_FT_CRASHES_ONCE.crashes_left = 1
    assert run_suite.main(["--config", str(config), "--out", str(out), "--quiet"]) == 1
    client, crashed = mlflow_run((out / "mlruns").as_uri())
    assert crashed.info.status == "FAILED" and crashed.data.tags["cl_bench.status"] == "failed"
    assert [step for step, _ in mlflow_history(client, crashed, "accuracy/task_0")] == [1, 2]
    (folder,) = (out / "runs").iterdir()
    ids_before = json.loads((folder / IDS_FILE).read_text())

    assert run_suite.main(["--config", str(config), "--out", str(out), "--quiet"]) == 0
    (result,) = iter_results(out)
    client, run = mlflow_run((out / "mlruns").as_uri())  # still exactly one run in the experiment
    assert run.info.run_id == crashed.info.run_id == ids_before["mlflow"] and run.info.status == "FINISHED"
    assert {key: mlflow_history(client, run, key) for key in run.data.metrics} == expected(result)
    assert json.loads((folder / IDS_FILE).read_text()) == ids_before

    tensorboard = out / "tensorboard" / result["run_id"]
    assert len(list(tensorboard.glob("events.out.tfevents.*"))) == 2  # one file per invocation, one run
    assert tensorboard_scalars(tensorboard)[1] == approx_series(expected(result))

    wandb = wandb_run(out)
    assert wandb["ids"] == [ids_before["wandb"]] * 2  # two offline folders of one W&B run
    assert wandb["history"] == approx_series(expected(result)) and wandb["exit_codes"] == [1, 0]


@pytest.mark.parametrize("tracking, message", [
    ({"neptune": {}}, "unknown tracking sink 'neptune'; valid: mlflow, tensorboard, wandb"),
    ({"wandb": {"mode": "cloud"}}, "tracking.wandb.mode: must be one of offline, online, got 'cloud'"),
    ({"mlflow": {"tracking_uri": "localhost"}}, "tracking.mlflow.tracking_uri: must be empty or a URI"),
    ({"tensorboard": {"logdir": "x"}}, "tracking.tensorboard: unknown key 'logdir'; valid keys: log_dir"),
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
