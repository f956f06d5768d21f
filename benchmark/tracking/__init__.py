"""Experiment tracking: optional sinks chosen in a suite's `tracking:` section (none by default), one module each.

    tracking:
      mlflow: {tracking_uri: http://127.0.0.1:5000}   # or "" (a file store in <results>/mlruns), sqlite:///x.db
      tensorboard: {}                                 # event files in <results>/tensorboard/<run_id>/
      wandb: {mode: offline}                          # <results>/wandb/; `wandb sync` uploads later

`plan_tracking` validates the section before anything runs (a sink whose package is missing is a one-line error
naming the pip extra); `open_suite` opens the suite's parent run before the workers start and `finish_suite` stores
the report with it (suite_runs.py); each run's `Tracker` logs to every sink (tracker.py says what is logged), and
the shared training loop reports per-step loss and lr to its step log (steps.py).
"""

from benchmark.tracking import mlflow_sink, tensorboard_sink, wandb_sink  # noqa: F401  (register the sinks)
from benchmark.tracking.base import SINKS, SinkContext, TrackedRun, TrackingPlan, plan_tracking, register_sink
from benchmark.tracking.suite_runs import finish_suite, open_suite
from benchmark.tracking.tracker import IDS_FILE, Tracker

__all__ = ["IDS_FILE", "SINKS", "SinkContext", "TrackedRun", "Tracker", "TrackingPlan", "finish_suite", "open_suite",
           "plan_tracking", "register_sink"]
