"""Strategies: one module per method, each registered by name in `strategies.base.STRATEGIES`.

Importing this package registers the built-in strategies, and those of installed plugins (entry points).
"""

from strategies import (aper, block_expansion, cl_lora, coda_prompt, dualprompt, full_ft, inflora,  # noqa: F401
                        l2p, lae, linear, lora, ranpac, sd_lora, selective_lora, simplecil, slca, topk)
from strategies.base import STRATEGIES, Strategy, build_strategy, register, strategy_config
from benchmark.plugins import load_plugins

load_plugins()  # strategies, streams and backbones that installed packages declare (benchmark/plugins.py)

__all__ = ["STRATEGIES", "Strategy", "build_strategy", "register", "strategy_config"]
