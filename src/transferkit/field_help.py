"""The help of every run-config field that ``transferkit fit`` also offers as a flag, written once.

The config reads it as the pydantic ``Field(description=...)`` (``transferkit config``, errors, docs) and the command
line as the typer ``help=`` of the flag; a plain dict, so the CLI shows it without importing pydantic at start-up.
``tests/e2e/test_cli.py`` checks that each flag's help and its field's description are this text.
"""

FIELD_HELP: dict[str, str] = {
    "name": "run name: the folder under output_dir",
    "output_dir": "parent folder of run directories",
    "seeds": "seeds, one run each (mean ± std over them); on the command line comma-separated, e.g. 0,1,2",
    "online": "allow downloads from model hubs",
    "data.source": "labelled source data: a dataset name (`transferkit datasets`) or a path; several (a list, or "
    "the flag repeated) for several source domains, each keeping its own name",
    "data.target": "target domain: scored with its labels only at the end, never trained on them",
    "data.target_labels_per_class": "train on K labelled target items per class too (from the target train split, "
    "chosen by seed): joint L_s + λ_t·L_t with adapt.method none, semi-supervised adaptation with a method",
    "data.batch_size": "training batch size (per domain when adapting)",
    "model.backbone": "lenet, mlp, logmel-cnn, timm:NAME, torchvision:NAME, hf:PATH, st:PATH, onnx:PATH, "
    "file:PATH (`transferkit backbones`)",
    "model.weights": "local weights file for the backbone",
    "model.pretrained": "use pretrained weights from an installed package (or online)",
    "model.trust_pickle": "accept a pickled weights file (torch.save(model)); unpickling runs code stored in the "
    "file, so only for files from an author you trust",
    "model.init_from": "start from an earlier run's model.safetensors: its backbone and bottleneck, and its heads "
    "where their names and sizes match (pre-train on the source, then fine-tune)",
    "finetune.strategy": "full, linear-probe, partial, lp-ft, lora (docs/finetuning.md)",
    "adapt.method": "domain adaptation: none, auto (try a few, keep the guarded label-free choice) or a method name "
    "(`transferkit methods`)",
    "adapt.weight": "weight λ of the transfer loss; default: the method's own",
    "train.epochs": "passes over the data (default: a budget of optimiser steps that follows the data size, see "
    "docs/defaults.md)",
    "train.lr": "learning rate",
    "tracking.log_to": "also track with: csv (metrics.csv), tensorboard (<run>/tensorboard), mlflow; on the "
    "command line comma-separated",
}
