"""Published ImageNet-R splits from list files written here in the formats the reference codebases ship: CPrompt's
`coda_train.txt` / `coda_test.txt` (`<wnid>/<file> <label>` lines) and CODA-Prompt's `imagenet-r_train.yaml` /
`_test.yaml` (`data:` paths under their own `data/imagenet-r/train/` folders, `targets:` labels). The tiny ImageNet-R
images encode what they are in their colour, so the images a stream serves are decoded back to file names."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import run_suite
from benchmark.datasets.split_lists import lists_sha256
from benchmark.errors import ConfigError, DatasetMissingError
from benchmark.evaluation import as_tensors
from benchmark.results import iter_results
from benchmark.streams import build_stream
from test_real_streams import PER_PAIR, PLAIN, TINY_RENDITIONS, WNIDS, imagenet_r_root, pixel  # noqa: F401

TEST_N, TRAIN_N = (0,), (1, 2, 3)  # image numbers listed for testing and training; number 4 is in neither list


def entries(numbers: tuple[int, ...], renditions: tuple[str, ...] = TINY_RENDITIONS) -> list[tuple[str, str]]:
    """(wnid, file) of the tiny images with these numbers, in a scrambled order (lists are not sorted)."""
    listed = [(wnid, f"{rendition}_{n}.png") for rendition in renditions for wnid in WNIDS for n in numbers]
    return listed[::-1]


def write_cprompt(folder: Path, train: list, test: list) -> tuple[Path, Path]:
    """CPrompt's format; the label column holds the reference's own class numbers (here 100 + position)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "coda_train.txt", folder / "coda_test.txt"
    for path, listed in zip(paths, (train, test)):
        path.write_text("".join(f"{wnid}/{name} {100 + WNIDS.index(wnid)}\n" for wnid, name in listed))
    return paths


def write_coda_yaml(folder: Path, train: list, test: list) -> tuple[Path, Path]:
    """CODA-Prompt's format, as its repository stores it (yaml.dump of data and targets lists)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "imagenet-r_train.yaml", folder / "imagenet-r_test.yaml"
    for path, listed, side in zip(paths, (train, test), ("train", "test")):
        path.write_text(yaml.dump({"data": [f"data/imagenet-r/{side}/{wnid}/{name}" for wnid, name in listed],
                                   "targets": [WNIDS.index(wnid) for wnid, _ in listed]}))
    return paths


def served(split) -> list[tuple[str, str]]:
    """(wnid, file) of every image a split serves, read back from the pixels (R: rendition, G: wnid, B: number)."""
    images, _ = as_tensors(split)
    return [(WNIDS[g // 40], f"{TINY_RENDITIONS[r // 40]}_{b // 10}.png")
            for r, g, b in zip(*(pixel(images, c).tolist() for c in range(3)))]


def stream_with(lists: tuple[Path, Path], root: Path, name: str = "split-imagenet-r", **params):
    return build_stream(name, 3, image_spec=PLAIN, data_dir=str(root), train_list=str(lists[0]),
                        test_list=str(lists[1]), augment="none", **params)


@pytest.mark.parametrize("write", [write_cprompt, write_coda_yaml])
def test_a_published_split_gives_exactly_the_listed_images(write, imagenet_r_root, tmp_path):
    train, test = entries(TRAIN_N), entries(TEST_N)
    stream = stream_with(write(tmp_path, train, test), imagenet_r_root, n_tasks=2)
    served_train = [item for task in stream.tasks for item in served(task.train)]
    served_test = [item for task in stream.tasks for item in served(task.test)]
    assert sorted(served_train) == sorted(train) and sorted(served_test) == sorted(test)
    assert len(served_train) == 36 and len(served_test) == 12  # the unlisted number-4 images are not used
    for task in stream.tasks:  # labels come from the class folders, tasks from the seeded class order
        _, units = as_tensors(task.test)
        assert [sorted(WNIDS).index(w) for w, _ in served(task.test)] == [stream.class_order[u] for u in
                                                                          units.tolist()]


def test_both_formats_of_the_same_split_build_the_same_stream_but_hash_apart(imagenet_r_root, tmp_path):
    train, test = entries(TRAIN_N), entries(TEST_N)
    lines = write_cprompt(tmp_path / "cprompt", train, test)
    coda = write_coda_yaml(tmp_path / "coda", train, test)
    a, b = stream_with(lines, imagenet_r_root, n_tasks=2), stream_with(coda, imagenet_r_root, n_tasks=2)
    for task_a, task_b in zip(a.tasks, b.tasks):
        assert served(task_a.train) == served(task_b.train) and served(task_a.test) == served(task_b.test)
    assert lists_sha256(*lines) != lists_sha256(*coda)


def test_domain_imagenet_r_groups_the_listed_images_by_rendition(imagenet_r_root, tmp_path):
    lists = write_cprompt(tmp_path, entries(TRAIN_N), entries(TEST_N))
    stream = stream_with(lists, imagenet_r_root, "domain-imagenet-r", domains=["sketch", ["art", "cartoon"]])
    assert sorted(served(stream.tasks[0].train)) == sorted(entries(TRAIN_N, ("sketch",)))
    assert sorted(served(stream.tasks[1].test)) == sorted(entries(TEST_N, ("art", "cartoon")))


def test_the_result_records_the_lists_and_their_hash(write_suite, imagenet_r_root, tmp_path):
    lists = write_cprompt(tmp_path / "lists", entries(TRAIN_N), entries(TEST_N))
    stream = {"data_dir": str(imagenet_r_root), "n_tasks": 2, "train_list": str(lists[0]), "test_list": str(lists[1])}
    config = write_suite(strategies={"linear": {"epochs": 1}}, streams={"split-imagenet-r": stream})
    assert run_suite.main(["--config", str(config), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    (result,) = iter_results(tmp_path / "out")
    recorded = result["config"]["stream_params"]
    assert recorded["train_list"] == str(lists[0]) and recorded["list_format"] == "auto"
    assert recorded["split_sha256"] == lists_sha256(*lists) and len(recorded["split_sha256"]) == 16
    assert sum(result["test_sizes"]) == 12
    pinned = {**stream, "split_sha256": recorded["split_sha256"]}  # the recorded configuration rebuilds the stream
    assert len(build_stream("split-imagenet-r", 0, image_spec=PLAIN, **pinned).tasks) == 2


def test_bad_lists_are_one_line_errors(imagenet_r_root, tmp_path):
    lists = write_cprompt(tmp_path, entries(TRAIN_N), entries(TEST_N))
    root = str(imagenet_r_root)
    cases = [
        ({"train_list": str(lists[0])}, ConfigError, "train_list: must be given together with test_list"),
        ({"train_list": str(lists[0]), "test_list": str(tmp_path / "nope.txt")}, ConfigError,
         "test_list: must be an existing list file"),
        ({"train_list": str(lists[0]), "test_list": str(lists[1]), "list_format": "csv"}, ConfigError,
         "list_format: must be auto or one of coda-yaml, lines"),
        ({"train_list": str(lists[0]), "test_list": str(lists[1]), "split_sha256": "0" * 16}, ConfigError,
         f"hash to {lists_sha256(*lists)}, not the pinned 0000000000000000"),
    ]
    for params, error, message in cases:
        with pytest.raises(error, match=message):
            build_stream("split-imagenet-r", 0, image_spec=PLAIN, data_dir=root, **params)
    unknown = write_cprompt(tmp_path / "unknown", entries(TRAIN_N) + [(WNIDS[0], "toy_9.png")], entries(TEST_N))
    with pytest.raises(DatasetMissingError, match=r"coda_train.txt, entry 37: 'n02000001/toy_9.png' names no image"):
        stream_with(unknown, imagenet_r_root)
    overlap = write_cprompt(tmp_path / "overlap", entries(TRAIN_N + TEST_N), entries(TEST_N))
    with pytest.raises(DatasetMissingError, match="is in both .*coda_train.txt and .*coda_test.txt"):
        stream_with(overlap, imagenet_r_root)
    not_coda = tmp_path / "bad.yaml"
    not_coda.write_text("- a\n- b\n")
    with pytest.raises(DatasetMissingError, match="is not a CODA-Prompt split file"):
        stream_with((not_coda, lists[1]), imagenet_r_root)
    assert PER_PAIR == 5  # the fixture's numbers 0..4, of which TEST_N + TRAIN_N list four
