"""How the backbone is trained: which parameters move and at which learning rate."""

from transferkit.finetune.strategies import apply_strategy as apply_strategy
from transferkit.finetune.strategies import param_groups as param_groups

__all__ = ["apply_strategy", "param_groups"]
