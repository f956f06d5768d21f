import torch

from strategies._heads import GrowingClassifier


def test_growing_keeps_learned_rows_and_adds_new_ones():
    torch.manual_seed(0)
    head = GrowingClassifier(4)
    assert head.num_outputs == 0 and head(torch.ones(3, 4)).shape == (3, 0)
    head.grow(2)
    with torch.no_grad():
        head.weight.fill_(1.0)
        head.bias.fill_(0.5)
    head.grow(5)
    assert head.num_outputs == 5
    assert torch.equal(head.weight[:2], torch.ones(2, 4)) and torch.equal(head.bias[:2], torch.full((2,), 0.5))
    assert torch.equal(head.bias[2:], torch.zeros(3)) and head.weight[2:].abs().max() < 0.05
    head.grow(3)  # never shrinks
    assert head(torch.ones(1, 4)).shape == (1, 5)
