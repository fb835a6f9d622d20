"""A whole run from a :class:`~transferkit.config.RunConfig`: data -> model -> fine-tune -> evaluate -> report.

The steps live in :mod:`transferkit.pipeline`, one module each; this module is the stable entry point.

Example:
    >>> from transferkit.config import parse_config
    >>> cfg = parse_config({"name": "doc", "output_dir": str(getfixture("tmp_path")),
    ...                     "data": {"source": "digits-uci", "source_per_class": 5, "val_fraction": 0},
    ...                     "train": {"epochs": 1}})
    >>> report = fit(cfg, progress=False)
    >>> 0.0 <= report["summary"]["source"]["accuracy"]["mean"] <= 1.0
    True
"""

from __future__ import annotations

from transferkit.pipeline.choose import candidate_of, candidate_outputs
from transferkit.pipeline.data import RunData, load_run_data, load_sources, validation_share
from transferkit.pipeline.model import build_model, loss_terms
from transferkit.pipeline.run import fit, fit_seed

__all__ = ["RunData", "build_model", "candidate_of", "candidate_outputs", "fit", "fit_seed", "load_run_data",
           "load_sources", "loss_terms", "validation_share"]
