"""Features of image sets read from files are keyed by what decides their pixels (the files' contents and the
transform), so that they are shared and stored as tensors in memory are: the key follows every change that matters
and no other, random or unknown sets are never keyed, and frozen-feature strategies on a file-backed stream write the
same results with sharing on, from the store alone and off.

The stream is VTAB's prepared class folders (50 classes, the real loader: benchmark/datasets/class_folders.py), as
small JPEG files this module writes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from benchmark.datasets.fingerprints import image_set_fingerprint
from benchmark.datasets.images import ImageSpec
from benchmark.config import parse_suite
from benchmark.runtime import Runtime
from benchmark.sharing import MEMO, STORE, use_store
from benchmark.streams import build_stream
from benchmark.suite import run_suite
from strategies._loop import precompute
from test_sharing import numbers

SPEC = ImageSpec((3, 12, 12), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def write_vtab(root: Path, train: int = 2, test: int = 1) -> Path:
    """`root/vtab/{train,test}/<class>/<n>.jpg`: 50 classes of small JPEGs, each image's colours its own."""
    for split, count in (("train", train), ("test", test)):
        for label in range(50):
            folder = root / "vtab" / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(count):
                image = Image.new("RGB", (16, 16), (5 * label, 100 * n + (split == "test"), 90))
                image.putpixel((n, label % 16), (255, 255, 255))
                image.save(folder / f"{n}.jpg", quality=90)
    return root


def vtab(root: Path, spec: ImageSpec = SPEC, augment: str = "none", seed: int = 1993):
    return build_stream("split-vtab", seed, image_spec=spec, data_dir=str(root), augment=augment, n_tasks=2,
                        shuffle=True)


def train_key(root: Path, **options) -> str | None:
    return image_set_fingerprint(vtab(root, **options).tasks[0].train)


def test_the_key_follows_file_contents_and_transform(tmp_path):
    root = write_vtab(tmp_path)
    key = train_key(root)
    assert key is not None and train_key(root) == key  # a stream built again: the same key
    stream = vtab(root)
    in_task = root / "vtab" / "train" / stream.class_names[stream.tasks[0].classes[0]]
    os.utime(in_task / "0.jpg", ns=(10**18, 10**18))  # touched, same bytes: the same pixels, the same key
    assert train_key(root) == key
    other_spec = ImageSpec((3, 12, 12), (0.5, 0.5, 0.5000001), (0.25, 0.25, 0.25))  # beyond the repr's decimals
    assert train_key(root, spec=other_spec) not in (None, key)
    shutil.copyfile(in_task / "1.jpg", in_task / "0.jpg")  # replaced by another image
    replaced = train_key(root)
    assert replaced not in (None, key)
    Image.new("RGB", (16, 16), (1, 2, 3)).save(in_task / "2.jpg")  # added
    added = train_key(root)
    assert added not in (None, key, replaced)
    (in_task / "2.jpg").unlink()  # removed again: the set of files before
    assert image_set_fingerprint(stream.tasks[0].train) == replaced and train_key(root) == replaced
    (in_task / "1.jpg").unlink()  # a file the built data set lists is gone: no key (decoding reports it)
    assert image_set_fingerprint(stream.tasks[0].train) is None
    assert train_key(root) not in (None, key, replaced, added)


def test_random_and_foreign_sets_have_no_key_and_plain_training_images_share_one(tmp_path, stream):
    root = write_vtab(tmp_path)
    augmented = vtab(root, augment="rrc_flip").tasks[0]
    assert image_set_fingerprint(augmented.train) is None  # RandomResizedCrop + flip: other pixels every pass
    assert image_set_fingerprint(augmented.train_plain) == train_key(root)  # the same files under the eval pipeline
    assert image_set_fingerprint(stream.tasks[0].train) is None  # tensors in memory: keyed by their bytes instead
    assert image_set_fingerprint(torch.utils.data.TensorDataset(torch.zeros(2, 3))) is None
    seeded = vtab(root, seed=0)  # another class order: other images in task 0, and the joint test set reordered
    assert image_set_fingerprint(seeded.tasks[0].train) != train_key(root)


def test_a_file_backed_set_is_computed_once_then_served_from_memo_and_store(tmp_path, backbone):
    root = write_vtab(tmp_path)
    train = vtab(root, spec=backbone.image_spec).tasks[0].train
    model = backbone.model.eval()
    features = lambda x: model.forward_head(model.forward_features(x), pre_logits=True)  # noqa: E731
    shared = Runtime.resolve("cpu", "fp32", progress=False, share=True)
    unshared = Runtime.resolve("cpu", "fp32", progress=False, share=False)
    MEMO.clear()
    STORE[0] = None
    first = precompute(features, train, shared, key="frozen")
    again = precompute(features, vtab(root, spec=backbone.image_spec).tasks[0].train, shared, key="frozen")
    assert again.tensors[0] is first.tensors[0] and (MEMO.hits, MEMO.misses) == (1, 1)  # no file decoded again
    direct = precompute(features, train, unshared, key="frozen")
    assert torch.equal(first.tensors[0], direct.tensors[0]) and torch.equal(first.tensors[1], direct.tensors[1])
    use_store(str(tmp_path / "store"), 2**30)
    MEMO.clear()
    precompute(features, train, shared, key="frozen")
    MEMO.clear()  # another process: its own memo, the same store
    stored = precompute(features, train, shared, key="frozen")
    assert torch.equal(stored.tensors[0], direct.tensors[0]) and (STORE[0].hits, STORE[0].misses) == (1, 1)
    use_store(None, 0)


def run_grid(settings: dict, out: Path) -> None:
    """The suite's runs as `run_suite.py` executes them (its runtime from the config), without the report."""
    config = parse_suite(settings, "files")
    runtime = Runtime.resolve(config.device, config.precision, progress=False, share=config.share)
    assert not run_suite(config, out, runtime, notify=lambda line: None).failed


def test_frozen_feature_strategies_on_file_folders_write_the_same_results_shared_stored_and_unshared(
        tmp_path, tiny_backbone_params):
    """Shared in memory (the store filled on the way), from the store alone (a fresh memo, as the next invocation),
    and nothing shared: the same results; the store serves the file-backed sets' features in the second suite."""
    root = write_vtab(tmp_path / "data")
    store = tmp_path / "store"
    stream = {"split-vtab": {"data_dir": str(root), "n_tasks": 2, "shuffle": True, "augment": "rrc_flip"}}
    outs, counts = {}, {}
    for mode, settings in [("memory", {"cache": str(store)}), ("store", {"cache": str(store)}),
                           ("off", {"share": False})]:
        MEMO.clear()
        STORE[0] = None
        run_grid({"backbones": {"vit-mini": tiny_backbone_params}, "streams": stream,
                  "strategies": {"simplecil": {}, "linear": {"epochs": 1},
                                 "ranpac": {"epochs": 0, "projection_dim": 64}},
                  "retention": {"eval_size": 20}, "device": "cpu", "precision": "fp32", **settings},
                 tmp_path / f"out-{mode}")
        counts[mode] = (MEMO.hits, MEMO.misses, *((STORE[0].hits, STORE[0].misses) if STORE[0] else ()))
        outs[mode] = numbers(tmp_path / f"out-{mode}")
    assert len(outs["off"]) == 3 and outs["memory"] == outs["off"] and outs["store"] == outs["off"]
    memory_hits, _, stored_hits, stored_misses = counts["memory"]
    assert memory_hits > 0 and stored_hits == 0 and stored_misses > 0
    _, _, hits, misses = counts["store"]
    assert hits == stored_misses and misses == 0  # every set the first suite computed, read back from disk
    assert counts["off"] == (0, 0)
