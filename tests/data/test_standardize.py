"""Per-domain standardisation of feature vectors: by hand, the automatic rule, and through fit, evaluate and a saved
model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.config import parse_config
from transferkit.data.domain import DomainDataset
from transferkit.data.standardize import align_to, auto_mode, statistics
from transferkit.experiment import fit
from transferkit.models.heads import TransferModel


def test_statistics_and_alignment_by_hand() -> None:
    source = np.array([[0.0, 1.0], [2.0, 1.0]], np.float32)  # mean (1, 1), std (1, 0 -> 1: constant)
    mean, std = statistics(source)
    assert mean.tolist() == [1.0, 1.0] and std.tolist() == [1.0, 1.0]
    target = DomainDataset(np.array([[10.0, 5.0], [30.0, 7.0]], np.float32), None, "t", [], "vector")
    aligned = align_to(target, mean, std)
    # the target's own mean (20, 6) and std (10, 1) map onto the source's: (x - 20) / 10 * 1 + 1, (x - 6) / 1 * 1 + 1
    assert aligned.inputs.tolist() == [[0.0, 0.0], [2.0, 2.0]]
    assert aligned.meta["standardized"] == "per-domain" and target.inputs[0, 0] == 10.0  # the original is kept
    one = DomainDataset(np.array([[3.0, 3.0]], np.float32), None, "t", [], "vector")
    assert align_to(one, mean, std) is one  # one item has no statistics of its own


def test_the_automatic_rule_leaves_sparse_counts_alone() -> None:
    dense = np.random.default_rng(0).normal(size=(50, 8))
    counts = np.zeros((50, 100))
    counts[np.arange(50), np.arange(50) % 100] = 3  # 99 % zeros, like bag-of-words counts
    assert auto_mode(dense)[0] == "per-domain"
    mode, why = auto_mode(counts)
    assert mode == "none" and "99% zeros" in why


def _domains(tmp_path: Path) -> tuple[Path, Path]:
    """Two classes; the target is the source's distribution scaled by 10 and moved by 50 in every feature."""
    rng = np.random.default_rng(0)

    def draw(n: int, scale: float, shift: float) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % 2
        x = rng.normal(size=(n, 6)) + 1.5 * (2 * y[:, None] - 1)
        return (x * scale + shift).astype(np.float32), y

    paths = []
    for name, scale, shift in (("s", 1.0, 0.0), ("t", 10.0, 50.0)):
        (xtr, ytr), (xte, yte) = draw(200, scale, shift), draw(100, scale, shift)
        np.savez(tmp_path / f"{name}.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
        paths.append(tmp_path / f"{name}.npz")
    return paths[0], paths[1]


@pytest.mark.parametrize(("standardize", "good"), [(None, True), ("none", False)])
def test_source_only_reads_a_rescaled_target_when_each_domain_is_standardised(
    tmp_path: Path, standardize: str | None, good: bool
) -> None:
    source, target = _domains(tmp_path)
    kwargs = {"hidden": 16, "depth": 1, **({"standardize": standardize} if standardize else {})}
    cfg = parse_config({"name": "z", "output_dir": str(tmp_path / "runs"),
                        "data": {"source": str(source), "target": str(target)},
                        "model": {"backbone": "mlp", "backbone_kwargs": kwargs}, "train": {"steps": 100}})
    report = fit(cfg, progress=False)
    acc = report["summary"]["target"]["accuracy"]["mean"]
    if good:
        assert acc > 0.9 and report["standardize"].startswith("per-domain (auto: dense features")
    else:
        assert acc < 0.8 and report["standardize"].startswith("none")
    saved = TransferModel.load(tmp_path / "runs" / "z" / "model.safetensors")
    assert saved.backbone.kwargs.get("standardize", "none") == ("per-domain" if good else "none")
    if good:  # `evaluate` on the target standardises it by its own statistics, as fit scored it
        result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "runs" / "z"), "--data", str(target)])
        assert result.exit_code == 0, result.output
        written = json.loads((tmp_path / "runs" / "z" / "evaluations" / "t.npz-test.json").read_text())
        assert written["accuracy"] == pytest.approx(acc)
