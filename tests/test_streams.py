import numpy as np
import torch

from benchmark.datasets.images import ImageSpec
from benchmark.evaluation import as_tensors
from benchmark.streams.mini import stratified_parts
from benchmark.streams import build_stream
from benchmark.streams.base import CLASS_INCREMENTAL, DOMAIN_INCREMENTAL, seeded_class_order

SPEC = ImageSpec((1, 28, 28), (0.5,), (0.5,))


def test_class_order_follows_the_fields_numpy_convention():
    np.random.seed(1993)
    assert seeded_class_order(10, 1993) == np.random.permutation(10).tolist()


def test_split_digits_tasks_know_classes_labels_and_test_sets():
    stream = build_stream("mini-split-digits", 1993, image_spec=SPEC)
    assert stream.scenario == CLASS_INCREMENTAL and len(stream.tasks) == 5
    assert sorted(stream.class_order) == list(range(10))
    assert [t.labels for t in stream.tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert [t.num_outputs for t in stream.tasks] == [2, 4, 6, 8, 10]
    for task in stream.tasks:
        assert task.classes == tuple(stream.class_order[u] for u in task.labels)
        images, labels = as_tensors(task.test)
        assert images.shape[1:] == (1, 28, 28)
        assert set(labels.tolist()) == set(task.labels)
    sizes = sum(len(t.train) for t in stream.tasks), sum(len(t.test) for t in stream.tasks)
    assert sizes == (1437, 360)  # all 1,797 digits, 20% stratified test


def test_seed_moves_the_class_order_but_not_the_test_images():
    first = build_stream("mini-split-digits", 1993, image_spec=SPEC)
    again = build_stream("mini-split-digits", 1993, image_spec=SPEC)
    other = build_stream("mini-split-digits", 1996, image_spec=SPEC)
    assert first.class_order == again.class_order != other.class_order
    pooled = lambda s: sorted(as_tensors(t.test)[0].sum().item() for t in s.tasks)  # noqa: E731
    assert np.isclose(sum(pooled(first)), sum(pooled(other)))


def test_one_task_stream_holds_every_class():
    stream = build_stream("mini-split-digits", 0, image_spec=SPEC, n_tasks=1)
    assert len(stream.tasks) == 1 and stream.tasks[0].num_outputs == 10


def test_domain_digits_same_classes_new_inputs():
    stream = build_stream("mini-domain-digits", 1993, image_spec=SPEC, domains=["clean", "inverted", "rotated"])
    assert stream.scenario == DOMAIN_INCREMENTAL
    assert [t.name for t in stream.tasks] == ["clean", "inverted", "rotated"]
    clean, inverted, rotated = (as_tensors(t.test) for t in stream.tasks)
    assert all(t.num_outputs == 10 and t.labels == tuple(range(10)) for t in stream.tasks)
    assert torch.equal(clean[1], inverted[1])
    # inversion in [0, 1] before normalisation with mean = std = 0.5: x -> -x
    assert torch.allclose(inverted[0], -clean[0], atol=1e-5)
    assert torch.allclose(rotated[0], torch.rot90(clean[0], 1, dims=(-2, -1)), atol=1e-5)


def test_domains_train_on_disjoint_stratified_shares_by_default():
    labels = torch.arange(103) % 10
    parts = stratified_parts(labels, 4, seed=0)
    joined = torch.cat(parts)
    assert len(joined) == 103 and set(joined.tolist()) == set(range(103))  # disjoint, covering
    assert all(torch.bincount(labels[p], minlength=10).max() - torch.bincount(labels[p], minlength=10).min() <= 1
               for p in parts)
    assert all(torch.equal(a, b) for a, b in zip(parts, stratified_parts(labels, 4, seed=0)))  # seeded
    disjoint = build_stream("mini-domain-digits", 1993, image_spec=SPEC)
    shared = build_stream("mini-domain-digits", 1993, image_spec=SPEC, disjoint_train=False)
    sizes = [len(t.train) for t in disjoint.tasks]
    assert sum(sizes) == len(shared.tasks[0].train) == 1437 and max(sizes) - min(sizes) <= 1
    assert len(disjoint.tasks[0].test) == len(shared.tasks[0].test) == 360  # every domain: the whole test split


def test_three_channel_backbones_get_three_channels():
    spec = ImageSpec((3, 32, 32), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    images, _ = as_tensors(build_stream("mini-split-digits", 0, image_spec=spec).tasks[0].test)
    assert images.shape[1:] == (3, 32, 32)
