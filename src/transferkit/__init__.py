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

from transferkit.config import RunConfig as RunConfig
from transferkit.config import parse_config as parse_config
from transferkit.data import DomainDataset as DomainDataset
from transferkit.data import load_data as load_data
from transferkit.errors import ConfigError as ConfigError
from transferkit.errors import DataError as DataError
from transferkit.errors import ModelError as ModelError
from transferkit.errors import RunDirError as RunDirError
from transferkit.errors import TransferkitError as TransferkitError
from transferkit.estimator import TransferClassifier as TransferClassifier
from transferkit.evaluate.metrics import classification_metrics as classification_metrics
from transferkit.experiment import fit as fit
from transferkit.features import extract_to_npz as extract_to_npz
from transferkit.models.backbones import create_backbone as create_backbone
from transferkit.models.heads import TransferModel as TransferModel
from transferkit.tasks import Task as Task
from transferkit.tasks import regression_metrics as regression_metrics
from transferkit.train.engine import Engine as Engine
from transferkit.train.engine import LossTerm as LossTerm

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
