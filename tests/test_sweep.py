"""The sweep's grid expansion and config overrides."""

import pytest

from transferkit.errors import ConfigError
from transferkit.sweep import _apply, expand_grid


def test_grid_is_the_product_with_aliases_and_parsed_values() -> None:
    grid = expand_grid(["method=dann,mcc", "lr=0.01", "data.batch_size=32,64"])
    assert len(grid) == 4
    assert grid[0] == {"adapt.method": "dann", "train.lr": 0.01, "data.batch_size": 32}
    assert grid[-1] == {"adapt.method": "mcc", "train.lr": 0.01, "data.batch_size": 64}


@pytest.mark.parametrize("item", ["method", "method=", "lambda= , "])
def test_grid_errors(item: str) -> None:
    with pytest.raises(ConfigError):
        expand_grid([item])


def test_apply_sets_nested_fields_and_refuses_unknown_ones() -> None:
    raw = {"adapt": {"method": "none", "weight": None}, "name": "x"}
    assert _apply(raw, {"adapt.weight": 0.3})["adapt"]["weight"] == 0.3
    for bad in ("adapt.nope", "nope.weight", "name.sub"):
        with pytest.raises(ConfigError, match="not a config field"):
            _apply({"adapt": {"method": "none"}, "name": "x"}, {bad: 1})


def test_ranges_parse_as_continuous_integer_or_log_axes() -> None:
    from transferkit.sweep import Range, parse_axes

    axes = dict(parse_axes(["lambda=0.01:1:log", "epochs=2:6", "method=dann,mcc"]))
    assert axes["adapt.weight"] == Range(0.01, 1.0, log=True, integer=False)
    assert axes["train.epochs"] == Range(2, 6, log=False, integer=True)
    assert axes["adapt.method"] == ["dann", "mcc"]


@pytest.mark.parametrize(("item", "needle"), [("lambda=1:0.1", "low < high"), ("lambda=0:1:log", "low > 0"),
                                              ("lambda=a:b", "numbers"), ("lambda=1:2:3", "low:high")])
def test_range_errors(item: str, needle: str) -> None:
    from transferkit.sweep import parse_axes

    with pytest.raises(ConfigError, match=needle):
        parse_axes([item])


def test_a_range_is_not_expanded_into_a_grid() -> None:
    with pytest.raises(ConfigError, match="trials"):
        expand_grid(["lambda=0.1:1"])


def test_suggestions_stay_inside_the_range() -> None:
    optuna = pytest.importorskip("optuna")
    from transferkit.sweep import Range

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        w, e = Range(0.01, 1.0, log=True).suggest(trial, "w"), Range(2, 6, integer=True).suggest(trial, "e")
        assert 0.01 <= w <= 1.0 and isinstance(e, int) and 2 <= e <= 6
        study.tell(trial, w)
