"""The method registry: every method builds, runs through the engine, and refuses bad options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferkit.adapt.methods import build_method, list_methods
from transferkit.config import TrainConfig
from transferkit.data.domain import DomainDataset
from transferkit.errors import ConfigError
from transferkit.models.backbones import create_backbone
from transferkit.models.heads import TransferModel
from transferkit.train.engine import Engine, StepOutputs, source_cross_entropy

METHODS = sorted(list_methods())


def test_registry_lists_the_methods_of_the_issue() -> None:
    assert set(METHODS) >= {"dan", "jan", "coral", "dann", "cdan", "cdan+e", "mcc", "mdd", "afn", "bnm", "entropy",
                            "self-training"}
    for spec in list_methods().values():
        assert spec.summary and spec.reference


@pytest.mark.parametrize("name", METHODS)
def test_reads_classes_says_whether_the_loss_reads_the_predictions(name: str) -> None:
    """The flag a regression head is refused by (and what a new method must set), checked on the loss itself: does
    its value change when only the class predictions do? (CDAN and MDD read them without a gradient through them.)"""
    torch.manual_seed(0)
    (term,) = build_method(name, feature_dim=8, num_classes=3)
    if term.module is not None:
        term.module.eval()  # no dropout: the two calls differ only by their logits
    fs, ft = torch.randn(6, 8), torch.randn(6, 8)
    y = torch.tensor([0, 1, 2, 0, 1, 2])

    def loss(logits: torch.Tensor) -> float:
        with torch.no_grad():
            return float(term.fn(StepOutputs(fs, logits[:6], y, ft, logits[6:], progress=0.5)))

    a, b = torch.randn(12, 3) * 5, torch.randn(12, 3) * 5
    assert list_methods()[name].reads_classes == (loss(a) != loss(b))


@pytest.mark.parametrize("name", METHODS)
def test_each_method_gives_a_finite_differentiable_loss(name: str) -> None:
    torch.manual_seed(0)
    (term,) = build_method(name, feature_dim=8, num_classes=3)
    fs, ft = torch.randn(6, 8, requires_grad=True), torch.randn(6, 8, requires_grad=True)
    ls = (torch.randn(6, 3) * 5).requires_grad_()
    lt = (torch.randn(6, 3) * 5).requires_grad_()  # confident enough for self-training to pick pseudo-labels
    out = StepOutputs(fs, ls, torch.tensor([0, 1, 2, 0, 1, 2]), ft, lt, progress=0.5)
    if term.module is not None:
        term.module.train()
    value = term.fn(out)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    grads = [t.grad for t in (fs, ft, ls, lt) if t.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)


def test_bad_method_options_and_weights() -> None:
    with pytest.raises(ConfigError, match="unknown method"):
        build_method("dannn", 4, 2)
    with pytest.raises(ConfigError, match="no option"):
        build_method("dann", 4, 2, options={"temperature": 2})
    with pytest.raises(ConfigError, match=">= 0"):
        build_method("dann", 4, 2, weight=-1.0)
    assert build_method("none", 4, 2) == []


def test_ramp_schedule_weights_progress() -> None:
    (term,) = build_method("coral", 4, 2, weight=2.0, schedule="ramp")
    assert term.weight_at(0.0) == 0.0
    assert 1.9 < term.weight_at(1.0) <= 2.0


def test_needs_target_batches() -> None:
    (term,) = build_method("mcc", 4, 2)
    out = StepOutputs(torch.randn(4, 4), torch.randn(4, 2), torch.tensor([0, 1, 0, 1]), None, None, 0.0)
    with pytest.raises(ConfigError, match="target"):
        term.fn(out)


def test_dann_discriminator_is_trained_by_the_engine() -> None:
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(64, 4)).astype(np.float32)
    xt = (rng.normal(size=(64, 4)) + 1.0).astype(np.float32)
    src = DomainDataset(xs, (xs[:, 0] > 0).astype(int), "s", ["a", "b"], "vector")
    tgt = DomainDataset(xt, None, "t", ["a", "b"], "vector")
    model = TransferModel(create_backbone("mlp", in_features=4, hidden=8), src.classes)
    terms = [source_cross_entropy(), *build_method("dann", model.feature_dim, 2, options={"hidden": 16})]
    disc = terms[1].module
    before = [p.detach().clone() for p in disc.parameters()]
    Engine(model, TrainConfig(epochs=2, lr=1e-2), loss_terms=terms, batch_size=16, progress=False).fit(src, target=tgt)
    assert any(not torch.equal(b, p) for b, p in zip(before, disc.parameters(), strict=True))


class _Recorder(torch.nn.Module):
    """A classifier of 1x4x4 images that records what it was called with."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(16, 3)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen.append(x)
        f = x.flatten(1)
        return f, self.fc(f) * 20


def _masked_ce(logits: torch.Tensor, weak: torch.Tensor, threshold: float = 0.9) -> torch.Tensor:
    """Cross-entropy towards the weak view's argmax, counting only its confident items (mean over all)."""
    conf, pseudo = weak.softmax(1).max(1)
    ce = torch.nn.functional.cross_entropy(logits, pseudo, reduction="none")
    return (ce * (conf >= threshold)).sum() / len(weak)


def test_self_training_learns_on_a_strong_view_of_image_batches() -> None:
    torch.manual_seed(0)
    model = _Recorder()
    xt = torch.randn(5, 1, 4, 4)
    ft, lt = model(xt)
    (term,) = build_method("self-training", feature_dim=16, num_classes=3)
    out = StepOutputs(ft, lt, torch.zeros(5, dtype=torch.long), ft, lt, 0.5, target_inputs=xt, model=model)
    value = term.fn(out)
    assert 0 < int((lt.softmax(1).max(1).values >= 0.9).sum()) < 5  # some pseudo-labels pass, some do not
    assert len(model.seen) == 2 and model.seen[1].shape == xt.shape and not torch.equal(model.seen[1], xt)
    # the pseudo-labels come from the weak view: the loss is the cross-entropy of the strong view towards them
    strong_logits = model.fc(model.seen[1].flatten(1)) * 20
    assert torch.allclose(value, _masked_ce(strong_logits, lt))


def test_self_training_without_strong_views_or_on_vectors_uses_the_step_logits() -> None:
    torch.manual_seed(0)
    model = _Recorder()
    xt = torch.randn(5, 1, 4, 4)
    ft, lt = model(xt)
    plain = _masked_ce(lt, lt)
    (off,) = build_method("self-training", feature_dim=16, num_classes=3, options={"strong_views": False})
    out = StepOutputs(ft, lt, torch.zeros(5, dtype=torch.long), ft, lt, 0.5, target_inputs=xt, model=model)
    assert torch.allclose(off.fn(out), plain) and len(model.seen) == 1
    (on,) = build_method("self-training", feature_dim=16, num_classes=3)
    vectors = StepOutputs(ft, lt, torch.zeros(5, dtype=torch.long), ft, lt, 0.5, target_inputs=ft, model=model)
    assert torch.allclose(on.fn(vectors), plain) and len(model.seen) == 1  # no augmentation for vectors


def test_a_discriminators_auto_width_is_twice_its_input_within_256_to_1024() -> None:
    from transferkit.adapt.methods import hidden_width

    assert [hidden_width("auto", d) for d in (64, 256, 500, 4096)] == [256, 512, 1000, 1024]
    assert hidden_width(64, 500) == 64  # a number fixes it
    terms = build_method("dann", 256, 2)
    disc = next(t.module for t in terms if t.module is not None)
    widths = [m.out_features for m in disc.modules() if isinstance(m, torch.nn.Linear)]
    assert widths[:2] == [512, 512]
    with pytest.raises(ConfigError, match="'auto' or an integer"):
        build_method("dann", 256, 2, options={"hidden": "wide"})
