"""Joint-training upper bounds: `joint: true` trains a strategy once, on one task holding every task's training
data (every class, every domain), scores it on every task's test set, and marks it in the result, the leaderboard
and the plots."""

import torch

from benchmark.evaluation import as_tensors
from benchmark.results import iter_results
from benchmark.streams import build_stream, joint_task
from reports.leaderboard import UPPER_BOUND_MARK, build_leaderboard
from strategies.base import register
from strategies.linear import LinearProbe
from test_suite import suite


def test_the_joint_task_holds_every_class_and_every_image(backbone):
    for name in ("mini-split-digits", "mini-domain-digits"):
        stream = build_stream(name, 1993, image_spec=backbone.image_spec)
        joint = joint_task(stream)
        assert sorted(joint.labels) == list(range(10)) and joint.num_outputs == 10
        assert sorted(joint.classes) == list(range(10))
        assert len(joint.train) == sum(len(task.train) for task in stream.tasks)
        images, labels = as_tensors(joint.train)
        expected = [as_tensors(task.train) for task in stream.tasks]
        assert torch.equal(images, torch.cat([x for x, _ in expected]))
        assert torch.equal(labels, torch.cat([y for _, y in expected]))


@register("linear_recording_tasks")
class RecordingLinearProbe(LinearProbe):
    """Linear probing that records the output units of every task it is given."""

    seen: list[tuple[int, ...]] = []

    def train_task(self, task):
        RecordingLinearProbe.seen.append(task.labels)
        super().train_task(task)


def test_a_joint_upper_bound_trains_once_on_every_class_and_is_marked(write_suite, tmp_path):
    RecordingLinearProbe.seen.clear()
    config = write_suite(strategies={"linear_recording_tasks@joint": {"joint": True, "epochs": 1},
                                     "linear": {"epochs": 1}})
    assert suite(config, tmp_path / "out") == 0
    assert RecordingLinearProbe.seen == [tuple(range(10))]  # one task, every class
    results = {r["strategy"]: r for r in iter_results(tmp_path / "out")}
    joint, continual = results["linear_recording_tasks@joint"], results["linear"]
    assert joint["joint_upper_bound"] and not continual["joint_upper_bound"]
    assert len(joint["cost"]["train_s"]) == 1 and len(continual["cost"]["train_s"]) == 5
    matrix = joint["accuracy_matrix"]
    assert len(matrix) == 5 and all(row == matrix[0] for row in matrix)  # one model, scored once, every test set
    assert joint["metrics"]["forgetting"] == 0.0
    table = build_leaderboard(list(results.values()))
    assert set(table["strategy"]) == {"linear", "linear_recording_tasks@joint" + UPPER_BOUND_MARK}
