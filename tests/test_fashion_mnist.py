import torch
import pytest

from benchmark.datasets.fashion_mnist import ensure_fashion_mnist, load_fashion_mnist, seeded_subset
from benchmark.errors import DatasetMissingError
from conftest import N_TEST, N_TRAIN


def test_debian_layout_is_unpacked_and_read(fashion_dir, tmp_path):
    images, labels = load_fashion_mnist(True, tmp_path, fashion_dir, download=False)
    assert images.shape == (N_TRAIN, 1, 28, 28) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert labels[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert (tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()
    test_images, _ = load_fashion_mnist(False, tmp_path, fashion_dir, download=False)
    assert test_images.shape[0] == N_TEST


def test_data_folder_is_used_without_the_debian_package(fashion_dir, tmp_path):
    ensure_fashion_mnist(tmp_path, fashion_dir, download=False)
    images, _ = load_fashion_mnist(False, tmp_path, tmp_path / "no-debian-here", download=False)
    assert images.shape[0] == N_TEST


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetMissingError, match="apt-get install dataset-fashion-mnist") as error:
        load_fashion_mnist(False, tmp_path / "data", tmp_path / "nothing", download=False)
    assert "\n" not in str(error.value)


def test_seeded_subset_is_fixed_by_seed():
    labels = torch.arange(1000)
    assert torch.equal(seeded_subset(labels, 50, 0), seeded_subset(labels, 50, 0))
    assert not torch.equal(seeded_subset(labels, 50, 0), seeded_subset(labels, 50, 1))
    assert len(seeded_subset(labels, 5000, 0)) == 1000
