"""The persistent feature store: a hit is the stored tensor bit for bit, damage of any kind is recomputed (never
served, never followed), the folder stays under its size limit, a broken folder only costs the cache, and two
processes asking for the same features compute them once."""

import multiprocessing
import os
import time
from pathlib import Path

import pytest
import torch

from benchmark.config import CacheConfig, parse_cache
from benchmark.errors import ConfigError
from benchmark.feature_store import FeatureStore
from benchmark.sharing import tensor_bytes

KEY = ("network fingerprint", "image digest", ("cpu", "None", 64))
GB = 2**30


def counted(value: torch.Tensor):
    calls = []

    def compute():
        calls.append(1)
        return value.clone()
    return compute, calls


def entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".pt" and not p.name.startswith("."))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_another_store_on_the_same_folder_serves_the_same_bytes_without_computing(tmp_path, dtype):
    value = torch.randn(50, 7).to(dtype)
    compute, calls = counted(value)
    first = FeatureStore(tmp_path, GB).get_or_compute(KEY, compute)
    later = FeatureStore(tmp_path, GB)  # as in another process or invocation: nothing in memory
    second = later.get_or_compute(KEY, compute)
    assert len(calls) == 1 and (later.hits, later.misses, later.damaged) == (1, 0, 0)
    assert second.dtype == dtype and tensor_bytes(second) == tensor_bytes(first) == tensor_bytes(value)
    other = later.get_or_compute(("another network", *KEY[1:]), compute)  # any part of the key differs: computed
    assert len(calls) == 2 and torch.equal(other, value) and len(entries(tmp_path)) == 2


def damage_truncate(path: Path, _: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def damage_one_byte(path: Path, _: Path) -> None:
    data = bytearray(path.read_bytes())
    data[data.index(torch.tensor([1234.0]).numpy().tobytes())] ^= 0x01  # one bit of one stored number
    path.write_bytes(bytes(data))


def damage_other_entry(path: Path, other: Path) -> None:
    path.write_bytes(other.read_bytes())  # a valid file of another key under this key's name


def damage_garbage(path: Path, _: Path) -> None:
    path.write_bytes(b"not a torch file")


def damage_link_to_device(path: Path, _: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")  # followed, the read would never end


def damage_fifo(path: Path, _: Path) -> None:
    path.unlink()
    os.mkfifo(path)  # opened for reading, it would block forever


@pytest.mark.parametrize("damage", [damage_truncate, damage_one_byte, damage_other_entry, damage_garbage,
                                    damage_link_to_device, damage_fifo])
def test_a_damaged_entry_is_recomputed_and_rewritten_never_served(tmp_path, damage):
    value, other_value = torch.arange(4000.0).reshape(100, 40), torch.zeros(3)
    compute, calls = counted(value)
    store = FeatureStore(tmp_path, GB)
    store.get_or_compute(KEY, compute)
    store.get_or_compute(("other", *KEY[1:]), lambda: other_value)
    path, other = sorted(entries(tmp_path), key=lambda p: -p.stat().st_size)  # KEY's entry holds 4,000 numbers
    damage(path, other)
    fresh = FeatureStore(tmp_path, GB)
    assert torch.equal(fresh.get_or_compute(KEY, compute), value)
    assert len(calls) == 2 and fresh.damaged == 1 and fresh.hits == 0
    assert path.is_file() and not path.is_symlink()  # rewritten in place of the damaged entry
    again = FeatureStore(tmp_path, GB)
    assert torch.equal(again.get_or_compute(KEY, compute), value) and again.hits == 1 and len(calls) == 2


def test_least_recently_used_entries_go_beyond_the_limit(tmp_path):
    value = torch.zeros(256, 256)  # 256 KiB of features (+ a small header) per entry
    store = FeatureStore(tmp_path, int(2.5 * value.nbytes))
    keys = [(f"network {i}", "images", ()) for i in range(3)]
    for key in keys[:2]:
        store.get_or_compute(key, value.clone)
    for age, path in enumerate(sorted(entries(tmp_path), key=lambda p: p.stat().st_mtime_ns)):
        os.utime(path, ns=(10**18 + age * 10**9,) * 2)  # an unambiguous order: key 0 older than key 1
    store.get_or_compute(keys[0], value.clone)  # a hit refreshes key 0: key 1 is now the least recently used
    assert store.hits == 1
    store.get_or_compute(keys[2], value.clone)
    assert len(entries(tmp_path)) == 2
    check = FeatureStore(tmp_path, GB)
    for key in keys:
        check.get_or_compute(key, value.clone)
    assert (check.hits, check.misses) == (2, 1)  # key 1 was the one evicted


def test_an_unusable_folder_costs_only_the_cache(tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("where the folder should be")
    compute, calls = counted(torch.ones(3))
    store = FeatureStore(blocker / "features", GB)
    for _ in range(2):
        assert torch.equal(store.get_or_compute(KEY, compute), torch.ones(3))
    assert len(calls) == 2 and blocker.read_text() == "where the folder should be"


def slow_compute_in_another_process(folder: str, log: str, started: str) -> None:
    def compute():
        Path(started).touch()
        time.sleep(2)
        with open(log, "a") as file:
            file.write("computed by the child\n")
        return torch.full((10,), 7.0)
    FeatureStore(Path(folder), GB).get_or_compute(KEY, compute)


def test_two_processes_asking_at_once_compute_the_features_once(tmp_path):
    log, started = tmp_path / "log", tmp_path / "started"
    child = multiprocessing.get_context("spawn").Process(
        target=slow_compute_in_another_process, args=(str(tmp_path / "store"), str(log), str(started)))
    child.start()
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline and child.is_alive():
        time.sleep(0.05)
    assert started.exists(), "the child never started computing"
    store = FeatureStore(tmp_path / "store", GB)  # asks while the child computes: waits for it, then reads

    def compute():
        with open(log, "a") as file:
            file.write("computed by the parent\n")
        return torch.zeros(10)
    assert torch.equal(store.get_or_compute(KEY, compute), torch.full((10,), 7.0))
    child.join(60)
    assert child.exitcode == 0 and log.read_text() == "computed by the child\n" and store.hits == 1


def test_cache_setting_forms_and_bad_values(tmp_path):
    assert parse_cache(None) == CacheConfig() and parse_cache(True).enabled and not parse_cache(False).enabled
    assert parse_cache(None).folder_for(tmp_path) == tmp_path / "cache" / "features"
    assert parse_cache(False).folder_for(tmp_path) is None
    assert parse_cache(str(tmp_path / "shared")).folder_for(Path("elsewhere")) == tmp_path / "shared"
    assert parse_cache({"limit_gb": 0.5}).limit_bytes == GB // 2
    for bad, message in [("  ", "cache: must be true, false, a folder"), ({"limit_gb": 0}, "cache.limit_gb"),
                         ({"size": 3}, "cache: unknown key 'size'"), (3, "cache: must be a mapping")]:
        with pytest.raises(ConfigError, match=message):
            parse_cache(bad)
