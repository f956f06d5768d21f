import torch
import torch.nn.functional as F

from benchmark.streams import Task
import pytest

from benchmark.errors import RunDiverged
from benchmark.runtime import Runtime
from strategies._loop import TensorBatches, check_finite, shuffled_batches, task_cross_entropy

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


class Squares(torch.utils.data.Dataset):
    """Items computed on access, as image files are decoded: loader workers apply."""

    def __len__(self) -> int:
        return 50

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.tensor([float(index) ** 2]), index


def test_loader_workers_change_who_decodes_not_what_is_drawn():
    in_process, workers = Runtime(torch.device("cpu")), Runtime(torch.device("cpu"), loader_workers=2)
    orders = []
    for runtime in (in_process, workers):
        torch.manual_seed(0)
        loader = shuffled_batches(Squares(), 8, runtime)
        assert loader.num_workers == runtime.loader_workers
        orders.append([labels.tolist() for _, labels in loader])
    assert orders[0] == orders[1]  # the shuffle is drawn in the main process either way
    cached = torch.utils.data.TensorDataset(torch.zeros(4, 1), torch.zeros(4))
    assert isinstance(shuffled_batches(cached, 2, workers), TensorBatches)  # tensors in memory: sliced, no workers


@pytest.mark.parametrize("drop_last", [False, True])
def test_tensor_batches_are_the_batches_a_data_loader_would_draw(drop_last):
    data = torch.utils.data.TensorDataset(torch.randn(45, 3), torch.arange(45))
    runtime = Runtime(torch.device("cpu"))
    epochs = []
    for loader in (torch.utils.data.DataLoader(data, batch_size=8, shuffle=True, drop_last=drop_last),
                   shuffled_batches(data, 8, runtime, drop_last=drop_last)):
        torch.manual_seed(3)
        epochs.append([[batch for batch in loader] for _ in range(2)] + [torch.rand(1)])  # and the RNG after
        assert len(loader) == (5 if drop_last else 6)
    for loader_epoch, sliced_epoch in zip(epochs[0][:2], epochs[1][:2]):
        assert len(loader_epoch) == len(sliced_epoch)
        for (x, y), (sx, sy) in zip(loader_epoch, sliced_epoch):
            assert torch.equal(x, sx) and torch.equal(y, sy)
    assert torch.equal(epochs[0][2], epochs[1][2])  # both left the global generator in the same state
