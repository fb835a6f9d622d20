"""Every adaptation loss against a value computed by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from transferkit.adapt.losses import (
    RandomizedMultilinearMap,
    afn_loss,
    bnm_loss,
    coral_loss,
    domain_accuracy,
    domain_bce,
    entropy_loss,
    entropy_weights,
    grad_reverse,
    jmmd2_unbiased,
    mcc_loss,
    mdd_loss,
    mmd2_linear,
    mmd2_unbiased,
    multilinear_map,
)


def test_mmd_unbiased_hand_computed() -> None:
    # pooled 1-D points 0, 1 | 2, 4: the lower median of the off-diagonal squared distances is 4 = σ²
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[2.0], [4.0]])
    expected = math.exp(-1.0) - math.exp(-4.0)  # k(0,1) + k(2,4) - [k(0,4) + k(1,2)], see the test's derivation
    assert float(mmd2_unbiased(x, y, num_kernels=1)) == pytest.approx(expected, rel=1e-6)


def test_mmd_of_a_set_with_itself_is_zero_and_grows_with_shift() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=g)
    assert float(mmd2_unbiased(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(mmd2_linear(x, x)) == pytest.approx(0.0, abs=1e-6)
    near = float(mmd2_unbiased(x, torch.randn(40, 5, generator=g)))
    far = float(mmd2_unbiased(x, torch.randn(40, 5, generator=g) + 3.0))
    assert far > 10 * abs(near)
    assert float(mmd2_linear(x, torch.randn(40, 5, generator=g) + 3.0)) > 0.1


def test_mmd_unequal_sizes_and_symmetry() -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(30, 3, generator=g), torch.randn(20, 3, generator=g) + 1
    assert float(mmd2_unbiased(x, y)) == pytest.approx(float(mmd2_unbiased(y, x)), rel=1e-5)
    with pytest.raises(ValueError):
        mmd2_unbiased(x[:1], y)


def test_jmmd_reduces_to_mmd_for_one_layer_and_is_zero_on_itself() -> None:
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(16, 4, generator=g), torch.randn(16, 4, generator=g) + 1
    assert float(jmmd2_unbiased([x], [y])) == pytest.approx(float(mmd2_unbiased(x, y)), rel=1e-5)
    p = torch.randn(16, 3, generator=g).softmax(1)
    assert float(jmmd2_unbiased([x, p], [x, p])) == pytest.approx(0.0, abs=1e-6)


def test_coral_hand_computed_and_zero_for_equal_covariance() -> None:
    xs = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # covariance diag(2, 0)
    xt = torch.tensor([[0.0, 1.0], [0.0, -1.0]])  # covariance diag(0, 2)
    assert float(coral_loss(xs, xt)) == pytest.approx(8.0 / 16.0)  # ||diag(2, -2)||² / (4 d²)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(20, 3, generator=g)
    assert float(coral_loss(x, x - 7.0)) == pytest.approx(0.0, abs=1e-6)


def test_grad_reverse_flips_and_scales() -> None:
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    y = grad_reverse(x, 0.3)
    assert torch.equal(y, x)
    (y * torch.tensor([2.0, 5.0])).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([-0.6, -1.5]))


def test_domain_bce_and_accuracy() -> None:
    zero = torch.zeros(4)
    assert float(domain_bce(zero, zero)) == pytest.approx(math.log(2.0))
    assert domain_accuracy(torch.tensor([1.0, 2.0]), torch.tensor([-1.0, 3.0])) == 0.75
    w = torch.tensor([2.0, 0.0, 0.0, 0.0])
    assert float(domain_bce(zero, zero, w, w)) == pytest.approx(0.5 * math.log(2.0))


def test_cdan_conditioning_shapes_and_values() -> None:
    f = torch.tensor([[1.0, 2.0]])
    g = torch.tensor([[0.25, 0.75]])
    out = multilinear_map(f, g)
    assert out.shape == (1, 4)
    assert torch.allclose(out, torch.tensor([[0.25, 0.5, 0.75, 1.5]]))  # g_i * f_j, row-major over classes
    rmm = RandomizedMultilinearMap(500, 10, 1024)
    assert rmm(torch.randn(8, 500), torch.randn(8, 10).softmax(1)).shape == (8, 1024)


def test_entropy_weights_favour_certain_samples() -> None:
    logits = torch.tensor([[10.0, 0.0], [0.0, 0.0]])
    w = entropy_weights(logits)
    assert w.mean() == pytest.approx(1.0) and w[0] > w[1]


def test_entropy_bnm_mcc_afn_hand_values() -> None:
    assert float(entropy_loss(torch.zeros(3, 4))) == pytest.approx(math.log(4.0))
    confident = torch.eye(3) * 50.0  # one-hot, diverse predictions
    assert float(bnm_loss(confident)) == pytest.approx(-1.0, abs=1e-4)  # nuclear norm 3 over 3 samples
    # uniform: rank one, its only singular value is the Frobenius norm sqrt(9 / 9) = 1
    assert float(bnm_loss(torch.zeros(3, 3))) == pytest.approx(-1.0 / 3.0, abs=1e-5)
    assert float(mcc_loss(confident * 10)) == pytest.approx(0.0, abs=1e-4)
    # uniform predictions: every row of the class-correlation matrix is uniform, off-diagonal mass (c-1)/c
    assert float(mcc_loss(torch.zeros(6, 4))) == pytest.approx(3.0 / 4.0, abs=1e-5)
    feats = torch.tensor([[3.0, 0.0], [0.0, 4.0]], requires_grad=True)
    loss = afn_loss(feats, delta=1.0)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert (feats.grad[0, 0] < 0) and (feats.grad[1, 1] < 0)  # descending the loss grows the norms


def test_mdd_adversary_learns_to_agree_on_source_and_disagree_on_target() -> None:
    # minimising the loss over the adversary's logits must raise p'(ŷ_s) and lower p'(ŷ_t)
    logits_s, logits_t = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    adv_s = torch.zeros(1, 2, requires_grad=True)
    adv_t = torch.zeros(1, 2, requires_grad=True)
    mdd_loss(logits_s, adv_s, logits_t, adv_t).backward()
    assert adv_s.grad[0, 0] < 0  # descent raises the logit of the source prediction (class 0)
    assert adv_t.grad[0, 1] > 0  # descent lowers the logit of the target prediction (class 1)


def test_mdd_hand_computed() -> None:
    logits_s = torch.tensor([[2.0, 0.0]])  # predicted class 0
    adv_s = torch.tensor([[0.0, 0.0]])  # CE against class 0 = log 2
    logits_t = torch.tensor([[0.0, 3.0]])  # predicted class 1
    adv_t = torch.tensor([[0.0, 0.0]])  # p'(1) = 0.5 -> -log(1 - 0.5) = log 2
    expected = 4 * math.log(2) + math.log(2)
    assert float(mdd_loss(logits_s, adv_s, logits_t, adv_t, margin=4.0)) == pytest.approx(expected)
