"""LR multipliers (warm-up, cosine, step, constant) and loss-weight schedules at hand-computed points."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from transferkit.train.schedules import constant, dann_ramp, lr_multiplier


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 1.0),
        (25, 0.5 * (1 + math.cos(math.pi / 4))),
        (50, 0.5),
        (75, 0.5 * (1 + math.cos(3 * math.pi / 4))),
        (100, 0.0),
    ],
)
def test_cosine(step: int, expected: float) -> None:
    assert lr_multiplier("cosine", total_steps=100)(step) == pytest.approx(expected)


def test_cosine_is_clamped_past_the_end() -> None:
    f = lr_multiplier("cosine", total_steps=10)
    assert f(10) == pytest.approx(0.0) and f(15) == pytest.approx(0.0)


@pytest.mark.parametrize(("step", "expected"), [(0, 1.0), (49, 1.0), (50, 0.1), (74, 0.1), (75, 0.01), (99, 0.01)])
def test_step_divides_by_ten_at_half_and_three_quarters(step: int, expected: float) -> None:
    assert lr_multiplier("step", total_steps=100)(step) == pytest.approx(expected)


def test_constant() -> None:
    f = lr_multiplier("constant", total_steps=7)
    assert [f(s) for s in range(8)] == [1.0] * 8


def test_linear_warmup_then_cosine() -> None:
    f = lr_multiplier("cosine", total_steps=14, warmup_steps=4)
    assert [f(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    # after warm-up, the cosine runs over the remaining 10 steps
    assert f(4) == pytest.approx(1.0)
    assert f(9) == pytest.approx(0.5)
    assert f(14) == pytest.approx(0.0)


def test_warmup_then_constant_and_step() -> None:
    c = lr_multiplier("constant", total_steps=10, warmup_steps=2)
    assert [c(s) for s in range(4)] == pytest.approx([0.5, 1.0, 1.0, 1.0])
    s = lr_multiplier("step", total_steps=12, warmup_steps=2)  # 10 steps after warm-up: /10 at 5, /100 at 7.5
    assert [s(i) for i in (0, 1, 2, 6, 7, 9, 10)] == pytest.approx([0.5, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01])


def test_warmup_longer_than_training_is_capped() -> None:
    f = lr_multiplier("cosine", total_steps=3, warmup_steps=10)  # capped at total - 1 = 2 warm-up steps
    assert [f(s) for s in range(3)] == pytest.approx([0.5, 1.0, 1.0])


def test_unknown_kind_raises() -> None:
    with pytest.raises(ValueError, match="unknown scheduler 'linear'"):
        lr_multiplier("linear", total_steps=10)(3)


def test_multiplier_drives_lambda_lr() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_multiplier("cosine", total_steps=4, warmup_steps=1))
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # warm-up step 0 at full LR (1/1), then cosine over 3 steps: t = 0, 1/3, 2/3
    assert lrs == pytest.approx([0.2, 0.2, 0.2 * 0.75, 0.2 * 0.25])


# -- loss weights ------------------------------------------------------------------------------
def test_constant_weight() -> None:
    w = constant(0.3)
    assert w(0.0) == w(0.5) == w(1.0) == 0.3


def test_dann_ramp() -> None:
    r = dann_ramp()
    assert r(0.0) == 0.0
    ps = [i / 100 for i in range(101)]
    values = [r(p) for p in ps]
    assert all(b > a for a, b in itertools.pairwise(values))  # strictly increasing
    assert r(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert r(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert 0.9999 < r(1.0) < 1.0  # -> max
    scaled = dann_ramp(max_value=0.1, gamma=10.0)
    assert scaled(0.0) == 0.0 and scaled(1.0) == pytest.approx(0.1 * r(1.0))
    assert dann_ramp(gamma=1.0)(1.0) == pytest.approx(2 / (1 + math.exp(-1)) - 1)
