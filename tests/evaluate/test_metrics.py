"""Classification metrics against scikit-learn and a hand-computed ECE; mean ± std over seeds against numpy."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from transferkit.errors import DataError
from transferkit.evaluate.metrics import classification_metrics, format_mean_std, mean_std


def _random_case(n: int = 300, c: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randperm(n, generator=g) % c  # every class present
    logits = torch.randn(n, c, generator=g)
    logits[torch.arange(n), labels] += 1.0  # better than chance, far from perfect
    return logits, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accuracy_f1_and_confusion_match_sklearn(seed: int) -> None:
    logits, labels = _random_case(seed=seed)
    classes = [f"c{i}" for i in range(5)]
    m = classification_metrics(logits, labels, classes)
    y, p = labels.numpy(), logits.argmax(1).numpy()
    assert m["n"] == 300
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p), abs=1e-6)
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"), abs=1e-6)
    cm = confusion_matrix(y, p, labels=range(5))  # rows: true, columns: predicted
    assert m["confusion_matrix"] == cm.tolist()
    for i, name in enumerate(classes):
        assert m["per_class_accuracy"][name] == pytest.approx(cm[i, i] / cm[i].sum())
    assert 0.3 < m["accuracy"] < 0.9  # the case is neither trivial nor chance


def _ece_by_hand(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """15 equal-width bins of the max-prob confidence, |accuracy - confidence| weighted by the bin's share."""
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return ece


def test_ece_matches_a_hand_computed_value() -> None:
    # softmax(log p) = p, so the confidences are exactly these (none on a bin edge of 15 bins)
    probs = np.array(
        [
            [0.90, 0.05, 0.05],  # label 0: right, conf 0.90 (bin 13)
            [0.62, 0.28, 0.10],  # label 1: wrong, conf 0.62 (bin 9)
            [0.10, 0.70, 0.20],  # label 1: right, conf 0.70 (bin 10)
            [0.15, 0.20, 0.65],  # label 2: right, conf 0.65 (bin 9)
            [0.50, 0.45, 0.05],  # label 1: wrong, conf 0.50 (bin 7)
            [0.95, 0.03, 0.02],  # label 0: right, conf 0.95 (bin 14)
        ]
    )
    labels = np.array([0, 1, 1, 2, 1, 0])
    # bin 9: two items, acc 0.5, conf 0.635 -> 2 * 0.135; the other bins hold one item each
    expected = (2 * 0.135 + 0.10 + 0.30 + 0.50 + 0.05) / 6
    assert _ece_by_hand(probs, labels) == pytest.approx(expected)
    m = classification_metrics(torch.tensor(np.log(probs)), torch.tensor(labels), ["a", "b", "c"])
    assert m["ece"] == pytest.approx(expected, abs=1e-6)
    assert m["accuracy"] == pytest.approx(4 / 6)


def test_ece_on_random_data_matches_the_hand_binning() -> None:
    logits, labels = _random_case(n=500, c=4, seed=3)
    m = classification_metrics(logits, labels, list("abcd"))
    expected = _ece_by_hand(logits.softmax(1).double().numpy(), labels.numpy())
    assert m["ece"] == pytest.approx(expected, abs=1e-5)


def test_ece_bins_are_configurable() -> None:
    probs = np.array([[0.62, 0.38], [0.68, 0.32], [0.9, 0.1], [0.3, 0.7]])
    labels = np.array([0, 1, 0, 1])
    logits = torch.tensor(np.log(probs))
    one_bin = classification_metrics(logits, torch.tensor(labels), ["a", "b"], ece_bins=1)["ece"]
    # one bin: |3/4 - mean(0.62, 0.68, 0.9, 0.7)| = |0.75 - 0.725|
    assert one_bin == pytest.approx(0.025, abs=1e-6)
    assert classification_metrics(logits, torch.tensor(labels), ["a", "b"])["ece"] == pytest.approx(
        _ece_by_hand(probs, labels), abs=1e-6
    )


def test_absent_class_has_no_per_class_accuracy() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [3.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    m = classification_metrics(logits, torch.tensor([0, 1, 1, 1]), ["a", "b", "c"])
    assert m["per_class_accuracy"] == {"a": 1.0, "b": pytest.approx(2 / 3), "c": None}
    assert m["confusion_matrix"] == [[1, 0, 0], [1, 2, 0], [0, 0, 0]]
    # macro-F1 over the classes that occur (as scikit-learn does): F1(a) = 2/3, F1(b) = 4/5
    assert m["macro_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2, abs=1e-6)


@pytest.mark.parametrize(
    ("logits", "labels", "match"),
    [
        (torch.zeros(4, 3), torch.tensor([0, 1, 0, 1]), r"logits must have shape \(N, 2\), got \(4, 3\)"),
        (torch.zeros(4), torch.tensor([0, 1, 0, 1]), r"logits must have shape \(N, 2\), got \(4,\)"),
        (torch.zeros(4, 2), torch.tensor([0, 1, 0]), r"\(3,\) labels for 4 rows"),
        (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), "empty evaluation set"),
        (torch.zeros(3, 2), torch.tensor([0, -1, 1]), r"labels must lie in \[0, 1\]; unlabelled"),
        (torch.zeros(3, 2), torch.tensor([0, 2, 1]), r"labels must lie in \[0, 1\]"),
    ],
)
def test_bad_inputs_raise_data_error(logits: torch.Tensor, labels: torch.Tensor, match: str) -> None:
    with pytest.raises(DataError, match=match):
        classification_metrics(logits, labels, ["a", "b"])


# -- over seeds --------------------------------------------------------------------------------
@pytest.mark.parametrize("values", [[0.81, 0.84, 0.79], [1.0, 2.0], [0.5, 0.5, 0.5, 0.7]])
def test_mean_std_is_the_sample_std(values: list[float]) -> None:
    m, s = mean_std(values)
    assert m == pytest.approx(np.mean(values))
    assert s == pytest.approx(np.std(values, ddof=1))


def test_mean_std_edge_cases() -> None:
    assert mean_std([0.7]) == (0.7, 0.0)
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2.0)))
    with pytest.raises(ValueError, match="no values"):
        mean_std([])


def test_format_mean_std() -> None:
    assert format_mean_std([0.8123]) == "81.2"
    # mean 0.8, sample std 0.02 -> "80.0 ± 2.0"
    assert format_mean_std([0.78, 0.80, 0.82]) == "80.0 ± 2.0"
    assert format_mean_std([0.78, 0.80, 0.82], scale=1.0, digits=3) == "0.800 ± 0.020"
