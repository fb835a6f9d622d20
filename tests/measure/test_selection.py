"""Label-free validators against direct computations, the collapse guard, and selection."""

from __future__ import annotations

import math

import numpy as np
import pytest

from transferkit.errors import ConfigError, DataError
from transferkit.measure.selection import (
    VALIDATORS,
    Candidate,
    collapse_check,
    dev,
    domain_scorer,
    importance_weights,
    info_max,
    iwcv,
    select,
    snd,
    softmax,
    source_accuracy,
    target_entropy,
)


def _candidate(seed: int = 0, shift: float = 0.0, n: int = 60, c: int = 3) -> Candidate:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 3.0 * np.eye(c)[labels]
    return Candidate(
        f"c{seed}", target_logits=rng.normal(size=(n, c)) * 3,
        source_val_logits=logits, source_val_labels=labels,
        source_val_features=rng.normal(size=(n, 4)), source_train_features=rng.normal(size=(200, 4)),
        target_features=rng.normal(size=(150, 4)) + shift,
    )


def _row_entropy(row: list[float]) -> float:
    return -sum(v * math.log(v) for v in row if v > 0)


def test_source_accuracy_and_entropy_validators_by_hand() -> None:
    c = _candidate()
    assert source_accuracy(c) == pytest.approx(np.mean(c.source_val_logits.argmax(1) == c.source_val_labels))
    p = softmax(c.target_logits)
    ents = [_row_entropy(list(r)) for r in p]
    assert target_entropy(c) == pytest.approx(-np.mean(ents))
    assert info_max(c) == pytest.approx(_row_entropy(list(p.mean(0))) - np.mean(ents))


def test_info_max_is_log_c_for_confident_diverse_and_0_for_collapsed() -> None:
    diverse = Candidate("d", target_logits=np.tile(np.eye(4) * 50, (5, 1)))
    collapsed = Candidate("x", target_logits=np.tile([50.0, 0, 0, 0], (20, 1)))
    assert info_max(diverse) == pytest.approx(math.log(4), abs=1e-6)
    assert info_max(collapsed) == pytest.approx(0.0, abs=1e-6)


def test_iwcv_and_dev_against_a_direct_computation() -> None:
    c = _candidate(shift=1.0)
    w = importance_weights(c)
    p = softmax(c.source_val_logits)
    losses = np.array([-math.log(p[i, y]) for i, y in enumerate(c.source_val_labels)])
    assert iwcv(c) == pytest.approx(-np.mean(w * losses))
    wl = w * losses
    eta = -np.sum((wl - wl.mean()) * (w - w.mean())) / np.sum((w - w.mean()) ** 2)  # -Cov/Var, same ddof
    assert dev(c) == pytest.approx(-(wl.mean() + eta * w.mean() - eta))
    assert w.min() > 0 and w.max() <= 10.0


def test_importance_weights_are_about_one_without_shift() -> None:
    w = importance_weights(_candidate(shift=0.0, n=400))
    assert abs(float(np.median(w)) - 1.0) < 0.35  # the prior odds n_t/n_s are divided out


def test_snd_against_a_direct_computation() -> None:
    rng = np.random.default_rng(3)
    c = Candidate("s", target_logits=rng.normal(size=(7, 3)) * 2)
    p = softmax(c.target_logits)
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    total = 0.0
    for i in range(7):
        sims = [float(p[i] @ p[j]) / 0.05 for j in range(7) if j != i]
        m = max(sims)
        e = [math.exp(s - m) for s in sims]
        total += _row_entropy([v / sum(e) for v in e])
    assert snd(c) == pytest.approx(total / 7)


def test_collapse_check() -> None:
    even = collapse_check(np.tile(np.eye(4) * 5, (10, 1)))
    assert not even.collapsed and even.mean_entropy_ratio == pytest.approx(1.0, abs=1e-3)
    one = collapse_check(np.tile([5.0, 0, 0, 0], (40, 1)))
    assert one.collapsed and "one class takes 100%" in one.reason and one.top_class_share == 1.0
    # 60% in one of 10 classes: over max(0.5, 3/10)
    logits = np.zeros((100, 10))
    logits[:60, 0] = 9
    logits[np.arange(60, 100), np.arange(40) % 9 + 1] = 9
    assert collapse_check(logits).collapsed and not collapse_check(logits, max_class_share=0.7).collapsed
    with pytest.raises(DataError, match="2 classes"):
        collapse_check(np.zeros((5, 1)))


def test_select_rejects_a_collapsed_candidate_whatever_its_score() -> None:
    good = _candidate(0)
    collapsed = Candidate("collapsed", target_logits=np.tile([30.0, 0, 0], (60, 1)))
    sel = select([good, collapsed], "entropy")
    assert sel.scores["collapsed"] > sel.scores["c0"]  # entropy alone would pick it
    assert sel.chosen == "c0" and "collapsed" in sel.rejected
    assert select([good, collapsed], "entropy", guard=False).chosen == "collapsed"
    assert select([collapsed], "entropy").chosen is None


def test_select_errors_and_missing_inputs() -> None:
    with pytest.raises(ValueError, match="unknown validator"):
        select([_candidate()], "accuracy-on-target")
    with pytest.raises(ValueError, match="no candidates"):
        select([], "entropy")
    bare = Candidate("bare", target_logits=np.zeros((5, 3)))
    for name in ("source_accuracy", "iwcv", "dev"):
        with pytest.raises(DataError, match="needs"):
            VALIDATORS[name][0](bare)
    with pytest.raises(DataError, match="NaN"):
        target_entropy(Candidate("nan", target_logits=np.full((3, 2), np.nan)))


# -- domain_scorer: a validator as a scikit-learn scorer ------------------------------------------------
def _fitted_logreg(seed: int = 0) -> tuple[object, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    Xs = rng.normal(size=(120, 3))
    ys = np.where(Xs[:, 0] + 0.3 * rng.normal(size=120) > 0, "pos", "neg")
    Xt = rng.normal(size=(80, 3)) + 0.5
    return LogisticRegression().fit(Xs, ys), Xs, ys, Xt


def test_domain_scorer_is_the_validator_on_the_estimator_outputs() -> None:
    clf, Xs, ys, Xt = _fitted_logreg()
    target = Candidate("t", np.log(clf.predict_proba(Xt)))
    for name in ("snd", "entropy", "info_max"):
        assert domain_scorer(Xt, name)(clf, Xs, ys) == pytest.approx(VALIDATORS[name][0](target))
    # held-out labels are matched to classes_ (strings here): source_accuracy is the fold's accuracy
    assert domain_scorer(Xt, "source_accuracy")(clf, Xs[:40], ys[:40]) == pytest.approx(clf.score(Xs[:40], ys[:40]))


def test_domain_scorer_guards_against_collapse_and_checks_its_inputs() -> None:
    from sklearn.dummy import DummyClassifier

    clf, Xs, ys, Xt = _fitted_logreg()
    constant = DummyClassifier(strategy="most_frequent").fit(Xs, ys)  # every target item in one class
    assert domain_scorer(Xt, "source_accuracy")(constant, Xs, ys) == float("-inf")
    assert domain_scorer(Xt, "source_accuracy", guard=False)(constant, Xs, ys) == pytest.approx(constant.score(Xs, ys))
    with pytest.raises(ConfigError, match="unknown validator"):
        domain_scorer(Xt, "accuracy")
    with pytest.raises(DataError, match="transform"):  # iwcv/dev read features; a LogisticRegression has none
        domain_scorer(Xt, "dev")(clf, Xs, ys)
    with pytest.raises(DataError, match="not among the classes"):
        domain_scorer(Xt, "source_accuracy")(clf, Xs[:3], ["pos", "neg", "maybe"])
    assert "validator='snd'" in repr(domain_scorer(Xt)) and "80 items" in repr(domain_scorer(Xt))
