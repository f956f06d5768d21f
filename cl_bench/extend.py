"""The public extension API: what a strategy, stream or backbone written outside this package builds on. Import from
here, not from the underscore modules behind it, which may change.

A strategy: a config dataclass (extend `TrainConfig` for the shared training loop, or `RecipeConfig` at least, so the
recipe settings `input` and `precision` exist), a class with `@register("name")` extending `Strategy` (or
`TunedBackbone`, the fine-tuning family: a growing head on the backbone's features, trained with `fit`; override
`task_loss` to add a term to every batch's loss), and state that must survive a crash in parameters or buffers (the
runner checkpoints them after every task). A plugin package declares its module under the entry point group
`cl_bench.strategies` (or `cl_bench.streams`, `cl_bench.backbones`); a plain module is named with `--import`.
docs/extending.md has a worked example (L2 towards the previous task's weights).
"""

from benchmark.backbones import Backbone, register_backbone
from benchmark.config import apply_preset, require
from benchmark.recipe import RecipeConfig
from benchmark.runtime import Runtime
from benchmark.streams import Stream, Task, register_stream
from benchmark.streams.base import class_incremental, domain_incremental
from strategies._heads import GrowingClassifier, TaskHeads
from strategies._loop import TrainConfig, fit, run_epoch, task_cross_entropy, training_data
from strategies._tuned import TunedBackbone
from strategies.base import Strategy, register

__all__ = ["Backbone", "GrowingClassifier", "RecipeConfig", "Runtime", "Stream", "Strategy", "Task", "TaskHeads",
           "TrainConfig", "TunedBackbone", "apply_preset", "class_incremental", "domain_incremental", "fit",
           "register", "register_backbone", "register_stream", "require", "run_epoch", "task_cross_entropy",
           "training_data"]
