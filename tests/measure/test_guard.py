"""The negative-transfer guard: its rule on hand-made candidates, and its fallback inside `fit`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from transferkit.config import parse_config
from transferkit.experiment import fit
from transferkit.measure.guard import guard_decision
from transferkit.measure.selection import Candidate

Y = np.arange(40) % 4
GOOD = np.eye(4)[Y] * 5.0  # right on every item, classes used evenly


def _cand(name: str, target: np.ndarray, val: np.ndarray = GOOD) -> Candidate:
    return Candidate(name, target, val, Y)


def test_keeps_the_adapted_model_without_a_sign_of_negative_transfer() -> None:
    d = guard_decision(_cand("source-only", GOOD), _cand("adapted", GOOD))
    assert d.keep == "adapted" and d.reasons == []
    assert d.numbers["source_val_accuracy"] == {"source-only": 1.0, "adapted": 1.0}


def test_falls_back_when_the_adapted_target_predictions_collapse() -> None:
    collapsed = np.tile([9.0, 0, 0, 0], (40, 1))
    d = guard_decision(_cand("source-only", GOOD), _cand("adapted", collapsed))
    assert d.keep == "source-only" and "collapsed" in d.reasons[0]
    # both collapsed: nothing to prefer on this count
    assert guard_decision(_cand("source-only", collapsed), _cand("adapted", collapsed)).keep == "adapted"


def test_falls_back_when_adaptation_costs_source_accuracy() -> None:
    worse = GOOD.copy()
    worse[:4] = np.roll(worse[:4], 1, axis=1)  # 4 of 40 wrong: 10 points lost
    d = guard_decision(_cand("source-only", GOOD), _cand("adapted", GOOD, worse))
    assert d.keep == "source-only" and "10.0 points" in d.reasons[0]
    assert guard_decision(_cand("s", GOOD), _cand("a", GOOD, worse), max_source_drop=0.2).keep == "adapted"


def test_optional_validator_must_agree() -> None:
    confident, unsure = GOOD, GOOD / 10
    d = guard_decision(_cand("source-only", confident), _cand("adapted", unsure), validator="entropy")
    assert d.keep == "source-only" and "entropy" in d.reasons[0]
    assert d.numbers["validator"]["name"] == "entropy"


def _two_blobs(path: Path, shift: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    x = (rng.normal(size=(200, 4)) + 3.0 * y[:, None] + shift).astype(np.float32)
    np.savez(path, x_train=x[:150], y_train=y[:150], x_test=x[150:], y_test=y[150:], classes=np.array(["a", "b"]))
    return path


def _fit(tmp_path: Path, weight: float, guard: bool) -> dict:
    src = _two_blobs(tmp_path / "s.npz", 0.0, 0)
    tgt = _two_blobs(tmp_path / "t.npz", 1.0, 1)
    cfg = parse_config({
        "name": f"w{weight}-{guard}", "output_dir": str(tmp_path / "runs"),
        "data": {"source": str(src), "target": str(tgt), "batch_size": 32},
        # standardize none: the collapse these tests provoke needs the raw domain gap
        "model": {"backbone": "mlp", "backbone_kwargs": {"hidden": 16, "depth": 1, "standardize": "none"}},
        "adapt": {"method": "entropy", "weight": weight, "guard": guard},
        "train": {"epochs": 15, "lr": 0.01, "device": "cpu"},
    })
    return fit(cfg, progress=False)["per_seed"][0]


@pytest.mark.parametrize("guard", [True, False])
def test_fit_falls_back_to_source_only_when_a_huge_lambda_collapses_the_target(tmp_path: Path, guard: bool) -> None:
    report = _fit(tmp_path, weight=1000.0, guard=guard)
    ev = report["evaluations"]
    if not guard:
        assert "guard" not in report and set(ev) == {"source", "target"}
        return
    assert report["guard"]["keep"] == "source-only", report["guard"]
    gap = report["guard"]["gap"]
    assert set(gap) == {"source-only", "adapted"} and set(gap["adapted"]) == {"mmd2", "proxy_a"}
    assert ev["target"]["accuracy"] == ev["target_source_only"]["accuracy"] > ev["target_adapted"]["accuracy"]
    md = (tmp_path / "runs" / "w1000.0-True" / "report.md").read_text()
    assert "Negative-transfer guard" in md and "kept **source-only**" in md and "MMD²" in md


def test_confident_flips_count_only_the_source_only_models_surest_items() -> None:
    from transferkit.measure.guard import confident_flips

    # source-only: items 0-4 sure (class 0), items 5-9 unsure (class 0 by a hair)
    s = np.array([[5.0, 0.0]] * 5 + [[0.1, 0.0]] * 5)
    relabel_unsure = np.array([[5.0, 0.0]] * 5 + [[0.0, 5.0]] * 5)
    relabel_sure = np.array([[0.0, 5.0]] * 2 + [[5.0, 0.0]] * 8)
    assert confident_flips(s, relabel_unsure) == 0.0  # correcting where it was unsure is what adaptation is for
    assert confident_flips(s, relabel_sure) == pytest.approx(0.4)  # 2 of the 5 surest
    assert confident_flips(s, relabel_sure, share=0.2) == pytest.approx(1.0)


def test_falls_back_when_adaptation_widens_the_domain_gap() -> None:
    rng = np.random.default_rng(0)
    src = rng.normal(size=(40, 3))
    near = src + rng.normal(size=(40, 3)) * 0.01
    s = Candidate("source-only", GOOD, GOOD, Y, source_val_features=src, target_features=near)
    a = Candidate("adapted", GOOD, GOOD, Y, source_val_features=src, target_features=src + 3.0)  # pushed apart
    d = guard_decision(s, a, gap_alpha=0.05)
    assert d.keep == "source-only" and "widened the domain gap" in d.reasons[0]
    assert d.numbers["gap"]["adapted"]["mmd2"]["value"] > d.numbers["gap"]["source-only"]["mmd2"]["value"]
    assert guard_decision(s, a).keep == "adapted"  # off by default: measured and recorded only
    assert guard_decision(s, a).numbers["rules"]["gap"] is True
    # the other way round (adaptation closed the gap) is what adaptation is for
    assert guard_decision(Candidate("source-only", GOOD, GOOD, Y, source_val_features=src, target_features=src + 3.0),
                          Candidate("adapted", GOOD, GOOD, Y, source_val_features=src, target_features=src)).keep \
        == "adapted"


def _onehot(labels: np.ndarray, classes: int = 10) -> np.ndarray:
    return np.eye(classes)[labels] * 6.0


def test_falls_back_when_adaptation_fills_classes_the_target_lacks() -> None:
    y = np.arange(200) % 5  # a target with digits 0-4 only, which source-only sees
    val = _onehot(np.arange(100) % 10)
    spread = y.copy()
    spread[::4] += 5  # adaptation moves a quarter of the target into the absent classes 5-9
    s = Candidate("source-only", _onehot(y), val, np.arange(100) % 10)
    d = guard_decision(s, Candidate("adapted", _onehot(spread), val, np.arange(100) % 10), absent_weight=0.1)
    assert d.keep == "source-only" and "absent" in d.reasons[0]
    assert d.numbers["absent_classes"]["classes"] == [5, 6, 7, 8, 9]
    assert d.numbers["absent_classes"]["adapted_share"] == pytest.approx(0.25)
    assert d.numbers["absent_classes"]["limit"] == pytest.approx(0.2)
    assert guard_decision(s, Candidate("adapted", _onehot(spread), val, np.arange(100) % 10),
                          absent_weight=None, flip_check=False).keep == "adapted"


def test_the_absent_class_rule_is_off_unless_asked_for() -> None:
    y = np.arange(200) % 5
    spread = y.copy()
    spread[::4] += 5
    val = _onehot(np.arange(100) % 10)
    d = guard_decision(Candidate("source-only", _onehot(y), val, np.arange(100) % 10),
                       Candidate("adapted", _onehot(spread), val, np.arange(100) % 10), flip_check=False)
    assert d.keep == "adapted" and not d.reasons
    assert d.numbers["absent_classes"]["classes"] == [5, 6, 7, 8, 9]  # measured and recorded, to be re-judged


def test_finding_one_class_the_source_only_model_missed_is_kept() -> None:
    y = np.arange(200) % 10
    missed = np.where(y == 9, 8, y)  # source-only never predicts 9
    val = _onehot(np.arange(100) % 10)
    d = guard_decision(Candidate("source-only", _onehot(missed), val, np.arange(100) % 10),
                       Candidate("adapted", _onehot(y), val, np.arange(100) % 10), flip_check=False,
                       absent_weight=0.1)
    assert d.numbers["absent_classes"]["classes"] == [9]
    assert d.keep == "adapted"  # 10% into class 9: one class's even share among 9 present (11.1%) is not exceeded


def _binary(margins: np.ndarray) -> np.ndarray:
    return np.stack([margins, -margins], axis=1)


def test_atc_estimates_error_from_source_validation_confidence() -> None:
    from transferkit.measure.guard import atc_error

    val_margins = np.r_[np.full(80, 3.0), np.full(20, 0.2)]  # the 20% least sure are the wrong ones
    val_labels = np.r_[np.zeros(80, int), np.ones(20, int)]
    target = _binary(np.r_[np.full(60, 3.0), np.full(40, 0.1)])  # 40% of the target is as unsure as those
    c = Candidate("source-only", target, _binary(val_margins), val_labels)
    assert atc_error(c) == pytest.approx(0.4)


def test_falls_back_when_adaptation_overwrites_the_sure_answers() -> None:
    from transferkit.measure.guard import atc_error

    val_labels = np.r_[np.zeros(90, int), np.ones(10, int)]
    val = _binary(np.r_[np.full(90, 3.0), np.full(10, 0.2)])  # 10% wrong, all of them unsure
    margins = np.r_[np.full(80, 3.0), np.full(20, 0.1)]  # 20% of the target as unsure as those: ATC error 0.2
    s = Candidate("source-only", _binary(margins), val, val_labels)
    assert atc_error(s) == pytest.approx(0.2)
    fixes_unsure = _binary(np.r_[np.full(80, 3.0), np.full(20, -3.0)])  # relabels the unsure fifth only
    assert guard_decision(s, Candidate("adapted", fixes_unsure, val, val_labels)).keep == "adapted"
    overwrites = _binary(np.r_[np.full(15, -3.0), np.full(65, 3.0), np.full(20, 0.1)])  # 15 of the surest 50
    d = guard_decision(s, Candidate("adapted", overwrites, val, val_labels))
    assert d.keep == "source-only" and "surest" in d.reasons[0]
    sure = d.numbers["sure_half"]
    assert sure["relabelled"] == pytest.approx(0.3) and sure["source_only_error_estimate"] == pytest.approx(0.2)
    assert guard_decision(s, Candidate("adapted", overwrites, val, val_labels), flip_check=False).keep == "adapted"


def test_the_gap_rule_needs_features() -> None:
    d = guard_decision(_cand("source-only", GOOD), _cand("adapted", GOOD))
    assert d.keep == "adapted" and "gap" not in d.numbers


def test_signals_pair_the_two_models_on_the_same_items() -> None:
    from transferkit.measure.guard import guard_signals

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(40, 3))
    s = Candidate("source-only", GOOD, GOOD, Y, source_val_features=feats, target_features=feats + 1,
                  source_train_features=feats)
    a = Candidate("adapted", GOOD / 2, GOOD, Y, source_val_features=feats, target_features=feats,
                  source_train_features=feats)
    sig = guard_signals(s, a)
    assert sig["agreement"] == 1.0 and sig["confident_flips"]["top_0.5"] == 0.0
    assert sig["weighted_source_accuracy"] == {"source-only": 1.0, "adapted": 1.0}
    assert 0 < sig["weights_effective_share"] <= 1
    assert sig["entropy"]["source-only"] > sig["entropy"]["adapted"]  # halved logits: less sure on the target


def test_doc_sees_a_shift_that_atc_misses_and_the_rule_takes_the_larger() -> None:
    from transferkit.measure.guard import atc_error, doc_error, target_error_estimate

    # every validation item right, one of them barely: ATC's threshold is that item's confidence (0.525)
    val = _binary(np.r_[np.full(99, 3.0), 0.05])
    target = _binary(np.full(100, 0.5))  # confidence 0.731 on every target item: above the threshold
    c = Candidate("source-only", target, val, np.zeros(100, int))
    sig = lambda m: 1.0 / (1.0 + np.exp(-2.0 * m))  # noqa: E731  (the max softmax of [m, -m])
    assert atc_error(c) == 0.0
    assert doc_error(c) == pytest.approx((99 * sig(3.0) + sig(0.05)) / 100 - sig(0.5))  # 0 error + 0.262 drop
    assert target_error_estimate(c) == pytest.approx(doc_error(c))


def test_the_sure_answers_rule_with_doc_keeps_what_atc_alone_rejects() -> None:
    val = _binary(np.r_[np.full(99, 3.0), 0.05])
    so = Candidate("source-only", _binary(np.r_[np.full(50, 0.6), np.full(50, 0.5)]), val, np.zeros(100, int))
    flipped = np.r_[np.full(10, -2.0), np.full(40, 2.0), np.full(50, 2.0)]  # 10 of the surest 50 relabelled: 20%
    ad = Candidate("adapted", _binary(flipped), val, np.zeros(100, int))
    assert guard_decision(so, ad, error_estimate="atc").keep == "source-only"  # ATC: 0% error, 20% > 0%
    d = guard_decision(so, ad)  # DoC: ~25% error: relabelling 20% of the surest half overwrites nothing it must
    assert d.keep == "adapted" and d.numbers["sure_half"]["doc"] > 0.2 > d.numbers["sure_half"]["atc"]


def test_an_unknown_error_estimate_is_refused() -> None:
    y = np.arange(40) % 4
    c = Candidate("source-only", np.eye(4)[y] * 5, np.eye(4)[y] * 5, y)
    with pytest.raises(ValueError, match="error_estimate"):
        guard_decision(c, c, error_estimate="doc")
