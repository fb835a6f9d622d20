"""The shipped examples stay valid: every YAML config parses against the current schema."""

from pathlib import Path

import pytest

from transferkit.config import RunConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_config_parses(path: Path) -> None:
    cfg = RunConfig.from_yaml(path)
    assert cfg.name


def test_there_are_examples() -> None:
    assert len(list(EXAMPLES.glob("*.yaml"))) >= 2
