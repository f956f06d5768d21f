"""The real benchmark streams on tiny data written in the real on-disk formats: CIFAR-100's python pickles,
ImageNet-R's `imagenet-r/<wnid>/<rendition>_<n>` folders, DomainNet's `<domain>/<class>/<image>` folders and lists.

Images are uniform colours that encode what they are (class, rendition), so an item read back through the stream
shows whether it was routed, relabelled and transformed correctly."""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torchvision.datasets import CIFAR100

import run_suite
from benchmark.datasets.files import LabelledFiles
from benchmark.datasets.imagenet_r import RENDITIONS, load_imagenet_r
from benchmark.datasets.images import ImageSpec
from benchmark.errors import ConfigError, DatasetMissingError, UserInputError
from benchmark.evaluation import as_tensors
from benchmark.results import iter_results
from benchmark.streams import build_stream, stream_params
from benchmark.streams.base import (CLASS_INCREMENTAL, DOMAIN_INCREMENTAL, LabelledTensors, class_incremental,
                                    seeded_class_order)
from benchmark.streams.imagenet_r import DomainImagenetRParams

PLAIN = ImageSpec((3, 24, 24), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # pixels back as value / 255, at 24 px
NORMALISED = ImageSpec((3, 32, 32), (0.5, 0.4, 0.3), (0.2, 0.25, 0.5))


def pixel(images: torch.Tensor, channel: int = 0) -> torch.Tensor:
    """The 0-255 value of one channel of uniform images in PLAIN's format."""
    return (images[:, channel, 0, 0] * 255).round().long()


# ---------------------------------------------------------------- the generic builders on Datasets


def test_class_incremental_on_a_dataset_equals_the_tensor_pair():
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.randn(40, 1, 4, 4, generator=generator), torch.arange(40) % 4
    names = ("a", "b", "c", "d")
    pair = class_incremental("s", (images, labels), (images, labels), 2, 7, names)
    data = class_incremental("s", LabelledTensors(images, labels), LabelledTensors(images, labels), 2, 7, names)
    assert [(t.classes, t.labels, t.name) for t in pair.tasks] == [(t.classes, t.labels, t.name) for t in data.tasks]
    for a, b in zip(pair.tasks, data.tasks):
        assert all(torch.equal(x, y) for x, y in zip(as_tensors(a.train), as_tensors(b.train)))
        assert not a.train_augmented and class_incremental("s", (images, labels), (images, labels), 2, 7, names,
                                                           augmented=True).tasks[0].train_augmented


def test_a_class_missing_from_a_split_is_named():
    images, labels = torch.zeros(8, 1, 2, 2), torch.arange(8) % 4
    with pytest.raises(UserInputError, match="s: the test split has no images of class.es. d; every class"):
        class_incremental("s", (images, labels), (images[:3], labels[:3]), 2, 0, ("a", "b", "c", "d"))


def test_a_dataset_without_targets_is_refused():
    with pytest.raises(TypeError, match="targets"):
        class_incremental("s", torch.utils.data.TensorDataset(torch.zeros(4, 1)), (torch.zeros(4, 1),
                          torch.arange(4)), 2, 0, ("a", "b", "c", "d"))


# ---------------------------------------------------------------- CIFAR-100


class Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` opcodes, as in the real CIFAR files (pickled by Python 2): read with
    `encoding="latin1"`, as torchvision does, they come back as str keys and names, and numpy arrays load."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_python2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str


def write_python2_pickle(path: Path, obj: object) -> str:
    """Pickle `obj` as the CIFAR files are (protocol 2, Python 2 strings); returns the file's md5."""
    with open(path, "wb") as handle:
        Python2Pickler(handle, protocol=2).dump(obj)
    return hashlib.md5(path.read_bytes()).hexdigest()


def cifar_batch(labels: list[int], split: bytes) -> dict:
    """A CIFAR-100 batch: uniform images, red = 2 x fine label, green 50, blue 200; rows are R, G, B planes."""
    data = np.zeros((len(labels), 3, 1024), dtype=np.uint8)
    data[:, 0] = np.array(labels)[:, None] * 2
    data[:, 1], data[:, 2] = 50, 200
    return {b"batch_label": split, b"fine_labels": labels, b"coarse_labels": [c // 5 for c in labels],
            b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))], b"data": data.reshape(-1, 3072)}


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """`<root>/cifar-100-python/{train,test,meta}`: 2 train and 1 test image per class; and the files' md5s."""
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "cifar-100-python"
    folder.mkdir()
    md5 = {"train": write_python2_pickle(folder / "train", cifar_batch(list(range(100)) * 2, b"training batch")),
           "test": write_python2_pickle(folder / "test", cifar_batch(list(range(100)), b"testing batch")),
           "meta": write_python2_pickle(folder / "meta", {
               b"fine_label_names": [f"fine{c:02d}".encode() for c in range(100)],
               b"coarse_label_names": [f"coarse{c:02d}".encode() for c in range(20)]})}
    return root, md5


@pytest.fixture
def cifar_root(cifar_dir: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> Path:
    """torchvision verifies the md5 of `train`, `test` and `meta` on every load (not only after a download), so
    the tiny files pass only with their own checksums in the class's file lists; the loading code is torchvision's."""
    root, md5 = cifar_dir
    monkeypatch.setattr(CIFAR100, "train_list", [["train", md5["train"]]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", md5["test"]]])
    monkeypatch.setattr(CIFAR100, "meta", {**CIFAR100.meta, "md5": md5["meta"]})
    return root


def test_split_cifar100_tasks_follow_the_seeded_class_order(cifar_root: Path):
    stream = build_stream("split-cifar100", 1993, image_spec=PLAIN, data_dir=str(cifar_root), augment="none")
    assert stream.scenario == CLASS_INCREMENTAL and len(stream.tasks) == 10
    assert list(stream.class_order) == seeded_class_order(100, 1993)
    assert stream.class_names[7] == "fine07" and stream.tasks[0].name.startswith("task0:fine")
    seen: set[int] = set()
    for index, task in enumerate(stream.tasks):
        assert task.labels == tuple(range(10 * index, 10 * index + 10)) and task.num_outputs == 10 * (index + 1)
        assert not seen & set(task.classes)
        seen |= set(task.classes)
        images, units = as_tensors(task.test)
        assert images.shape[1:] == (3, 24, 24) and len(units) == 10 and len(task.train) == 20
        # each item's output unit maps back, through the class order, to the class its pixels encode
        assert pixel(images).tolist() == [2 * stream.class_order[u] for u in units.tolist()]
    assert seen == set(range(100))


def test_split_cifar100_seed_moves_the_class_order(cifar_root: Path):
    def order(seed: int) -> tuple[int, ...]:
        return build_stream("split-cifar100", seed, image_spec=PLAIN, data_dir=str(cifar_root), n_tasks=5).class_order

    assert order(1993) == order(1993) != order(0)


def test_split_cifar100_images_take_the_backbones_transforms(cifar_root: Path):
    stream = build_stream("split-cifar100", 0, image_spec=NORMALISED, data_dir=str(cifar_root), n_tasks=2)
    task = stream.tasks[0]
    assert task.train_augmented  # rrc_flip by default
    image, _ = task.train[0]
    assert image.shape == (3, 32, 32)
    assert pickle.loads(pickle.dumps(task.train))[0][0].shape == (3, 32, 32)  # loader workers may pickle it
    images, units = as_tensors(task.test)
    expected = (torch.tensor([2.0 * stream.class_order[int(units[0])], 50, 200]) / 255 - torch.tensor(
        NORMALISED.mean)) / torch.tensor(NORMALISED.std)
    assert torch.allclose(images[0, :, 5, 5], expected, atol=1e-5)
    plain = build_stream("split-cifar100", 0, image_spec=NORMALISED, data_dir=str(cifar_root), n_tasks=2,
                         augment="none")
    assert not plain.tasks[0].train_augmented
    assert plain.tasks[0].train_plain is None and plain.tasks[0].train_unaugmented is plain.tasks[0].train
    # Augmented tasks also carry their training images under the test transform, in the same order (SLCA's
    # statistics): exactly what the unaugmented stream trains on.
    for augmented_task, plain_task in zip(stream.tasks, plain.tasks):
        assert torch.equal(as_tensors(augmented_task.train_unaugmented)[0], as_tensors(plain_task.train)[0])
        assert torch.equal(as_tensors(augmented_task.train_plain)[1], as_tensors(augmented_task.train)[1])


def test_cifar100_missing_or_corrupt_folder_is_one_line(cifar_dir: tuple[Path, dict[str, str]], tmp_path: Path):
    with pytest.raises(DatasetMissingError, match="no folder .*cifar-100-python.*cifar-100-python.tar.gz") as error:
        build_stream("split-cifar100", 0, image_spec=PLAIN, data_dir=str(tmp_path))
    assert "\n" not in str(error.value)
    # the tiny files against torchvision's real checksums: what a truncated or altered copy looks like
    with pytest.raises(DatasetMissingError, match="md5 check; delete the folder"):
        build_stream("split-cifar100", 0, image_spec=PLAIN, data_dir=str(cifar_dir[0]))


def test_split_cifar100_params_are_validated():
    with pytest.raises(ConfigError, match="n_tasks: must be a divisor of the 100 classes"):
        stream_params("split-cifar100", {"n_tasks": 7})
    with pytest.raises(ConfigError, match="augment: must be one of none, rrc_flip"):
        stream_params("split-cifar100", {"augment": "autoaugment"})
    assert stream_params("split-cifar100", {}).download is False


# ---------------------------------------------------------------- ImageNet-R

WNIDS = ("n02000001", "n01000002", "n03000003", "n01500004")  # sorted: n01000002, n01500004, n02000001, n03000003
TINY_RENDITIONS = ("art", "cartoon", "sketch")
PER_PAIR = 5  # images per (class, rendition)


def write_image(path: Path, colour: tuple[int, int, int], size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)


@pytest.fixture(scope="module")
def imagenet_r_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`<root>/imagenet-r/<wnid>/<rendition>_<n>.png`, colour (40 x rendition, 40 x wnid position, 10 x n), and the
    README.txt the real archive has; 4 classes x 3 renditions x 5 images."""
    root = tmp_path_factory.mktemp("imagenet-r-data")
    (root / "imagenet-r").mkdir()
    (root / "imagenet-r" / "README.txt").write_text("ImageNet-R\n")
    for w, wnid in enumerate(WNIDS):
        for r, rendition in enumerate(TINY_RENDITIONS):
            for n in range(PER_PAIR):
                write_image(root / "imagenet-r" / wnid / f"{rendition}_{n}.png", (40 * r, 40 * w, 10 * n))
    return root


def test_imagenet_r_classes_are_sorted_wnids_and_renditions_come_from_file_names(imagenet_r_root: Path):
    data = load_imagenet_r(imagenet_r_root)
    assert data.wnids == tuple(sorted(WNIDS))
    assert len(data.files.paths) == 60 and set(data.renditions) == set(TINY_RENDITIONS)
    for path, label, rendition in zip(data.files.paths, data.files.labels, data.renditions):
        assert data.wnids[label] == path.parent.name and path.name.startswith(rendition + "_")


def test_the_split_is_seeded_disjoint_and_independent_of_listing_order(imagenet_r_root: Path):
    files = load_imagenet_r(imagenet_r_root).files
    train, test = files.split(0.2, seed=0)
    assert (len(train.paths), len(test.paths)) == (48, 12)
    assert not set(train.paths) & set(test.paths) and set(train.paths) | set(test.paths) == set(files.paths)
    assert files.split(0.2, seed=0) == (train, test)
    assert set(files.split(0.2, seed=1)[1].paths) != set(test.paths)
    reversed_files = LabelledFiles(files.paths[::-1], files.labels[::-1])
    assert set(reversed_files.split(0.2, seed=0)[1].paths) == set(test.paths)
    assert all(files.labels[files.paths.index(p)] == label for p, label in zip(test.paths, test.labels))


def test_split_imagenet_r_tasks(imagenet_r_root: Path):
    stream = build_stream("split-imagenet-r", 3, image_spec=PLAIN, data_dir=str(imagenet_r_root), n_tasks=2)
    assert stream.scenario == CLASS_INCREMENTAL and stream.class_names == tuple(sorted(WNIDS))
    assert list(stream.class_order) == seeded_class_order(4, 3)
    assert [t.labels for t in stream.tasks] == [(0, 1), (2, 3)] and all(t.train_augmented for t in stream.tasks)
    assert set(stream.tasks[0].classes).isdisjoint(stream.tasks[1].classes)
    assert sum(len(t.train) for t in stream.tasks) == 48 and sum(len(t.test) for t in stream.tasks) == 12
    images, units = as_tensors(stream.tasks[1].test)
    assert images.shape[1:] == (3, 24, 24)
    sorted_position = [sorted(WNIDS).index(WNIDS[g // 40]) for g in pixel(images, 1).tolist()]
    assert sorted_position == [stream.class_order[u] for u in units.tolist()]
    with pytest.raises(ConfigError, match="streams.split-imagenet-r.n_tasks: must be a divisor of the 4 classes"):
        build_stream("split-imagenet-r", 3, image_spec=PLAIN, data_dir=str(imagenet_r_root), n_tasks=3)


def test_domain_imagenet_r_groups_renditions_into_tasks(imagenet_r_root: Path):
    stream = build_stream("domain-imagenet-r", 0, image_spec=PLAIN, data_dir=str(imagenet_r_root),
                          domains=["sketch", ["art", "cartoon"]], augment="none")
    assert stream.scenario == DOMAIN_INCREMENTAL and [t.name for t in stream.tasks] == ["sketch", "art+cartoon"]
    assert all(t.labels == (0, 1, 2, 3) and t.num_outputs == 4 and not t.train_augmented for t in stream.tasks)
    # each rendition split 80/20 on its own: 20 images -> 16 / 4
    assert [(len(t.train), len(t.test)) for t in stream.tasks] == [(16, 4), (32, 8)]
    for task, renditions in zip(stream.tasks, [{"sketch"}, {"art", "cartoon"}]):
        for split in (task.train, task.test):
            images, labels = as_tensors(split)
            assert {TINY_RENDITIONS[v // 40] for v in pixel(images, 0).tolist()} == renditions
            assert [sorted(WNIDS).index(WNIDS[g // 40]) for g in pixel(images, 1).tolist()] == labels.tolist()


def test_domain_imagenet_r_domains_are_validated(imagenet_r_root: Path):
    assert DomainImagenetRParams().domains == tuple((name,) for name in RENDITIONS)
    assert stream_params("domain-imagenet-r", {"domains": ["toy", ["art", "sketch"]]}).domains == (
        ("toy",), ("art", "sketch"))
    for bad in (["art", ["art", "toy"]], ["photo"], [], [[]], [3]):
        with pytest.raises(ConfigError, match="streams.domain-imagenet-r.domains: must be"):
            stream_params("domain-imagenet-r", {"domains": bad})
    with pytest.raises(DatasetMissingError, match="no ImageNet-R images of rendition.*deviantart"):
        build_stream("domain-imagenet-r", 0, image_spec=PLAIN, data_dir=str(imagenet_r_root))  # 15 by default


def test_imagenet_r_missing_folder_says_how_to_get_it(tmp_path: Path):
    with pytest.raises(DatasetMissingError, match=r"no folder .*imagenet-r; download https://people.eecs.berkeley"
                                                  r".edu/~hendrycks/imagenet-r.tar and extract it in"):
        build_stream("split-imagenet-r", 0, image_spec=PLAIN, data_dir=str(tmp_path))


@pytest.mark.parametrize("layout, message", [
    ({"art_0.png": 0}, "images directly in .*imagenet-r .e.g. art_0.png"),
    ({}, "no class folders in"),
    ({"n01/art0.png": 0}, "art0.png has no `<rendition>_` prefix"),
    ({"n01/art_0.png": 0, "n02/notes.txt": 0}, "class folder .*n02 holds no images"),
])
def test_imagenet_r_wrong_layout_is_named(tmp_path: Path, layout: dict, message: str):
    folder = tmp_path / "imagenet-r"
    folder.mkdir()
    for name in layout:
        if name.endswith(".png"):
            write_image(folder / name, (0, 0, 0))
        else:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text("not an image")
    with pytest.raises(DatasetMissingError, match=message) as error:
        build_stream("split-imagenet-r", 0, image_spec=PLAIN, data_dir=str(tmp_path), n_tasks=1)
    assert "\n" not in str(error.value)


def test_a_corrupt_image_is_named_when_read(tmp_path: Path):
    for w in range(2):
        for n in range(5):
            write_image(tmp_path / "imagenet-r" / f"n0{w}" / f"toy_{n}.png", (0, 0, 0))
    broken = tmp_path / "imagenet-r" / "n01" / "toy_3.png"
    broken.write_bytes(b"\x89PNG truncated")
    stream = build_stream("split-imagenet-r", 0, image_spec=PLAIN, data_dir=str(tmp_path), n_tasks=1, augment="none")
    with pytest.raises(DatasetMissingError, match=f"cannot decode image {broken}"):
        for split in (stream.tasks[0].train, stream.tasks[0].test):
            as_tensors(split)


# ---------------------------------------------------------------- DomainNet-style folders

DOMAIN_CLASSES = {"sketch": ("cat", "dog", "fish"), "clipart": ("cat", "dog")}  # clipart has no fish


@pytest.fixture
def domain_root(tmp_path: Path) -> Path:
    """`<root>/<domain>/<class>/<image>.jpg`, 5 JPEGs per class; red encodes the class (cat 0, dog 100, fish 200)."""
    for domain, classes in DOMAIN_CLASSES.items():
        for name in classes:
            for n in range(5):
                write_image(tmp_path / domain / name / f"{domain}_{n}.jpg", (100 * ("cat", "dog", "fish").index(name),
                                                                             0, 0))
    return tmp_path


def test_domain_folders_one_task_per_domain_with_the_union_of_classes(domain_root: Path):
    stream = build_stream("domain-folders", 0, image_spec=PLAIN, root=str(domain_root))
    assert stream.scenario == DOMAIN_INCREMENTAL and [t.name for t in stream.tasks] == ["clipart", "sketch"]
    assert stream.class_names == ("cat", "dog", "fish")
    assert all(t.num_outputs == 3 and t.train_augmented for t in stream.tasks)
    for task in stream.tasks:  # each domain's training images also under the test transform, in the same order
        assert torch.equal(as_tensors(task.train_plain)[1], as_tensors(task.train)[1])
        assert as_tensors(task.train_plain)[0].shape == as_tensors(task.train)[0].shape
    assert [(len(t.train), len(t.test)) for t in stream.tasks] == [(8, 2), (12, 3)]
    images, labels = as_tensors(stream.tasks[1].test)
    assert torch.allclose(images[:, 0, 0, 0], labels.float() * 100 / 255, atol=3 / 255)  # JPEG: nearly exact
    again = build_stream("domain-folders", 0, image_spec=PLAIN, root=str(domain_root), domains=["sketch", "clipart"])
    assert [t.name for t in again.tasks] == ["sketch", "clipart"]
    assert torch.equal(as_tensors(again.tasks[0].test)[0], images)  # the split does not depend on the order


def test_domain_folders_uses_shipped_lists_where_present(domain_root: Path):
    (domain_root / "clipart_train.txt").write_text("clipart/cat/clipart_0.jpg 0\nclipart/dog/clipart_1.jpg 1\n")
    (domain_root / "clipart_test.txt").write_text("clipart/dog/clipart_2.jpg 1\n")
    listed = build_stream("domain-folders", 0, image_spec=PLAIN, root=str(domain_root), augment="none")
    assert [(len(t.train), len(t.test)) for t in listed.tasks] == [(2, 1), (12, 3)]
    assert as_tensors(listed.tasks[0].test)[1].tolist() == [1]
    unlisted = build_stream("domain-folders", 0, image_spec=PLAIN, root=str(domain_root), listed_split=False)
    assert [(len(t.train), len(t.test)) for t in unlisted.tasks] == [(8, 2), (12, 3)]
    (domain_root / "clipart_test.txt").write_text("clipart/bird/clipart_2.jpg 1\n")
    with pytest.raises(DatasetMissingError, match="clipart_test.txt, line 1: expected `clipart/<class>/<file>`"):
        build_stream("domain-folders", 0, image_spec=PLAIN, root=str(domain_root))
    build_stream("domain-folders", 0, image_spec=PLAIN, root=str(domain_root), listed_split=False)  # lists unread


def test_domain_folders_errors(domain_root: Path, tmp_path_factory: pytest.TempPathFactory):
    with pytest.raises(ConfigError, match="streams.domain-folders.root: must be the folder laid out as"):
        stream_params("domain-folders", {})
    with pytest.raises(ConfigError, match="domains: must be folders of .*: clipart, sketch, got \\['real'\\]"):
        build_stream("domain-folders", 0, image_spec=PLAIN, root=str(domain_root), domains=["real"])
    with pytest.raises(DatasetMissingError, match="no folder .*nowhere; expected <root>/<domain>/<class>/<image>"):
        build_stream("domain-folders", 0, image_spec=PLAIN, root=str(domain_root / "nowhere"))
    write_image(domain_root / "clipart" / "loose.jpg", (0, 0, 0))
    with pytest.raises(DatasetMissingError, match="images directly in .*clipart .e.g. loose.jpg"):
        build_stream("domain-folders", 0, image_spec=PLAIN, root=str(domain_root))
    flat = tmp_path_factory.mktemp("flat")
    write_image(flat / "a.jpg", (0, 0, 0))
    with pytest.raises(DatasetMissingError, match="images directly in"):
        build_stream("domain-folders", 0, image_spec=PLAIN, root=str(flat))


# ---------------------------------------------------------------- end to end


def test_one_channel_backbones_get_grey_levels(imagenet_r_root: Path):
    spec = ImageSpec((1, 20, 20), (0.5,), (0.5,))
    stream = build_stream("split-imagenet-r", 0, image_spec=spec, data_dir=str(imagenet_r_root), n_tasks=1)
    assert stream.tasks[0].train[0][0].shape == (1, 20, 20) and as_tensors(stream.tasks[0].test)[0].shape[1:] == (
        1, 20, 20)
    assert pickle.loads(pickle.dumps(stream.tasks[0].train))[0][0].shape == (1, 20, 20)  # for loader workers


def test_a_suite_runs_on_image_files(write_suite, imagenet_r_root: Path, tmp_path: Path):
    """The tiny vit-mini (one channel, 28 px) through the whole suite on split-imagenet-r's files, augmented."""
    config = write_suite(strategies={"linear": {"epochs": 1}},
                         streams={"split-imagenet-r": {"data_dir": str(imagenet_r_root), "n_tasks": 2}})
    assert run_suite.main(["--config", str(config), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    (result,) = iter_results(tmp_path / "out")
    assert result["status"] == "ok" and result["scenario"] == CLASS_INCREMENTAL
    assert len(result["accuracy_matrix"]) == 2 and sum(result["test_sizes"]) == 12
    assert result["task_classes"] == [result["class_order"][:2], result["class_order"][2:]]


def test_a_suite_runs_on_cifar_files_with_a_timm_vit_from_a_local_file(cifar_root: Path, tmp_path: Path):
    """The real path end to end: CIFAR-100 pickles read by torchvision, a timm ViT loaded by name from a local
    weights file (random weights, loaded as real weights would be), ImageNet-layout retention data."""
    from test_real_backbones import IN21K, WNIDS, save_random_timm

    weights = tmp_path / "model.safetensors"
    save_random_timm(IN21K, weights)
    imagenet = tmp_path / "imagenet"
    for split in ("val", "train"):
        for label, wnid in enumerate(WNIDS):
            (imagenet / split / wnid).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (36, 36), (80 * label, 40 * i, 0)).save(imagenet / split / wnid / f"{i}.png")
    suite = {"backbones": {IN21K: {"pretrained_file": str(weights), "imagenet_dir": str(imagenet)}},
             "streams": {"split-cifar100": {"data_dir": str(cifar_root), "n_tasks": 2}},
             "strategies": {"lora": {"epochs": 1, "batch_size": 50}, "linear": {"epochs": 1, "batch_size": 50}},
             "retention": {"protocols": {"knn": {"k": 2, "bank_size": 6}}, "eval_size": 6}, "device": "cpu",
             "precision": "fp32"}
    config = tmp_path / "cifar.yaml"
    config.write_text(yaml.safe_dump(suite))
    assert run_suite.main(["--config", str(config), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    results = {r["strategy"]: r for r in iter_results(tmp_path / "out")}
    assert set(results) == {"lora", "linear"} and all(r["status"] == "ok" for r in results.values())
    for result in results.values():
        assert result["test_sizes"] == [50, 50] and len(result["metrics"]["retained_pretrain_acc"]) == 3
        assert result["backbone"] == IN21K and result["retention_eval"]["dataset"] == "imagenet-val"
