"""Strategies: one module per method, each registered by name in `strategies.base.STRATEGIES`.

Importing this package registers the built-in strategies.
"""

from strategies import (block_expansion, full_ft, inflora, lae, linear, lora, sd_lora, selective_lora, slca,  # noqa: F401
                        topk)
from strategies.base import STRATEGIES, Strategy, build_strategy, register, strategy_config

__all__ = ["STRATEGIES", "Strategy", "build_strategy", "register", "strategy_config"]
