"""Fine-tune with LP-FT from Python: the same run as `transferkit fit`, as a library call.

Run: python examples/finetune_lpft.py
"""

from transferkit.config import parse_config
from transferkit.experiment import fit

cfg = parse_config(
    {
        "name": "lpft-example",
        "data": {"source": "digits-uci", "source_per_class": 10, "val_fraction": 0.0},
        "model": {"backbone": "lenet"},
        "finetune": {"strategy": "lp-ft", "lp_epochs": 5, "backbone_lr_mult": 0.1},
        "train": {"epochs": 10, "lr": 1e-3},
    }
)
report = fit(cfg, overwrite=True)
print("digits-uci test accuracy:", round(report["summary"]["source"]["accuracy"]["mean"], 4))
