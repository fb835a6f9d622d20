"""Step 5: what a seed's report says besides its scores: the header (what ran, how the checkpoint was selected,
what the target labels were used for) and the 2-D feature map before and after adaptation."""

from __future__ import annotations

from typing import Any

import numpy as np

from transferkit.config import RunConfig
from transferkit.evaluate.predict import predict_outputs
from transferkit.evaluate.report import FEATURE_MAP
from transferkit.finetune.convex_probe import solver_for
from transferkit.models.heads import TransferModel
from transferkit.pipeline.data import RunData
from transferkit.runs import RunDir, atomic_path
from transferkit.tasks import scalars_of

FEATURE_MAP_ITEMS = 500  # per domain: enough for a readable t-SNE, small on disk (and quick to embed)


def _sample(n: int, k: int = FEATURE_MAP_ITEMS, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``k`` of ``n`` items, the same for every call with the same arguments."""
    return np.arange(n) if n <= k else np.sort(np.random.default_rng(seed).choice(n, k, replace=False))


def save_feature_map(run: RunDir, model: TransferModel, data: RunData, candidates: tuple[Any, Any] | None,
                     kw: dict[str, Any]) -> None:
    """``feature_map.npz``: up to 500 source and 500 target feature vectors for the report's 2-D map (at most 50
    wide: see :func:`_leading_components`).

    With the guard, the features its candidates computed on the source validation and the unlabelled target
    train split: ``before_*`` from the source-only twin, ``after_*`` from the adapted model, for the same items.
    Otherwise only ``after_*``, predicted here on a subsample (``note`` says why there is no "before"). The
    source items' labels may colour the map; target labels are never read (their domain colours them)."""
    arrays: dict[str, np.ndarray] = {}
    val_name = "source validation" if data.source_val is not None else "source train"
    if candidates is not None:
        before, after = candidates
        si, ti = _sample(len(after.source_val_features)), _sample(len(after.target_features))
        arrays.update(after_source=after.source_val_features[si], after_target=after.target_features[ti],
                      before_source=before.source_val_features[si], before_target=before.target_features[ti],
                      source_labels=np.asarray(after.source_val_labels)[si])
        splits, note = (val_name, "target train (unlabelled)"), ""
    else:
        source = next(d for d in (data.source_val, data.source_eval, data.source_train) if d is not None)
        target = data.target_train if data.target_train is not None else data.target_eval
        if target is None:
            return  # no target domain: nothing to map against
        source_name = "source evaluation" if source is data.source_eval else val_name
        target_name = "target train (unlabelled)" if target is data.target_train else "target evaluation"
        fs, _, ys = predict_outputs(model, source.subset(_sample(len(source))), **kw)
        ft, _, _ = predict_outputs(model, target.subset(_sample(len(target))).unlabelled(), **kw)
        arrays.update(after_source=fs.numpy(), after_target=ft.numpy(), source_labels=ys.numpy())
        splits = (source_name, target_name)
        note = ("a source-only run (adapt.method none) has no adaptation to compare with"
                if data.target_train is None else
                "the negative-transfer guard was off (adapt.guard false), so no source-only twin was trained")
    for model_name in ("before", "after"):
        if f"{model_name}_source" in arrays:
            arrays[f"{model_name}_source"], arrays[f"{model_name}_target"] = _leading_components(
                arrays[f"{model_name}_source"], arrays[f"{model_name}_target"])
    with atomic_path(run.path / FEATURE_MAP) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays, source_split=np.array(splits[0]), target_split=np.array(splits[1]),
                            note=np.array(note))


def _leading_components(source: np.ndarray, target: np.ndarray, k: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Both domains' features projected together onto their ``k`` leading principal components when wider (the
    map embeds those anyway: t-SNE starts from 50 components, PCA keeps 2), as float32: a small file."""
    both = np.concatenate([source, target]).astype(np.float64)
    if both.shape[1] > k and len(both) > 1:
        both -= both.mean(0)
        _, _, vt = np.linalg.svd(both, full_matrices=False)
        both = both @ vt[:k].T
    both = both.astype(np.float32)
    return both[: len(source)], both[len(source):]


def _target_label_use(cfg: RunConfig) -> str:
    k = cfg.data.target_labels_per_class
    if k is None:
        return "; target labels are used only to score the selected model"
    return (f"; {k} labelled target item(s) per class from the {cfg.data.train_split!r} split were trained on; the "
            f"{cfg.data.eval_split!r} split's labels only score the selected model")


def report_header(cfg: RunConfig, data: RunData) -> dict[str, Any]:
    scored = "" if data.target_eval is not None or not cfg.data.target else (
        "; the target has no labels, so it is not scored"
    )
    if data.source_eval is not None and data.source_eval.meta.get("whole_file"):
        scored += "; the source file has no splits, so the source score is on the items it trained on"
    measure = {"classification": "accuracy", "regression": "MAE", "multilabel": "micro-F1"}[cfg.model.primary_kind]
    selection = (
        "none: the linear probe is solved by L-BFGS" + (
            " with its L2 strength chosen by cross-validation on the source's training split"
            if cfg.finetune.probe_c is None else "")
        if solver_for(cfg) == "lbfgs"
        else f"best source-validation {measure}"
        if data.source_val is not None
        else f"last epoch (no validation split: {data.val_note or 'data.val_fraction = 0'})"
    )
    return {
        "name": cfg.name,
        "backbone": cfg.model.backbone,
        "strategy": cfg.finetune.strategy,
        "source": cfg.data.source,
        "target": cfg.data.target,
        "method": cfg.adapt.method,
        # the primary head's classes (what the confusion matrices and per-class tables are about)
        "classes": list(data.tasks[0].classes) if data.tasks and data.tasks[0].kind == "classification"
        else data.classes,
        "selection": selection + _target_label_use(cfg) + scored,
        **({"standardize": f"{data.standardize[0]} ({data.standardize[1]})"} if cfg.model.backbone == "mlp"
           and data.source_train.kind == "vector" else {}),
        **({"heads": [t.to_json() for t in data.tasks]} if cfg.model.heads else {}),
        **({"multi_source": cfg.data.multi_source} if len(cfg.data.sources) > 1 else {}),
    }


def single_summary(report: dict[str, Any]) -> dict[str, Any]:
    return {
        role: {m: {"mean": v[m], "std": 0.0, "values": [v[m]]} for m, *_ in scalars_of(v)}
        for role, v in report["evaluations"].items()
    }
