"""A results folder or config from someone else, tried as an adversary would: one table of cases, each asserting its
outcome. Bad input or a folder that cannot take the suite's files: exit 2, exactly one short line on stderr, no
traceback. A result that does not check out: left out with a `skipped` line, exit 0. In every case nothing outside
the results folder is written or changed (a victim file and folder sit beside it), and a link planted in the folder
is never written through.

Classes: traversal through every field that becomes a path (result fields, folder names, the config's name, tracking
ids), links at every write (result, checkpoint, temporary files, lock, leaderboards, plots, pages, report), YAML alias
and size bombs, FIFOs that would block a read, overflow (integers too large for a float or for 64 bits, seeds, worker
counts, labels too long for a file name), sizes whose memory can never exist (estimated on the meta device before
anything is allocated), parts of a results folder of the wrong kind, result fields of the wrong type, and a full disk
(a real tmpfs, mounted here; skipped where mounting is not allowed). Interrupts with worker processes and MLflow with
two workers: tests/test_interrupts.py and tests/test_tracking.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import yaml

import run_suite
from reports.__main__ import main as reports_main

RUN = "{run}"  # in a path: the finished run's folder name


@dataclass
class Folder:
    """One case's world: a copy of a finished results folder, its suite file, and a victim outside it."""

    root: Path
    config: Path
    out: Path
    run: Path  # the finished run's folder
    outside: Path  # a folder outside --out holding victim.txt

    @property
    def result(self) -> Path:
        return self.run / "result.json"

    def edit_result(self, **fields) -> None:
        self.result.write_text(json.dumps({**json.loads(self.result.read_text()), **fields}))

    def edit_config(self, **keys) -> None:
        self.config.write_text(yaml.safe_dump({**yaml.safe_load(self.config.read_text()), **keys}))

    def link(self, name: str, target: Path) -> None:
        """Replace `out/name` by a link to `target` (outside)."""
        path = self.out / name.replace(RUN, self.run.name)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif os.path.lexists(path):
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)


@dataclass(frozen=True)
class Case:
    name: str
    command: str  # "suite" (run_suite.py --config --out) or "reports" (python -m reports out)
    plant: Callable[[Folder], None]
    code: int  # 2: one error line; 0: the run or report goes through (a `skipped` line where `message` says)
    message: str = ""  # part of the error line (code 2) or of a stderr line (code 0)
    default_out: bool = False  # run_suite.py without --out (results/<config name>)
    args: tuple[str, ...] = ()  # more arguments for the command line


def text(content: str | bytes) -> Callable[[Folder], None]:
    """Plant: the suite file's whole content."""
    data = content.encode() if isinstance(content, str) else content
    return lambda f: f.config.write_bytes(data)


def config(**keys) -> Callable[[Folder], None]:
    return lambda f: f.edit_config(**keys)


def strategy(**params) -> Callable[[Folder], None]:
    """Plant: the suite's only strategy with these hyper-parameters, e.g. strategy(lora={"rank": 10**9})."""
    return lambda f: f.edit_config(strategies=params)


def result(**fields) -> Callable[[Folder], None]:
    return lambda f: f.edit_result(**fields)


def links(*names: str, target: str = "outside/victim.txt") -> Callable[[Folder], None]:
    def plant(f: Folder) -> None:
        for name in names:
            f.link(name, f.root / target)
    return plant


def replace_by_folder(name: str) -> Callable[[Folder], None]:
    def plant(f: Folder) -> None:
        path = f.out / name.replace(RUN, f.run.name)
        if path.exists():
            path.unlink()
        path.mkdir(parents=True)
    return plant


def replace_by_file(name: str) -> Callable[[Folder], None]:
    def plant(f: Folder) -> None:
        path = f.out / name.replace(RUN, f.run.name)
        shutil.rmtree(path) if path.is_dir() else None
        path.write_text("not a folder\n")
    return plant


def fifo(name: str) -> Callable[[Folder], None]:
    """Plant: a FIFO at `name` (reading it would block until someone writes)."""
    def plant(f: Folder) -> None:
        path = f.config if name == "config" else f.out / name.replace(RUN, f.run.name)
        path.unlink(missing_ok=True)
        os.mkfifo(path)
    return plant


def both(*plants: Callable[[Folder], None]) -> Callable[[Folder], None]:
    def plant(f: Folder) -> None:
        for each in plants:
            each(f)
    return plant


def rerun_from_checkpoint(f: Folder) -> None:
    """The run's result removed: the suite resumes it from its kept last checkpoint and writes the result again."""
    f.result.unlink()


def in_another_run_folder(f: Folder) -> None:
    """A copy of the result under a folder name that is not a run id (a newline in it)."""
    (f.out / "runs" / "a\nb").mkdir()
    shutil.copy(f.result, f.out / "runs" / "a\nb" / "result.json")


def alias_bomb(levels: int = 9) -> str:
    """The billion laughs: 9 levels of 9 aliases, 9**9 = 387 million strings once expanded."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels + 1):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\nstrategies: {{linear: {{lr: *a{levels}}}}}\n"


CKPT = "runs/{run}/checkpoint.pt"
CASES = [
    # traversal: every field of a result that becomes a path, folder names, the config's name
    Case("result stream climbs out", "reports", result(stream="../../outside/evil"), 0,
         "has a field of the wrong type: stream is not a safe name"),
    Case("result backbone climbs out", "reports", result(backbone="../../../outside/x"), 0,
         "backbone is not a safe name"),
    Case("result strategy is absolute", "reports", result(strategy="/tmp/evil"), 0, "strategy is not a safe name"),
    Case("result config stream climbs out", "reports",
         lambda f: f.edit_result(config={**json.loads(f.result.read_text())["config"], "stream": "../x"}), 0,
         "config.stream is not a safe name"),
    Case("run folder name is not a run id", "reports", in_another_run_folder, 0,
         "its folder's name is not a run id"),
    Case("variant label too long for a file name", "suite", strategy(**{"linear@" + "v" * 300: {}}), 2,
         "must be a name of letters, digits"),
    Case("grid entry with a slash", "suite", config(streams={"../mini-split-digits": {}}), 2,
         "stream '../mini-split-digits': must be a name of letters, digits"),
    # links at every write
    Case("links at the result and its temporary names", "suite",
         both(rerun_from_checkpoint, links(f"runs/{RUN}/result.json", f"runs/{RUN}/result.json.partial",
                                           f"runs/{RUN}/checkpoint.pt.partial", "report.html", "leaderboard.csv",
                                           "leaderboard.md", "leaderboard_mini-split-digits.csv",
                                           f"pages/{RUN}.html", "plots/mini-split-digits__vit-mini__retention.png")),
         0),
    Case("checkpoint is a link", "suite", both(rerun_from_checkpoint, links(CKPT)), 0,
         f"{CKPT} cannot be read ("),
    Case("lock file is a link", "suite", links(".lock", target="outside/new-file"), 2, ".lock is a symbolic link"),
    Case("runs/ is a link", "suite", links("runs", target="outside"), 2, "runs is a symbolic link, not a folder"),
    Case("run folder is a link", "suite", both(rerun_from_checkpoint, links("runs/{run}", target="outside")), 2,
         "is a symbolic link, not a folder"),
    Case("cache/ is a link", "suite", links("cache", target="outside"), 2, "cache is a symbolic link, not a folder"),
    Case("cache/features is a link", "suite", links("cache/features", target="outside"), 2,
         "features is a symbolic link, not a folder"),
    Case("plots/ is a link", "reports", links("plots", target="outside"), 2, "plots is a symbolic link"),
    Case("pages/ is a link", "reports", links("pages", target="outside"), 2, "pages is a symbolic link"),
    Case("report links replaced, not followed", "reports",
         links("report.html", "leaderboard.md", "leaderboard_mini-split-digits.csv", f"pages/{RUN}.html"), 0),
    Case("--out is a dangling link", "suite", lambda f: (shutil.rmtree(f.out), f.out.symlink_to(f.root / "gone")),
         2, "--out: must be a folder or a path to create one at, not a symbolic link to a missing target"),
    # alias and size bombs, reads that would block
    Case("YAML alias bomb", "suite", text(alias_bomb()), 2, "its aliases expand to more than 100000 values"),
    Case("YAML alias to itself", "suite", text("strategies: &s {linear: {lr: [*s]}}\n"), 2,
         "an alias refers to a node that contains it"),
    Case("--set value is an alias bomb", "suite", lambda f: None, 2,
         "--set strategies.linear.lr: the value 'a0: &a0 [", args=("--set", "strategies.linear.lr=" + alias_bomb())),
    Case("config of 2 MB", "suite", text("# " + "x" * 2**21 + "\n"), 2, "is larger than 1 MiB"),
    Case("config nested 100000 deep", "suite", text("a: " + "[" * 100_000 + "]" * 100_000 + "\n"), 2,
         "nests values too deeply"),
    Case("value of 500 KB in an error", "suite", strategy(linear={"optimizer": "x" * 500_000}), 2,
         "strategies.linear.optimizer: must be one of"),
    Case("integer of 5000 digits in the config", "suite", text("seeds: [" + "7" * 5000 + "]\n"), 2,
         "Exceeds the limit (4300 digits)"),
    Case("config is a FIFO", "suite", fifo("config"), 2, "is not a regular file"),
    Case("result is a FIFO", "reports", fifo(f"runs/{RUN}/result.json"), 0, "result.json: is not a regular file"),
    Case("published.json is a FIFO", "reports", fifo("published.json"), 0, "published.json: is not a regular file"),
    Case("result larger than 64 MiB", "reports", lambda f: os.truncate(f.result, 65 * 2**20), 0,
         "is larger than 64 MiB"),
    Case("LoRA rank 10**9", "suite", strategy(lora={"rank": 10**9}), 2,
         "strategies.lora: its parameters and state alone would take about"),
    Case("RanPAC projection of 10**7", "suite", strategy(ranpac={"projection_dim": 10**7}), 2,
         "strategies.ranpac: its parameters and state alone would take about"),
    Case("L2P pool of 10**9 prompts", "suite", strategy(l2p={"pool_size": 10**9}), 2,
         "strategies.l2p: its parameters and state alone"),
    # overflow
    Case("integer too large for a float", "suite", strategy(linear={"lr": 10**400}), 2,
         "strategies.linear.lr: must be a finite number"),
    Case("integer beyond 64 bits", "suite", strategy(linear={"epochs": 2**70}), 2,
         "strategies.linear.epochs: must be an integer that fits 64 bits"),
    Case("negative class_order_seed", "suite", config(class_order_seed=-1), 2,
         "class_order_seed: must be an integer in [0, 2**32 - 1"),
    Case("train_seed beyond numpy", "suite", config(train_seed=2**40), 2,
         "train_seed: must be an integer in [0, 2**32"),
    Case("worker count beyond 64 bits", "suite", config(executor={"workers": 10**20}), 2,
         "executor.workers: must be an integer that fits 64 bits"),
    Case("worker count no machine runs", "suite", config(executor={"workers": 10**6}), 2,
         "executor.workers: must be at most 1024"),
    Case("config's name is '..'", "suite", lambda f: f.config.rename(f.config.with_name("...yaml")), 2,
         "the config file's name (the default --out is results/<name>", default_out=True),
    # kinds of folder parts
    Case("runs/ is a file", "suite", replace_by_file("runs"), 2, "runs is a file, not a folder"),
    Case("run folder is a file", "suite", replace_by_file("runs/{run}"), 2, "is a file, not a folder"),
    Case("result.json is a folder", "suite", replace_by_folder(f"runs/{RUN}/result.json"), 2,
         "result.json is a folder where the suite writes a file"),
    Case("checkpoint is a folder", "suite", both(rerun_from_checkpoint, replace_by_folder(CKPT)), 2,
         "checkpoint.pt is a folder where the run keeps its checkpoint"),
    Case("lock is a folder", "suite", replace_by_folder(".lock"), 2, ".lock is a folder"),
    Case("plots/ is a file", "reports", replace_by_file("plots"), 2, "plots is a file, not a folder"),
    Case("report.html is a folder", "reports", replace_by_folder("report.html"), 2,
         "report.html is a folder where the suite writes a file"),
    Case("published.json is a folder", "reports", replace_by_folder("published.json"), 0,
         "published.json: is a folder, not a file"),
    # fields of the wrong type
    Case("seed a string", "reports", result(seed="zero"), 0, "seed is a str, not an integer"),
    Case("accuracy matrix a string", "reports", result(accuracy_matrix="abc"), 0,
         "accuracy_matrix is a str, not a list"),
    Case("accuracy matrix ragged", "reports", result(accuracy_matrix=[[1.0, 2.0], [3.0]]), 0,
         "accuracy_matrix is not a square matrix"),
    Case("metrics a list", "reports", result(metrics=[1, 2]), 0, "metrics is a list, not a mapping"),
    Case("cost without FLOPs", "reports", result(cost={"params_trainable": 1, "params_added": 1, "wall_time_s": 1}),
         0, "cost lacks 'flops_per_image'"),
    Case("infinite parameter count", "reports",
         lambda f: f.result.write_text(f.result.read_text().replace('"params_added": ',
                                                                    '"params_added": Infinity, "x": ')),
         0, "cost.params_added is infinite"),
    Case("config not a mapping", "reports", result(config=[1]), 0, "config is a list, not a mapping"),
    Case("confusion names a class the run lacks", "reports",
         lambda f: f.edit_result(diagnostics={**json.loads(f.result.read_text())["diagnostics"],
                                              "confusion": [[99, 0, 1]]}), 0,
         "diagnostics.confusion holds an entry that is not"),
    Case("status a list", "reports", result(status=["ok"]), 0, "has status ['ok'], not one of"),
    Case("run id of 1 MB", "reports", result(run_id="r" * 2**20), 0, "run_id is not a safe name"),
    Case("integer of 5000 digits in a result", "reports",
         lambda f: f.result.write_text(f.result.read_text().replace('"seed": 0', '"seed": ' + "9" * 5000)), 0,
         "cannot be parsed (Exceeds the limit"),
    Case("result nested 100000 deep", "reports", lambda f: f.result.write_text("[" * 100_000 + "]" * 100_000), 0,
         "result.json: cannot be parsed ("),
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_backbone_params) -> Path:
    """One finished run (linear, two tasks, seed 0) with its last checkpoint kept, and the report."""
    folder = tmp_path_factory.mktemp("adversarial")
    (folder / "suite.yaml").write_text(yaml.safe_dump({
        "backbones": {"vit-mini": tiny_backbone_params}, "streams": {"mini-split-digits": {"n_tasks": 2}},
        "strategies": {"linear": {"epochs": 1}}, "seeds": [0], "retention": {"eval_size": 50}, "device": "cpu",
        "precision": "fp32"}))
    code = run_suite.main(["--config", str(folder / "suite.yaml"), "--out", str(folder / "out"), "--quiet",
                           "--keep-checkpoints"])
    assert code == 0
    return folder


def world(finished: Path, tmp_path: Path) -> Folder:
    shutil.copytree(finished, tmp_path, dirs_exist_ok=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "victim.txt").write_text("precious\n")
    (run,) = (tmp_path / "out" / "runs").iterdir()
    return Folder(tmp_path, tmp_path / "suite.yaml", tmp_path / "out", run, tmp_path / "outside")


def outside_state(folder: Folder) -> dict[str, bytes]:
    """Every file under the case's folder but outside --out (and the config), with its bytes."""
    return {str(p.relative_to(folder.root)): p.read_bytes() for p in sorted(folder.root.rglob("*"))
            if p.is_file() and not p.is_symlink() and folder.out not in p.parents and p.suffix != ".yaml"
            and not p.is_fifo()}


def run_command(case: Case, folder: Folder) -> int:
    if case.command == "reports":
        return reports_main([str(folder.out), *case.args])
    (config_file,) = folder.root.glob("*.yaml")
    return run_suite.main(["--config", str(config_file), "--quiet", *case.args]
                          + ([] if case.default_out else ["--out", str(folder.out)]))


def short(line: str, folder: Folder) -> bool:
    """At most 320 characters besides the paths of the test's folder and the run's id (which the OS bounds)."""
    return len(line.replace(str(folder.root), "").replace(folder.run.name, "")) <= 320


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_adversarial_input(case, finished, tmp_path, capsys, monkeypatch):
    folder = world(finished, tmp_path)
    monkeypatch.chdir(tmp_path)  # the default --out (results/<config name>) lands here
    case.plant(folder)
    before = outside_state(folder)
    capsys.readouterr()

    code = run_command(case, folder)

    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert code == case.code, captured.err[-2000:]
    if case.code == 2:
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), captured.err[-2000:]
        assert short(lines[0], folder), lines[0][:500]
        assert case.message.replace("{run}", folder.run.name) in lines[0], lines[0]
    elif case.message:
        lines = [line for line in captured.err.splitlines() if case.message.replace("{run}", folder.run.name) in line]
        assert len(lines) == 1 and short(lines[0], folder), captured.err[-2000:]
    assert outside_state(folder) == before  # nothing outside --out written or changed
    assert not (tmp_path / "results").exists() and sorted(p.name for p in folder.outside.iterdir()) == ["victim.txt"]


def test_links_at_writes_are_replaced_by_real_files(finished, tmp_path, capsys):
    """The written files are real files in the folder, with the run's content; the victim is unchanged."""
    folder = world(finished, tmp_path)
    original = folder.result.read_bytes()
    rerun_from_checkpoint(folder)
    names = [f"runs/{RUN}/result.json", "report.html", "leaderboard.csv", f"pages/{RUN}.html"]
    links(*names)(folder)
    assert run_command(Case("", "suite", lambda f: None, 0), folder) == 0
    for name in names:
        path = folder.out / name.replace(RUN, folder.run.name)
        assert path.is_file() and not path.is_symlink()
    assert json.loads(folder.result.read_bytes())["accuracy_matrix"] == json.loads(original)["accuracy_matrix"]
    assert (folder.outside / "victim.txt").read_text() == "precious\n"
    assert not list(folder.out.rglob("*.partial"))  # temporary files renamed or removed


def test_error_lines_echo_bounded_values():
    """An alias bomb, a 50 MB string and a million-digit integer render in at most ECHO_LIMIT characters."""
    from benchmark.errors import ECHO_LIMIT, shown

    bomb: list = ["lol"] * 9
    for _ in range(30):  # 9**31 strings once expanded
        bomb = [bomb] * 9
    for value in (bomb, "x" * 50_000_000, 10**1_000_000, {"k\n": "v\r\n" * 1000}):
        line = shown(value)
        assert len(line) <= ECHO_LIMIT and "\n" not in line
    assert shown([1, "a", None]) == "[1, 'a', None]"  # short values exactly as repr shows them


def mounted_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    return done.returncode == 0


@pytest.fixture
def tmpfs(tmp_path):
    """A tmpfs folder of the size asked, unmounted afterwards; skipped where mounting is not allowed."""
    mounts = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"tmpfs{len(mounts)}"
        if not mounted_tmpfs(folder, size):
            pytest.skip("cannot mount a tmpfs here (not root, or no CAP_SYS_ADMIN)")
        mounts.append(folder)
        return folder

    yield mount
    for folder in mounts:
        subprocess.run(["umount", str(folder)], check=True)


def test_disk_full_is_one_line_naming_the_folder(finished, tmp_path, tmpfs, capsys):
    """A report into a nearly full tmpfs, and a suite whose checkpoint does not fit: one line, exit 2; the suite
    reruns to the same numbers once there is space."""
    out = tmpfs("160k")
    shutil.copytree(finished / "out" / "runs", out / "runs")
    capsys.readouterr()
    assert reports_main([str(out)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: no space left on the device holding {out}") and "pass another --out" in line

    small = tmpfs("24k")  # holds the lock and a run folder, not the run's first checkpoint
    config = finished / "suite.yaml"
    assert run_suite.main(["--config", str(config), "--out", str(small), "--quiet"]) == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if not line.startswith("precision: ")]  # said as training starts
    assert "Traceback" not in err
    assert line.startswith(f"error: no space left on the device holding {small}/runs/"), line
    assert not list(small.rglob("*.partial")) and not list(small.rglob("result.json"))

    roomy = tmp_path / "roomy"
    shutil.copytree(small, roomy)
    assert run_suite.main(["--config", str(config), "--out", str(roomy), "--quiet"]) == 0
    (result,) = roomy.glob("runs/*/result.json")
    expected = json.loads(next((finished / "out").glob("runs/*/result.json")).read_text())
    assert json.loads(result.read_text())["accuracy_matrix"] == expected["accuracy_matrix"]


def test_tracking_ids_never_become_paths(tmp_path):
    """A planted tracking.json cannot send TensorBoard's event files elsewhere: the folder is always the run's."""
    pytest.importorskip("tensorboard")
    from benchmark.tracking.base import SinkContext, TrackedRun
    from benchmark.tracking.tensorboard_sink import TensorboardParams, TensorboardSink
    from benchmark.tracking.tracker import stored_ids

    elsewhere = tmp_path / "elsewhere"
    sink = TensorboardSink(TensorboardParams(), SinkContext(tmp_path / "out", "suite"))
    assert sink.start(TrackedRun("run-a", "a · b · 0", {}, {}, {}), resume_id=str(elsewhere)) == "run-a"
    sink.writer.close()
    assert not elsewhere.exists() and list((tmp_path / "out" / "tensorboard" / "run-a").iterdir())
    (tmp_path / "ids.json").write_text(json.dumps({"tensorboard": ["not", "a", "string"]}))
    os.mkfifo(tmp_path / "fifo.json")
    assert stored_ids(tmp_path / "ids.json") == {} and stored_ids(tmp_path / "fifo.json") == {}
