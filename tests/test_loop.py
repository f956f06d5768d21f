import torch
import torch.nn.functional as F

from benchmark.streams import Task
import pytest

from benchmark.errors import RunDiverged
from strategies._loop import check_finite, task_cross_entropy

TASK1 = Task(1, "t1", (7, 3), (2, 3), 4, None, None)  # second task of a class-incremental stream: units 2 and 3


def test_local_loss_only_sees_the_current_tasks_units():
    logits = torch.tensor([[5.0, 4.0, 0.5, 1.5], [9.0, 0.0, 2.0, 0.0]], requires_grad=True)
    labels = torch.tensor([3, 2])
    loss = task_cross_entropy(logits, labels, TASK1, "local")
    expected = F.cross_entropy(logits[:, 2:].detach(), torch.tensor([1, 0]))
    assert torch.isclose(loss, expected)
    loss.backward()
    assert torch.equal(logits.grad[:, :2], torch.zeros(2, 2))  # old classes get no gradient


def test_global_loss_is_plain_cross_entropy():
    logits = torch.randn(3, 4)
    labels = torch.tensor([0, 2, 3])
    assert torch.isclose(task_cross_entropy(logits, labels, TASK1, "global"), F.cross_entropy(logits, labels))


def test_first_non_finite_loss_is_located():
    check_finite([torch.tensor(1.0), torch.tensor(2.0)], epoch=0, steps_before=0)
    with pytest.raises(RunDiverged) as error:
        check_finite([torch.tensor(1.0), torch.tensor(float("inf")), torch.tensor(float("nan"))], epoch=2,
                     steps_before=30)
    assert (error.value.step, error.value.epoch) == (31, 2)
