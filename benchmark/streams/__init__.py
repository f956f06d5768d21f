"""Task streams: a registry of builders, each returning a `Stream` around an Avalanche benchmark.

Importing this package registers the built-in streams.
"""

from benchmark.streams.base import (STREAMS, Stream, Task, build_stream, joint_task, register_stream,
                                    stream_params)
from benchmark.streams import cifar100, class_folders, domain_folders, imagenet_r, mini  # noqa: F401  (registers them)

__all__ = ["STREAMS", "Stream", "Task", "build_stream", "joint_task", "register_stream", "stream_params"]
