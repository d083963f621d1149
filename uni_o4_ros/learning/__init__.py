"""Uni-O4 learning core: torch only, no ROS import (networks, ensemble BC, IQL, dynamics, AM-Q,
multi-step offline improvement, online PPO).

    from uni_o4_ros.data import read_hdf5
    from uni_o4_ros.learning import OfflineTrainer, budget_overrides, load_config

    cfg = load_config(None, ["env=Hopper-v5"], base=budget_overrides("small"))
    result = OfflineTrainer(cfg, read_hdf5("hopper-medium.hdf5"), "runs/hopper").run()
"""

from importlib import import_module
from typing import Any

# Loaded on first use (PEP 562), so that importing one light submodule (config, jsonlines) from a
# node or the field supervisor does not load torch.
_EXPORTS = {"OfflineResult": "offline", "OfflineTrainer": "offline", "load_policy": "offline",
            "save_policy": "offline", "UniO4Config": "config", "load_config": "config",
            "budget_overrides": "budgets"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
