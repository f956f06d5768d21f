"""Retention protocols: DINO's weighted k-NN against a brute-force count, and a run scored by two protocols."""

import math

import pytest
import torch

from benchmark.results import iter_results
from benchmark.retention import knn_predict
from test_suite import suite


def brute_force_knn(bank, bank_labels, queries, k, temperature, num_classes):
    """Loop over queries: cosine similarity to every bank item, the k largest vote exp(sim / T) for their label."""
    predictions = []
    for query in queries.tolist():
        scored = []
        for item, label in zip(bank.tolist(), bank_labels.tolist()):
            dot = sum(a * b for a, b in zip(query, item))
            norm = math.sqrt(sum(a * a for a in query)) * math.sqrt(sum(b * b for b in item))
            scored.append((dot / norm, label))
        votes = [0.0] * num_classes
        for similarity, label in sorted(scored, reverse=True)[:k]:
            votes[label] += math.exp(similarity / temperature)
        predictions.append(max(range(num_classes), key=votes.__getitem__))
    return predictions


@pytest.mark.parametrize("k, temperature", [(1, 0.07), (5, 0.07), (20, 0.07), (7, 1.0)])
def test_knn_matches_a_brute_force_vote(k, temperature):
    generator = torch.Generator().manual_seed(k)
    bank = torch.randn(40, 6, generator=generator, dtype=torch.float64)
    bank_labels = torch.randint(0, 4, (40,), generator=generator)
    queries = torch.randn(25, 6, generator=generator, dtype=torch.float64) * 3.0  # norms must not matter
    predicted = knn_predict(bank, bank_labels, queries, k, temperature, num_classes=4)
    assert predicted.tolist() == brute_force_knn(bank, bank_labels, queries, k, temperature, 4)


def test_weighted_vote_beats_a_plain_majority():
    """Two far neighbours of class 1 lose to one very close neighbour of class 0 when votes weigh exp(sim / T)."""
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[1.0, 0.05]])
    assert knn_predict(bank, labels, query, k=3, temperature=0.07, num_classes=2).item() == 0
    assert knn_predict(bank, labels, query, k=3, temperature=100.0, num_classes=2).item() == 1  # ~ a plain count


def test_a_run_reports_every_selected_protocol(write_suite, tmp_path):
    config = write_suite(strategies={"full_ft": {"epochs": 1}, "linear": {"epochs": 1}},
                         retention={"eval_size": 60, "protocols": {"head": {}, "knn": {"bank_size": 80, "k": 5}}})
    out = tmp_path / "out"
    assert suite(config, out) == 0
    results = {r["strategy"]: r for r in iter_results(out)}
    for result in results.values():
        assert result["retention_protocols"] == ["head", "knn"]
        assert result["config"]["retention"]["protocols"]["knn"] == {"k": 5, "temperature": 0.07, "bank_size": 80}
        curves, drops = result["metrics"]["retained_pretrain_acc"], result["metrics"]["pretrain_drop"]
        assert set(curves) == set(drops) == {"head", "knn"} and all(len(c) == 6 for c in curves.values())
        assert all(0 <= value <= 100 for curve in curves.values() for value in curve)
    linear = results["linear"]["metrics"]
    assert linear["pretrain_drop"] == {"head": 0.0, "knn": 0.0}  # a frozen backbone keeps its features
    assert len(set(linear["retained_pretrain_acc"]["knn"])) == 1
    header = (out / "leaderboard.md").read_text().splitlines()[0]
    assert all(column in header for column in ("retained_last_head", "pretrain_drop_head", "retained_last_knn",
                                                 "pretrain_drop_knn"))
