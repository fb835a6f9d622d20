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
