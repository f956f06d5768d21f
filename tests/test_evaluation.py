import torch

from benchmark import evaluation
from benchmark.diagnostics import accuracy_row
from benchmark.evaluation import as_tensors
from benchmark.runtime import Runtime

CPU = Runtime(torch.device("cpu"), progress=False)


def linear_predict(x: torch.Tensor, task_id: int | None = None) -> torch.Tensor:
    torch.manual_seed(0)
    weight = torch.randn(x[0].numel(), 10)
    return x.flatten(1) @ weight + (0 if task_id is None else task_id)


def test_test_sets_too_large_for_memory_are_streamed_with_the_same_numbers(stream, monkeypatch):
    datasets = [task.test for task in stream.tasks]
    in_memory = evaluation.TestSets.of(datasets, CPU)
    monkeypatch.setattr(evaluation, "IN_MEMORY_LIMIT_BYTES", 0)
    streamed = evaluation.TestSets.of(datasets, CPU)
    assert isinstance(in_memory.images, torch.Tensor) and not isinstance(streamed.images, torch.Tensor)
    assert torch.equal(in_memory.labels, streamed.labels) and in_memory.sizes == streamed.sizes
    assert in_memory.accuracies(linear_predict, CPU) == streamed.accuracies(linear_predict, CPU)
    assert in_memory.task_aware_accuracies(linear_predict, CPU) == streamed.task_aware_accuracies(linear_predict, CPU)
    assert torch.equal(in_memory.first_image(), streamed.first_image())
    logits = in_memory.outputs(linear_predict, CPU)  # what the runner takes accuracies and diagnostics from
    assert logits.shape == (sum(in_memory.sizes), 10) and torch.equal(logits, streamed.outputs(linear_predict, CPU))
    assert accuracy_row(logits, in_memory.labels, in_memory.sizes) == in_memory.accuracies(linear_predict, CPU)
    assert torch.equal(in_memory.first_image(), as_tensors(datasets[0])[0][0])
