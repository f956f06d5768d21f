"""The prepared-folder benchmarks (ImageNet-A, CUB-200, ObjectNet, OmniBenchmark, VTAB) on tiny folders written in
the archives' layout, `<root>/<folder>/{train,test}/<class>/<image>`, and their split manifests.

Images are uniform colours that say what they are (red: 5 x the class's position among the sorted folders, green:
the split, blue: the image's number), so an item read back through a stream shows where it came from. Independent
statements: torchvision's `ImageFolder` (what the reference code reads the folders with) for the class indices, the
class order printed in RevisitingCIL's log for seed 1993, and SHA-256 over the sorted paths computed here."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import pytest
import torch
import yaml
from PIL import Image
from torchvision.datasets import ImageFolder

import run_suite
from benchmark.backbones import build_backbone
from benchmark.config import load_suite
from benchmark.datasets.class_folders import load_benchmark, main as manifest_main, scan_split_folders, VTAB
from benchmark.datasets.images import ImageSpec
from benchmark.dryrun import PRESENT, stream_data
from benchmark.errors import ConfigError, DatasetMissingError, UserInputError
from benchmark.evaluation import as_tensors
from benchmark.results import iter_results
from benchmark.runtime import Runtime
from benchmark.streams import build_stream, stream_params
from benchmark.suite import plan_runs

ROOT = Path(__file__).resolve().parents[1]
PLAIN = ImageSpec((3, 8, 8), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # pixels back as value / 255
GREEN = {"train": 60, "test": 180}
# (stream, folder, classes, default tasks, default shuffle): the published tables' splits
BENCHMARKS = [("split-imagenet-a", "imagenet-a", 200, 10, True), ("split-cub200", "cub", 200, 20, True),
              ("split-objectnet", "objectnet", 200, 20, True), ("split-omnibenchmark", "omnibenchmark", 300, 10, True),
              ("split-vtab", "vtab", 50, 5, False)]
# zhoudw-zdw/RevisitingCIL@a2e6b71 logs/aper_adapter/objectnet/exp_1993_pretrained_vit_b16_224_in21k_adapter.log:22,
# the class order of a 200-class benchmark under seed 1993 (the first 20 of 200)
REFERENCE_ORDER_1993 = [168, 136, 51, 9, 183, 101, 171, 99, 42, 159, 191, 70, 16, 188, 27, 10, 175, 26, 68, 187]


def write_folder(folder: Path, classes: Sequence[str], per_class: dict[str, int]) -> None:
    """`folder/{train,test}/<class>/<n>.png` for every class; `per_class`: images per class and split."""
    for split, count in per_class.items():
        for position, name in enumerate(classes):
            (folder / split / name).mkdir(parents=True, exist_ok=True)
            for n in range(count):
                Image.new("RGB", (4, 4), (5 * position % 256, GREEN[split], 40 * n)).save(folder / split / name
                                                                                          / f"{n}.png")


def digest_of(folder: Path) -> str:
    """The manifest digest, computed here: SHA-256 over the sorted `<split>/<class>/<file>` paths, newline-joined."""
    paths = sorted(p.relative_to(folder).as_posix() for p in folder.glob("*/*/*.png") if not p.name.startswith("."))
    return hashlib.sha256("\n".join(paths).encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every benchmark at its real class count, one train and one test image per class; VTAB's class folders are
    named 0..49 (string order: 0, 1, 10, ...), two train images each, with the archives' stray files beside them."""
    root = tmp_path_factory.mktemp("prepared")
    for _, folder, classes, _, _ in BENCHMARKS:
        names = [str(c) for c in range(classes)] if folder == "vtab" else [f"n{c:08d}" for c in range(classes)]
        write_folder(root / folder, sorted(names), {"train": 2 if folder == "vtab" else 1, "test": 1})
    (root / "vtab" / "README.txt").write_text("VTAB-CIL\n")
    (root / "vtab" / "train" / ".DS_Store").write_bytes(b"\0")
    (root / "vtab" / "train" / "7" / "._0.png").write_bytes(b"\0")  # a macOS resource fork: hidden, not an image
    return root


def vtab(root: Path, **params) -> object:
    return build_stream("split-vtab", 1993, image_spec=PLAIN, data_dir=str(root), augment="none", **params)


# ---------------------------------------------------------------- the five streams


@pytest.mark.parametrize("name, folder, classes, tasks, shuffle", BENCHMARKS, ids=[b[0] for b in BENCHMARKS])
def test_every_benchmark_builds_its_published_split(data_root, name, folder, classes, tasks, shuffle):
    stream = build_stream(name, 1993, image_spec=PLAIN, data_dir=str(data_root), augment="none")
    assert len(stream.class_names) == classes and len(stream.tasks) == tasks
    assert all(len(task.classes) == classes // tasks for task in stream.tasks)
    assert sorted(c for task in stream.tasks for c in task.classes) == list(range(classes))
    assert (stream.class_order == tuple(range(classes))) is not shuffle
    assert stream.manifest_sha256 == digest_of(data_root / folder)
    assert stream_params(name, {}).shuffle is shuffle


def test_class_indices_are_torchvision_image_folders(data_root):
    """The reference reads each split with ImageFolder: class index = position in the string-sorted folders. It
    would also read the hidden `._0.png` (and fail to decode it); here hidden files are skipped."""
    found = load_benchmark(data_root, VTAB)
    for split, files in (("train", found.train), ("test", found.test)):
        reference = ImageFolder(str(data_root / "vtab" / split))
        visible = [(path, label) for path, label in reference.samples if not Path(path).name.startswith(".")]
        assert list(found.classes) == reference.classes and found.classes[:3] == ("0", "1", "10")
        assert sorted(zip(map(str, files.paths), files.labels)) == sorted(visible)
        assert len(visible) == len(reference.samples) - (split == "train")


def test_seed_1993_gives_the_reference_class_order(data_root):
    stream = build_stream("split-objectnet", 1993, image_spec=PLAIN, data_dir=str(data_root), augment="none")
    assert list(stream.class_order[:20]) == REFERENCE_ORDER_1993
    assert stream.tasks[0].classes == tuple(REFERENCE_ORDER_1993[:10]) and stream.tasks[0].labels == tuple(range(10))


def test_vtab_unshuffled_runs_the_sorted_folders_in_blocks(data_root):
    stream = vtab(data_root)
    names = sorted(str(c) for c in range(50))
    assert [[stream.class_names[c] for c in task.classes] for task in stream.tasks] == [
        names[10 * k: 10 * k + 10] for k in range(5)]
    shuffled = vtab(data_root, shuffle=True)
    assert shuffled.class_order[:3] == (43, 41, 23) and shuffled.manifest_sha256 == stream.manifest_sha256


def test_every_image_is_served_with_its_class_and_split(data_root):
    stream = vtab(data_root, shuffle=True)
    for task in stream.tasks:
        for split, dataset in (("train", task.train), ("test", task.test)):
            images, units = as_tensors(dataset)
            red, green = ((images[:, c, 0, 0] * 255).round().long() for c in (0, 1))
            assert torch.equal(red, torch.tensor([5 * stream.class_order[u] for u in units.tolist()]))
            assert set(green.tolist()) == {GREEN[split]} and set(units.tolist()) == set(task.labels)
            assert len(units) == (2 if split == "train" else 1) * 10


# ---------------------------------------------------------------- layouts that are not the archive's


def test_a_missing_benchmark_is_one_line_naming_where_to_put_it(tmp_path, write_suite, capsys):
    with pytest.raises(DatasetMissingError) as caught:
        build_stream("split-cub200", 0, image_spec=PLAIN, data_dir=str(tmp_path))
    message = str(caught.value)
    assert message.startswith(f"CUB-200 not found: no folder {tmp_path / 'cub'}; download cub.zip (md5 85e342a2")
    assert f"{tmp_path / 'cub'}/train/<class>/ and {tmp_path / 'cub'}/test/<class>/ exist" in message
    config = write_suite(strategies={"simplecil": {}}, streams={"split-objectnet": {"data_dir": str(tmp_path)}})
    assert run_suite.main(["--config", str(config), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ObjectNet not found" in err[0] and "objnet.tgz" in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage, expected", [
    (lambda f: (f / "test" / "3" / "0.png").unlink() or (f / "test" / "3").rmdir(),
     r"class folders of .*train and .*test differ: 1 only in train/ \(first: 3\)"),
    (lambda f: (f / "test").rename(f / "val"), r"no folder .*vtab/test; expected .*vtab/train/<class>/<image> and"),
    (lambda f: [p.unlink() for p in (f / "train" / "42").iterdir()], r"class folder .*train/42 holds no images"),
    (lambda f: Image.new("RGB", (4, 4)).save(f / "train" / "stray.png"), r"images directly in .*vtab/train"),
    (lambda f: write_folder(f, ["50"], {"train": 1, "test": 1}), r"train holds 51 class folders, but VTAB has 50"),
], ids=["class-missing-from-test", "no-test-folder", "empty-class", "image-outside-classes", "extra-class"])
def test_a_damaged_folder_is_one_line_naming_the_problem(tmp_path, damage, expected):
    folder = tmp_path / "vtab"
    write_folder(folder, [str(c) for c in range(50)], {"train": 1, "test": 1})
    damage(folder)
    with pytest.raises(DatasetMissingError, match=expected) as caught:
        vtab(tmp_path)
    assert "\n" not in str(caught.value)


def test_the_split_must_divide_the_classes():
    with pytest.raises(ConfigError, match="n_tasks: must be a divisor of OmniBenchmark's 300 classes, got 7"):
        stream_params("split-omnibenchmark", {"n_tasks": 7})
    assert stream_params("split-imagenet-a", {"n_tasks": 20}).n_tasks == 20  # RevisitingCIL's B0-Inc10


# ---------------------------------------------------------------- manifests


@pytest.fixture
def vtab_copy(tmp_path) -> Path:
    """A VTAB folder of this test's own, with file names as ImageNet-A's (spaces, dots, non-ASCII)."""
    write_folder(tmp_path / "vtab", [str(c) for c in range(50)], {"train": 1, "test": 1})
    Image.new("RGB", (4, 4)).save(tmp_path / "vtab" / "train" / "5" / "0.000116_digital clock _ clöck_0.86.png")
    return tmp_path


def test_a_written_manifest_lists_the_files_under_its_digest(vtab_copy, tmp_path, capsys):
    out = tmp_path / "vtab.manifest"
    assert manifest_main([str(vtab_copy / "vtab"), "--out", str(out)]) == 0
    digest = digest_of(vtab_copy / "vtab")
    assert capsys.readouterr().out.strip() == f"{out}: 101 files in 50 classes, sha256 {digest}"
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == f"# cl-bench split manifest: 101 files, sha256 {digest}"
    assert lines[1:] == sorted(lines[1:]) and "train/5/0.000116_digital clock _ clöck_0.86.png" in lines
    assert lines[1] == "test/0/0.png" and lines[-1] == "train/9/0.png"
    assert manifest_main([str(vtab_copy / "vtab")]) == 0 and capsys.readouterr().out == out.read_text("utf-8")


def test_a_matching_manifest_is_recorded_and_one_that_differs_is_refused(vtab_copy, tmp_path):
    out = tmp_path / "vtab.manifest"
    assert manifest_main([str(vtab_copy / "vtab"), "--out", str(out)]) == 0
    assert vtab(vtab_copy, manifest=str(out)).manifest_sha256 == digest_of(vtab_copy / "vtab")
    assert stream_params("split-vtab", {"manifest": str(out)}).manifest_sha256 == digest_of(vtab_copy / "vtab")
    (vtab_copy / "vtab" / "train" / "5" / "0.png").unlink()
    Image.new("RGB", (4, 4)).save(vtab_copy / "vtab" / "test" / "8" / "extra.png")
    with pytest.raises(UserInputError) as caught:
        vtab(vtab_copy, manifest=str(out))
    folder = vtab_copy / "vtab"
    assert str(caught.value) == (
        f"{folder} does not match the manifest {out}: 1 listed file(s) missing (first: train/5/0.png); "
        "1 file(s) not listed (first: test/8/extra.png); re-extract the benchmark's archive (docs/benchmarks.md), "
        f"or, if this copy is the one you mean to use, write its manifest with `cl-bench manifest {folder}`")
    pinned = digest_of(vtab_copy / "vtab")
    assert vtab(vtab_copy, manifest_sha256=pinned).manifest_sha256 == pinned
    with pytest.raises(UserInputError, match=f"hash to {pinned}, not the pinned manifest_sha256 0123456789abcdef"):
        vtab(vtab_copy, manifest_sha256="0123456789abcdef")


def test_a_run_records_the_digest_of_the_files_it_read(vtab_copy, tmp_path, write_suite):
    out = tmp_path / "vtab.manifest"
    assert manifest_main([str(vtab_copy / "vtab"), "--out", str(out)]) == 0
    stream = {"data_dir": str(vtab_copy), "augment": "none", "manifest": str(out)}
    config = write_suite(strategies={"simplecil": {}}, streams={"split-vtab": stream})
    assert run_suite.main(["--config", str(config), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    (result,) = iter_results(tmp_path / "out")
    digest = digest_of(vtab_copy / "vtab")
    assert result["manifest_sha256"] == digest and result["config"]["stream_params"]["manifest_sha256"] == digest
    assert result["recipe"]["class_order"] == "natural" and len(result["test_sizes"]) == 5


@pytest.mark.parametrize("edit, expected", [
    (lambda text: text.replace("train/7/0.png\n", ""), r"its 100 paths hash to [0-9a-f]{16}, but its header states "
                                                       r"101 files hashing to [0-9a-f]{16}: the file was edited"),
    (lambda text: text.split("\n", 1)[1], r"is not a split manifest: its first line must read"),
    (lambda text: text + "images/7/1.png\n", r"line 103: expected `train/<class>/<file>` or `test/<class>/<file>`"),
    (lambda text: text + "train/7/0.png\n", r"lists a file twice"),
], ids=["line-removed", "no-header", "not-a-split", "twice"])
def test_a_manifest_that_is_not_one_is_refused_at_configuration(vtab_copy, tmp_path, edit, expected):
    out = tmp_path / "vtab.manifest"
    assert manifest_main([str(vtab_copy / "vtab"), "--out", str(out)]) == 0
    out.write_text(edit(out.read_text("utf-8")), "utf-8")
    with pytest.raises(ConfigError, match="streams.split-vtab.manifest: .*" + expected):
        stream_params("split-vtab", {"manifest": str(out)})


def test_a_manifest_keeps_its_digest_whatever_its_line_order_and_endings(vtab_copy, tmp_path):
    out = tmp_path / "vtab.manifest"
    assert manifest_main([str(vtab_copy / "vtab"), "--out", str(out)]) == 0
    header, *paths = out.read_text("utf-8").splitlines()
    out.write_bytes(("\r\n".join([header, *paths[::-1]]) + "\r\n").encode())
    assert stream_params("split-vtab", {"manifest": str(out)}).manifest_sha256 == digest_of(vtab_copy / "vtab")
    with pytest.raises(ConfigError, match="manifest_sha256: the manifest .* states [0-9a-f]{16}, not the pinned f{16}"):
        stream_params("split-vtab", {"manifest": str(out), "manifest_sha256": "f" * 16})
    with pytest.raises(ConfigError, match="manifest_sha256: must be 16 lower-case hex digits"):
        stream_params("split-vtab", {"manifest_sha256": "ABC"})
    with pytest.raises(ConfigError, match="manifest: must be an existing manifest file"):
        stream_params("split-vtab", {"manifest": str(tmp_path / "none.manifest")})


def test_the_manifest_command_refuses_bad_input_and_writes_nothing(vtab_copy, tmp_path, capsys):
    for argv, expected in (([str(tmp_path / "nowhere")], "no folder"),
                           ([str(vtab_copy / "vtab"), "--out", str(tmp_path / "no" / "m.txt")], "--out"),
                           ([str(vtab_copy / "vtab"), "--out", str(tmp_path)], "give a file name"),
                           ([str(vtab_copy / "vtab"), "--bogus"], "unrecognized arguments")):
        assert manifest_main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vtab"]
    assert scan_split_folders(vtab_copy / "vtab").manifest.sha256 == digest_of(vtab_copy / "vtab")


# ---------------------------------------------------------------- the paper configurations


def test_the_paper_configs_find_their_streams_in_the_archives_layout(data_root, tmp_path):
    """The dry run's data check on each paper config's streams, pointed at the tiny folders: every stream is
    present with the benchmark's classes and the published number of tasks."""
    cpu = Runtime.resolve("cpu", "fp32", progress=False)
    expected = {"split-imagenet-a": 200, "split-cub200": 200, "split-objectnet": 200, "split-omnibenchmark": 300,
                "split-vtab": 50}
    checked, backbones = set(), {}
    for name in ("aper_simplecil_benchmarks", "ranpac_benchmarks", "ranpac_omnibenchmark", "cl_lora_vtab"):
        raw = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
        raw["streams"] = {stream: {**params, "data_dir": str(data_root)} for stream, params in raw["streams"].items()}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(raw))
        specs = {(spec.stream, spec.backbone): spec for spec in plan_runs(load_suite(tmp_path / f"{name}.yaml"), cpu)}
        for (stream, backbone_name), spec in specs.items():
            if backbone_name not in backbones:
                backbones[backbone_name] = build_backbone(backbone_name, weights=False, **spec.backbone_params)
            assert stream_data(spec, backbones[backbone_name]) == (PRESENT, expected[stream])
            checked.add((name, stream))
    assert len(checked) == 10
