"""Strategies: one module per method, each registered by name in `strategies.base.STRATEGIES`.

Importing this package registers the built-in strategies.
"""

from strategies import (aper, block_expansion, full_ft, lae, linear, lora, ranpac, selective_lora,  # noqa: F401
                        simplecil, slca, topk)
from strategies.base import STRATEGIES, Strategy, build_strategy, register, strategy_config

__all__ = ["STRATEGIES", "Strategy", "build_strategy", "register", "strategy_config"]
