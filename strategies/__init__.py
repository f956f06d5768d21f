"""Strategies: one module per method, each registered by name in `strategies.base.STRATEGIES`.

Importing this package registers the built-in strategies, and those of installed plugins (entry points).
"""

from strategies import _ssf, _vpt  # noqa: F401  (first-session modules: they register themselves in PETLS)
from strategies import (aper, block_expansion, cl_lora, coda_prompt, dualprompt, ease, full_ft,  # noqa: F401
                        hide_prompt, inflora, l2p, lae, linear, lora, mos, ranpac, sd_lora, selective_lora,
                        simplecil, slca, topk, tuna)
from strategies.base import STRATEGIES, Strategy, build_strategy, register, strategy_config
from benchmark.plugins import load_plugins

load_plugins()  # strategies, streams and backbones that installed packages declare (benchmark/plugins.py)

__all__ = ["STRATEGIES", "Strategy", "build_strategy", "register", "strategy_config"]
