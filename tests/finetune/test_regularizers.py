"""L2-SP and BSS against hand-computed values, and through a whole run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.finetune.regularizers import batch_spectral_shrinkage, bss, l2_sp
from transferkit.train.engine import StepOutputs


def test_l2_sp_is_the_distance_from_the_start_plus_decay_of_the_head() -> None:
    torch.manual_seed(0)
    backbone, head = nn.Linear(3, 2), nn.Linear(2, 2)
    term = l2_sp(backbone, head, alpha=0.1, beta=0.01)
    start = [p.detach().clone() for p in backbone.parameters()]
    with torch.no_grad():
        backbone.weight.add_(torch.tensor([[1.0, 0.0, 2.0], [0.0, -1.0, 0.0]]))  # squared distance 6
    decay = sum(float((p.detach() ** 2).sum()) for p in head.parameters())
    loss = term.fn(None)
    assert float(loss.detach()) == pytest.approx(0.5 * 0.1 * 6 + 0.5 * 0.01 * decay, rel=1e-5)
    loss.backward()  # gradient alpha * (w - w0): pulls back towards the start, not towards zero
    expected = 0.1 * (backbone.weight.detach() - start[0])
    assert torch.allclose(backbone.weight.grad, expected, atol=1e-6)
    assert torch.allclose(backbone.bias.grad, torch.zeros(2))


def test_l2_sp_ignores_frozen_weights() -> None:
    backbone, head = nn.Linear(3, 2), nn.Linear(2, 2)
    backbone.weight.requires_grad_(False)
    term = l2_sp(backbone, head, alpha=1.0, beta=0.0)
    with torch.no_grad():
        backbone.weight.add_(1.0)
    assert float(term.fn(None)) == 0.0


def test_bss_sums_the_smallest_squared_singular_values() -> None:
    # rotate diag(3, 2, 1) so the singular values are not read off the diagonal
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0)))
    features = torch.diag(torch.tensor([3.0, 2.0, 1.0])) @ q
    assert float(batch_spectral_shrinkage(features, 1)) == pytest.approx(1.0, rel=1e-4)
    assert float(batch_spectral_shrinkage(features, 2)) == pytest.approx(5.0, rel=1e-4)
    assert float(batch_spectral_shrinkage(features, 10)) == pytest.approx(14.0, rel=1e-4)  # k capped at rank
    out = StepOutputs(features, torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), None, None, 0.0)
    assert float(bss(0.5, 1).fn(out)) == pytest.approx(1.0, rel=1e-4)  # the term's weight is applied by the engine


def _npz(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    x = (rng.normal(size=(80, 6)) + 2.0 * y[:, None]).astype(np.float32)
    path = tmp_path / "toy.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x[:20], y_test=y[:20], classes=np.array(["neg", "pos"]))
    return path


def test_fit_with_both_regularizers_logs_their_losses(tmp_path: Path) -> None:
    data = _npz(tmp_path)
    result = CliRunner().invoke(app, [
        "fit", "--source", str(data), "--target", str(data), "--backbone", "mlp", "--set", "train.steps=10",
        "--set", "finetune.regularizers=[l2-sp, bss]", "--set", "data.target_labels_per_class=3",
        "--name", "reg", "--output-dir", str(tmp_path / "runs"), "--no-progress"])
    assert result.exit_code == 0, result.output
    first = json.loads((tmp_path / "runs" / "reg" / "metrics.jsonl").read_text().splitlines()[0])
    assert "loss/l2_sp" in first and "loss/bss" in first


def test_an_unknown_regularizer_exits_2(tmp_path: Path) -> None:
    data = _npz(tmp_path)
    result = CliRunner().invoke(app, ["fit", "--source", str(data), "--backbone", "mlp", "--set",
                                      "finetune.regularizers=[dropout]", "--name", "bad", "--output-dir",
                                      str(tmp_path / "runs"), "--no-progress"])
    assert result.exit_code == 2 and "regularizers" in result.output
