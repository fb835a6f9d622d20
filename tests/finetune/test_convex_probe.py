"""The convex linear probe: the same optimum as scikit-learn's logistic regression, C chosen on the source only."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from helpers import gaussian_classes
from transferkit.config import RunConfig
from transferkit.errors import ConfigError
from transferkit.finetune.convex_probe import C_GRID, fit_convex_probe, solver_for


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _clusters(n: int, k: int, d: int, seed: int = 0, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` items of each of ``k`` classes in ``d`` dimensions, one after another."""
    return gaussian_classes(n, d, k, seed=seed, centre_sd=2.0, spread=spread, per_class=True)


@pytest.mark.parametrize("k", [2, 4])
def test_the_head_gives_scikit_learns_probabilities_at_the_chosen_c(k: int) -> None:
    x, y = _clusters(30, k, 5, spread=2.0)
    fit = fit_convex_probe(x, y, num_classes=k, seed=0, c=None)
    ref = LogisticRegression(C=fit.c, max_iter=1000).fit(x.astype(np.float64), y)
    ours = _softmax(x @ fit.weight.T + fit.bias)
    np.testing.assert_allclose(ours, ref.predict_proba(x), atol=1e-4)
    assert fit.converged and fit.folds == 5 and 0.0 <= fit.cv_accuracy <= 1.0


def test_c_is_the_grid_value_with_the_best_cross_validated_accuracy() -> None:
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    x, y = _clusters(25, 3, 8, seed=1, spread=3.0)
    fit = fit_convex_probe(x, y, num_classes=3, seed=7, c=None)
    split = StratifiedKFold(n_splits=5, shuffle=True, random_state=7)
    scores = [cross_val_score(LogisticRegression(C=c, max_iter=1000), x.astype(np.float64), y, cv=split).mean()
              for c in C_GRID]
    assert fit.c == C_GRID[int(np.argmax(scores))]
    assert fit.cv_accuracy == pytest.approx(max(scores))


def test_a_given_c_is_fitted_without_cross_validation() -> None:
    x, y = _clusters(20, 3, 4, spread=2.0)
    fit = fit_convex_probe(x, y, num_classes=3, seed=0, c=0.5)
    ref = LogisticRegression(C=0.5, max_iter=1000).fit(x.astype(np.float64), y)
    np.testing.assert_allclose(_softmax(x @ fit.weight.T + fit.bias), ref.predict_proba(x), atol=1e-4)
    assert fit.folds == 0 and fit.cv_accuracy is None and "C=0.5;" in fit.describe()


def test_one_item_in_a_class_cannot_be_cross_validated_so_c_is_the_default() -> None:
    x, y = _clusters(6, 2, 3)
    x, y = x[5:], y[5:]  # class 0 keeps one item
    fit = fit_convex_probe(x, y, num_classes=2, seed=0, c=None)
    assert fit.folds == 0 and fit.c == 1.0 and fit.cv_accuracy is None


def test_a_class_without_items_is_never_predicted() -> None:
    x, y = _clusters(20, 2, 4)
    fit = fit_convex_probe(x, y * 2, num_classes=3, seed=0)  # classes 0 and 2 present, 1 absent
    pred = (x @ fit.weight.T + fit.bias).argmax(1)
    ref = LogisticRegression(C=fit.c, max_iter=1000).fit(x.astype(np.float64), y * 2).predict(x)
    assert set(pred) <= {0, 2}
    np.testing.assert_array_equal(pred, ref)
    assert fit.weight.shape == (3, 4)


def test_a_single_class_is_refused() -> None:
    from transferkit.errors import DataError

    with pytest.raises(DataError, match="at least 2 classes"):
        fit_convex_probe(np.zeros((4, 2)), np.zeros(4, dtype=int), num_classes=2, seed=0)


def _probe_cfg(**sections: dict) -> RunConfig:
    """A linear probe's config (no data read) with ``sections`` merged into it."""
    base = {"data": {"source": "a.npz"}, "finetune": {"strategy": "linear-probe"}}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return RunConfig.model_validate(base)


def test_auto_solves_a_plain_probe_and_trains_anything_more() -> None:
    assert solver_for(_probe_cfg()) == "lbfgs"
    assert solver_for(_probe_cfg(train={"epochs": 5})) == "sgd"  # an explicit length asks for the engine
    assert solver_for(_probe_cfg(model={"bottleneck_dim": 16})) == "sgd"
    assert solver_for(_probe_cfg(adapt={"method": "mcc"})) == "sgd"
    assert solver_for(_probe_cfg(finetune={"strategy": "full"})) == "sgd"
    assert solver_for(_probe_cfg(finetune={"probe_solver": "sgd"})) == "sgd"
    assert solver_for(_probe_cfg(finetune={"probe_solver": "lbfgs"}, train={"epochs": 5})) == "lbfgs"


def test_lbfgs_on_a_probe_with_more_than_cross_entropy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="label_smoothing"):
        solver_for(_probe_cfg(finetune={"probe_solver": "lbfgs"}, train={"label_smoothing": 0.1}))


def test_auto_on_a_probe_reports_how_the_kept_model_was_trained(tmp_path) -> None:
    from transferkit.experiment import fit

    rng = np.random.default_rng(0)
    for name, shift in (("src", 0.0), ("tgt", 1.0)):
        x = rng.normal(0, 1, (160, 5)).astype(np.float32)
        y = (x[:, 0] + 0.3 * x[:, 1] > 0).astype(np.int64)
        x[:, 2:] += shift
        np.savez(tmp_path / f"{name}.npz", x_train=x[:120], y_train=y[:120], x_test=x[120:], y_test=y[120:])
    cfg = RunConfig.model_validate({
        "name": "auto-probe", "output_dir": str(tmp_path / "runs"), "seeds": [0],
        "data": {"source": str(tmp_path / "src.npz"), "target": str(tmp_path / "tgt.npz")},
        "model": {"backbone": "mlp", "backbone_kwargs": {"hidden": 8}},
        "finetune": {"strategy": "linear-probe"}, "adapt": {"method": "auto"},
    })
    report = fit(cfg, progress=False)
    seed = report["per_seed"][0] if "per_seed" in report else report
    chosen = seed["auto"]["chosen"]
    assert seed["auto"]["candidates"]["source-only"]  # solved by L-BFGS, scored like every candidate
    # the report describes the kept model: the solved probe, or the candidate's own training, never a mix
    assert ("solver" in seed["fit"]) == (chosen == "source-only"), (chosen, seed["fit"])
