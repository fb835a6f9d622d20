"""transferkit: transfer learning from one domain to another, offline first, through one training engine.

Example:
    >>> import transferkit as tk
    >>> cfg = tk.parse_config({"data": {"source": "mnist-5k", "target": "digits-uci"}, "model": {"backbone": "lenet"}})
    >>> cfg.finetune.strategy
    'full'
"""

import os as _os

# onnxruntime (imported by torchmetrics and the onnx: backbones) sends usage telemetry from native threads, below
# the offline guard's reach (transferkit.network); its own switch must be set before it is first imported.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from transferkit.errors import ConfigError as ConfigError
from transferkit.errors import DataError as DataError
from transferkit.errors import ModelError as ModelError
from transferkit.errors import RunDirError as RunDirError
from transferkit.errors import TransferkitError as TransferkitError

# The rest of the public API is imported on first use (PEP 562): `import transferkit` and the CLI's `--help` do not
# pay for torch, torchmetrics and the model libraries until something needs them.
_LAZY = {
    "RunConfig": "transferkit.config",
    "parse_config": "transferkit.config",
    "DomainDataset": "transferkit.data",
    "load_data": "transferkit.data",
    "TransferClassifier": "transferkit.estimator",
    "classification_metrics": "transferkit.evaluate.metrics",
    "fit": "transferkit.experiment",
    "extract_to_npz": "transferkit.features",
    "create_backbone": "transferkit.models.backbones",
    "TransferModel": "transferkit.models.heads",
    "Task": "transferkit.tasks",
    "regression_metrics": "transferkit.tasks",
    "Engine": "transferkit.train.engine",
    "LossTerm": "transferkit.train.engine",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups are plain attribute reads
        return value
    raise AttributeError(f"module 'transferkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "DomainDataset",
    "Engine",
    "LossTerm",
    "ModelError",
    "RunConfig",
    "RunDirError",
    "Task",
    "TransferClassifier",
    "TransferModel",
    "TransferkitError",
    "classification_metrics",
    "create_backbone",
    "extract_to_npz",
    "fit",
    "load_data",
    "parse_config",
    "regression_metrics",
]
