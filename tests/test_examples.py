"""The shipped examples stay valid: every YAML config parses against the current schema."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from transferkit.config import RunConfig, load_yaml_mapping

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _differences(written: Any, parsed: Any, where: str = "") -> Iterator[str]:
    """Where the parsed config does not hold what the file says: every key the file sets, in mappings and in lists
    of mappings (a head's unset keys take their defaults, so only the file's own keys are compared)."""
    if isinstance(written, dict):
        if not isinstance(parsed, dict):
            yield f"{where or 'the config'}: {parsed!r} is not a mapping"
            return
        for key, value in written.items():
            if key not in parsed:
                yield f"{where}{key}: not in the parsed config"
            else:
                yield from _differences(value, parsed[key], f"{where}{key}.")
    elif isinstance(written, list) and any(isinstance(v, dict) for v in written):
        if not isinstance(parsed, list) or len(parsed) != len(written):
            yield f"{where.rstrip('.')}: {written!r} parsed as {parsed!r}"
            return
        for i, (w, p) in enumerate(zip(written, parsed, strict=True)):
            yield from _differences(w, p, f"{where}{i}.")
    elif written != parsed:
        yield f"{where.rstrip('.')}: {written!r} in the file, {parsed!r} parsed"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_config_parses(path: Path) -> None:
    """Each example parses, and into the values its file sets (not a default in place of any of them)."""
    cfg = RunConfig.from_yaml(path)
    written = load_yaml_mapping(path)
    assert cfg.name == written["name"] != "run"  # every example names its run
    assert list(_differences(written, cfg.model_dump(mode="json"))) == []


def test_there_are_examples() -> None:
    assert len(list(EXAMPLES.glob("*.yaml"))) >= 2
