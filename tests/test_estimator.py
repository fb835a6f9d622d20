"""TransferClassifier is a scikit-learn estimator that trains through the one engine: parameters, fit/predict,
Pipeline (fit parameters and metadata routing), GridSearchCV with a label-free scorer, bad inputs, determinism."""

from __future__ import annotations

import gc
import math
from functools import partial

import numpy as np
import pytest
import sklearn
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from helpers import gaussian_classes
from transferkit.data.domain import DomainDataset
from transferkit.errors import ConfigError, DataError
from transferkit.estimator import TransferClassifier
from transferkit.measure.selection import domain_scorer
from transferkit.models.heads import TransferModel

SMALL = {"epochs": 2, "hidden": 32, "depth": 1, "lr": 3e-2, "batch_size": 16}


@pytest.fixture(autouse=True, scope="module")
def _cheap_gc():
    """The engine calls Accelerate's free_memory (two full gc.collect()) per fit, ~0.3 s each with the test
    session's heap: freezing what exists now makes them cheap (undone when this module's tests end)."""
    gc.freeze()
    yield
    gc.unfreeze()


# n well separated classes (strings), the target optionally shifted: a task a 1-layer MLP learns in 2 epochs
_animals = partial(gaussian_classes, d=5, classes=("cat", "dog", "eel"))


@pytest.fixture(scope="module")
def fitted() -> tuple[TransferClassifier, np.ndarray, np.ndarray]:
    X, y = _animals(90)
    return TransferClassifier(**SMALL).fit(X, y), X, y


# -- the estimator API -------------------------------------------------------------------------------
def test_params_round_trip_and_clone() -> None:
    clf = TransferClassifier(method="dann", lam=0.3, bottleneck_dim=8, method_options={"hidden": 32})
    params = clf.get_params()
    assert params["method"] == "dann" and params["lam"] == 0.3 and params["method_options"] == {"hidden": 32}
    twin = clone(clf)
    assert twin is not clf and twin.get_params() == params
    assert clf.set_params(lam=1.5, epochs=3) is clf and clf.lam == 1.5 and clf.epochs == 3
    assert TransferClassifier(**clf.get_params()).get_params() == clf.get_params()
    with pytest.raises(NotFittedError):
        TransferClassifier().predict(np.zeros((2, 3)))


def test_fit_predict_with_string_labels(fitted) -> None:
    clf, X, y = fitted
    assert clf.classes_.tolist() == ["cat", "dog", "eel"] and clf.n_features_in_ == 5
    assert isinstance(clf.model_, TransferModel) and len(clf.history_) == SMALL["epochs"]
    assert 0 <= clf.best_epoch_ < SMALL["epochs"]
    pred = clf.predict(X)
    assert pred.shape == (90,) and set(pred) <= set(clf.classes_)
    proba = clf.predict_proba(X)
    assert proba.shape == (90, 3) and np.allclose(proba.sum(1), 1.0) and (proba >= 0).all()
    assert (clf.classes_[proba.argmax(1)] == pred).all()  # columns in classes_ order
    assert np.allclose(np.exp(clf.predict_log_proba(X)), proba)
    assert clf.decision_function(X).shape == (90, 3) and clf.transform(X).shape == (90, SMALL["hidden"])
    assert clf.score(X, y) >= 0.9  # well separated blobs


def test_binary_decision_function_is_the_log_odds() -> None:
    X, y = _animals(90, classes=("no", "yes"))
    clf = TransferClassifier(**SMALL).fit(X, y)
    p = clf.predict_proba(X)[:, 1]
    assert np.allclose(clf.decision_function(X), np.log(p / (1 - p)), atol=1e-5)
    assert clf.transform(X).shape == (90, SMALL["hidden"])


def test_adaptation_trains_on_the_target_and_needs_it() -> None:
    Xs, ys = _animals(90)
    Xt, _ = _animals(90, shift=1.0, seed=1)  # its labels are never used
    clf = TransferClassifier(method="dann", bottleneck_dim=8, **SMALL).fit(Xs, ys, X_target=Xt)
    assert "loss/dann" in clf.history_[-1] and clf.transform(Xt).shape == (90, 8)
    with pytest.raises(ConfigError, match="X_target"):
        TransferClassifier(method="dann", **SMALL).fit(Xs, ys)


def test_method_auto_keeps_one_of_its_candidates_and_says_why() -> None:
    Xs, ys = _animals(90)
    Xt, _ = _animals(90, shift=1.0, seed=1)
    clf = TransferClassifier(method="auto", **SMALL).fit(Xs, ys, X_target=Xt)
    auto = clf.auto_
    assert auto["chosen"] in {"source-only", "mcc", "dan"} and auto["why"]
    assert "source-only" in auto["scores"] and set(auto["scores"]) | set(auto["rejected"]) == {
        "source-only", "mcc", "dan"}
    assert clf.predict(Xt).shape == (90,)
    with pytest.raises(ConfigError, match="own default"):
        TransferClassifier(method="auto", lam=0.3, **SMALL).fit(Xs, ys, X_target=Xt)
    with pytest.raises(ConfigError, match="X_target"):
        TransferClassifier(method="auto", **SMALL).fit(Xs, ys)


def test_same_seed_same_model_and_global_rng_left_alone() -> None:
    Xs, ys = _animals(90)
    Xt, _ = _animals(90, shift=1.0, seed=1)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = TransferClassifier(method="dann", seed=3, **SMALL).fit(Xs, ys, X_target=Xt).predict_proba(Xt)
    assert torch.equal(torch.rand(3), expected)  # fitting put the caller's RNG state back
    b = TransferClassifier(method="dann", seed=3, **SMALL).fit(Xs, ys, X_target=Xt).predict_proba(Xt)
    c = TransferClassifier(method="dann", seed=4, **SMALL).fit(Xs, ys, X_target=Xt).predict_proba(Xt)
    assert np.array_equal(a, b) and not np.allclose(a, c)


# -- inputs other than arrays ------------------------------------------------------------------------
class _DictItems(torch.utils.data.Dataset):
    """A torch Dataset of ``{"x": tensor}`` items (unlabelled)."""

    def __init__(self, X: np.ndarray) -> None:
        self.X = torch.from_numpy(X)

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.X[i]}


def test_torch_datasets_and_domain_datasets_train_the_same_model() -> None:
    Xs, ys = _animals(90)
    Xt, _ = _animals(90, shift=1.0, seed=1)
    classes, labels = np.unique(ys, return_inverse=True)
    kw = {"method": "coral", **SMALL}
    ref = TransferClassifier(**kw).fit(Xs, ys, X_target=Xt).predict_proba(Xt)
    pairs = torch.utils.data.TensorDataset(torch.from_numpy(Xs), torch.from_numpy(labels))  # (x, y) items
    clf = TransferClassifier(**kw).fit(pairs, None, X_target=_DictItems(Xt))
    assert clf.classes_.tolist() == [0, 1, 2]  # the items' labels are the classes
    assert np.allclose(clf.predict_proba(_DictItems(Xt)), ref, atol=1e-6)
    source = DomainDataset(Xs, labels, "src", [str(c) for c in classes], "vector")
    target = DomainDataset(Xt, np.zeros(len(Xt), dtype=int), "tgt", ["a", "b", "c"], "vector")  # labels dropped
    clf = TransferClassifier(**kw).fit(source, X_target=target)
    assert clf.classes_.tolist() == ["cat", "dog", "eel"] and clf.n_features_in_ == 5
    assert np.allclose(clf.predict_proba(Xt), ref, atol=1e-6)
    with pytest.raises(DataError, match="carries its labels"):
        TransferClassifier(**kw).fit(source, labels, X_target=target)


# -- scikit-learn composition ------------------------------------------------------------------------
def test_pipeline_passes_x_target_to_the_classifier_as_it_is() -> None:
    """Pipeline.fit(..., step__X_target=Xt) hands Xt to the classifier untouched: the scaler does not see it."""
    Xs, ys = _animals(90)
    Xt, _ = _animals(90, shift=1.0, seed=1)
    pipe = make_pipeline(StandardScaler(), TransferClassifier(method="dann", **SMALL))
    pipe.fit(Xs, ys, transferclassifier__X_target=Xt)
    scaler = StandardScaler().fit(Xs)
    by_hand = TransferClassifier(method="dann", **SMALL).fit(scaler.transform(Xs), ys, X_target=Xt)
    assert np.array_equal(pipe.predict_proba(Xt), by_hand.predict_proba(scaler.transform(Xt)))
    assert pipe.score(Xs, ys) >= 0.9


def test_pipeline_routing_scales_x_target_with_the_source_scaler() -> None:
    """With metadata routing, transform_input=["X_target"] runs Xt through the fitted scaler first."""
    Xs, ys = _animals(90)
    Xt, _ = _animals(90, shift=1.0, seed=1)
    with sklearn.config_context(enable_metadata_routing=True):
        clf = TransferClassifier(method="dann", **SMALL).set_fit_request(X_target=True)
        pipe = Pipeline([("scale", StandardScaler()), ("clf", clf)], transform_input=["X_target"])
        pipe.fit(Xs, ys, X_target=Xt)
    scaler = StandardScaler().fit(Xs)
    by_hand = TransferClassifier(method="dann", **SMALL).fit(scaler.transform(Xs), ys, X_target=scaler.transform(Xt))
    assert np.array_equal(pipe.predict_proba(Xt), by_hand.predict_proba(scaler.transform(Xt)))


def test_grid_search_picks_lambda_with_a_label_free_scorer() -> None:
    Xs, ys = _animals(90)
    Xt, _ = _animals(60, shift=1.0, seed=1)  # the target's labels are thrown away here: nothing can use them
    search = GridSearchCV(
        TransferClassifier(method="dann", **SMALL), {"lam": [0.1, 1.0]}, scoring=domain_scorer(Xt, "snd"), cv=2,
    ).fit(Xs, ys, X_target=Xt)
    scores = search.cv_results_["mean_test_score"]
    assert len(scores) == 2 and np.isfinite(scores).all()
    assert search.best_params_["lam"] in (0.1, 1.0) and search.best_params_["lam"] == [0.1, 1.0][scores.argmax()]
    assert search.best_estimator_.predict(Xt).shape == (60,)
    # the source-side validators read the held-out fold and its labels, never the target's
    for validator in ("source_accuracy", "dev", "info_max"):
        score = domain_scorer(Xt, validator)(search.best_estimator_, Xs[:30], ys[:30])
        assert math.isfinite(score)


# -- bad input ---------------------------------------------------------------------------------------
def test_bad_inputs_are_refused_with_clear_errors(fitted) -> None:
    clf, X, y = fitted
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(DataError, match="NaN"):
        TransferClassifier(**SMALL).fit(bad, y)
    bad[3, 2] = np.inf
    with pytest.raises(DataError, match=r"X_target.*infinity"):
        TransferClassifier(method="dann", **SMALL).fit(X, y, X_target=bad)
    with pytest.raises(DataError, match=r"X has 4 features.*n_features_in_ = 5"):
        clf.predict(X[:, :4])
    with pytest.raises(DataError, match="X_target: X has 4 features"):
        TransferClassifier(method="dann", **SMALL).fit(X, y, X_target=X[:, :4])
    with pytest.raises(DataError, match="one class"):
        TransferClassifier(**SMALL).fit(X, np.full(len(X), "cat"))
    with pytest.raises(DataError, match="Unknown label type"):
        TransferClassifier(**SMALL).fit(X, np.linspace(0, 1, len(X)))
    with pytest.raises(DataError, match="requires y"):
        TransferClassifier(**SMALL).fit(X)
    with pytest.raises(ConfigError, match="unknown method 'danm'"):
        TransferClassifier(method="danm").fit(X, y, X_target=X)
    with pytest.raises(ConfigError, match="epochs"):
        TransferClassifier(epochs=0).fit(X, y)
    with pytest.raises(ConfigError, match="val_fraction"):
        TransferClassifier(val_fraction=1.5).fit(X, y)


# -- scikit-learn's own estimator checks -------------------------------------------------------------
def _checked() -> TransferClassifier:
    # enough training for check_classifiers_train's accuracy bar on its blobs; no validation split on tiny data
    return TransferClassifier(epochs=20, lr=1e-2, hidden=16, depth=1, val_fraction=0.0)


def _name(check: object) -> str:
    return check.func.__name__ if isinstance(check, partial) else check.__name__  # type: ignore[attr-defined]


# The checks that need no successful fit (API, parameters, input validation): ~0.1 s together. The whole suite
# (~60 fits, 10-20 s on a busy 2-core machine) is marked slow: `pytest -m slow tests/test_estimator.py`; all pass.
QUICK = {
    "check_estimator_cloneable", "check_estimator_tags_renamed", "check_valid_tag_types", "check_estimator_repr",
    "check_no_attributes_set_in_init", "check_estimators_unfitted", "check_do_not_raise_errors_in_init_or_set_params",
    "check_mixin_order", "check_set_params", "check_get_params_invariance", "check_parameters_default_constructible",
    "check_complex_data", "check_estimators_empty_data_messages", "check_estimator_sparse_array",
    "check_estimator_sparse_matrix", "check_classifiers_one_label", "check_classifiers_regression_target",
    "check_supervised_y_no_nan", "check_fit2d_1sample", "check_fit1d", "check_requires_y_none",
    "check_transformers_unfitted",
}
_QUICK_CHECKS = [
    pytest.param(est, check, id=_name(check))
    for est, check in parametrize_with_checks([_checked()]).args[1]
    if _name(check) in QUICK
]


@pytest.mark.parametrize(("estimator", "check"), _QUICK_CHECKS)
def test_sklearn_api_checks(estimator, check) -> None:
    check(estimator)


@pytest.mark.slow
@parametrize_with_checks([_checked()])
def test_sklearn_estimator_checks(estimator, check) -> None:
    check(estimator)


def test_bottleneck_auto_is_the_method_s_own_default_and_a_number_or_none_is_kept() -> None:
    Xs, ys = _animals(300)
    Xt, _ = _animals(90, shift=0.5, seed=1)
    assert TransferClassifier(method="mcc", **SMALL).fit(Xs, ys, X_target=Xt).model_.bottleneck_dim == 256
    small = TransferClassifier(method="mcc", **SMALL).fit(Xs[:100], ys[:100], X_target=Xt)
    assert small.model_.bottleneck_dim is None  # 90 training items: too few for MCC's bottleneck
    assert TransferClassifier(method="dan", **SMALL).fit(Xs, ys, X_target=Xt).model_.bottleneck_dim is None
    kept = TransferClassifier(method="mcc", bottleneck_dim=None, **SMALL).fit(Xs, ys, X_target=Xt)
    assert kept.model_.bottleneck_dim is None
    with pytest.raises(ConfigError, match="bottleneck_dim"):
        TransferClassifier(bottleneck_dim="wide").fit(Xs, ys)
