"""The guard's source-only twin is trained once per (settings, seed, data, steps) and reused after that."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from helpers import mlp_config
from transferkit.config import RunConfig
from transferkit.experiment import fit
from transferkit.train.twin_cache import FOLDER, twin_key


@pytest.fixture
def shifted(tmp_path: Path) -> tuple[str, str]:
    rng = np.random.default_rng(0)
    paths = []
    for name, shift in (("src", 0.0), ("tgt", 0.8)):
        y = rng.integers(0, 3, 120)
        x = (rng.normal(size=(120, 5)) + 2.5 * np.eye(3, 5)[y] + shift).astype(np.float32)
        path = tmp_path / f"{name}.npz"
        np.savez(path, x_train=x[:90], y_train=y[:90], x_test=x[90:], y_test=y[90:])
        paths.append(str(path))
    return paths[0], paths[1]


def _twin_cfg(out: Path, src: str, tgt: str, method: str, name: str, **adapt: object) -> RunConfig:
    """Two seeds of 30 steps of an MLP with ``method`` (``adapt``: more adapt settings), written under ``out``."""
    return mlp_config(out, name, src, tgt, seeds=[0, 1], adapt={"method": method, **adapt}, train={"steps": 30})


def _report(out: Path, name: str, seed: int) -> dict:
    return json.loads((out / name / f"seed-{seed}" / "report.json").read_text())


def test_a_guarded_run_reuses_the_source_only_run_as_its_twin(tmp_path: Path, shifted: tuple[str, str]) -> None:
    src, tgt = shifted
    shared, alone = tmp_path / "shared", tmp_path / "alone"
    fit(_twin_cfg(shared, src, tgt, "none", "plain"), progress=False)
    stored = sorted((shared / FOLDER).glob("*.safetensors"))
    assert len(stored) == 2  # one per seed
    # λ, its schedule and the method's options do not shape the source-only model: the twin is still shared
    fit(_twin_cfg(shared, src, tgt, "dann", "dann", weight=0.5, options={"hidden": 16}), progress=False)
    assert sorted((shared / FOLDER).glob("*.safetensors")) == stored
    fit(_twin_cfg(alone, src, tgt, "dann", "dann", weight=0.5, options={"hidden": 16}), progress=False)
    for seed in (0, 1):
        reused, trained = _report(shared, "dann", seed)["guard"], _report(alone, "dann", seed)["guard"]
        assert reused["twin"].startswith("reused") and trained["twin"] == "trained for this run"
        # the reused twin is the model the guarded run would have trained: same decision on the same numbers
        assert reused["keep"] == trained["keep"]
        acc = (reused["numbers"]["source_val_accuracy"], trained["numbers"]["source_val_accuracy"])
        assert acc[0]["source-only"] == pytest.approx(acc[1]["source-only"], abs=1e-6)
    # and the weights themselves agree: the plain run's model and the twin trained from scratch elsewhere
    for path in stored:
        a, b = load_file(path), load_file(alone / FOLDER / path.name)
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_anything_that_shapes_the_model_gives_another_key(tmp_path: Path, shifted: tuple[str, str]) -> None:
    src, tgt = shifted
    base = _twin_cfg(tmp_path, src, tgt, "dann", "a")
    from transferkit.data import load_data

    data = [load_data(src, "train"), None, None]
    key = twin_key(base, 0, 30, data)
    assert key == twin_key(_twin_cfg(tmp_path / "elsewhere", src, tgt, "mcc", "b", weight=3.0), 0, 30, data)
    assert key != twin_key(base, 1, 30, data)  # seed
    assert key != twin_key(base, 0, 31, data)  # steps
    assert key != twin_key(base.model_copy(update={"train": base.train.model_copy(update={"lr": 0.5})}), 0, 30, data)
    assert key != twin_key(base, 0, 30, [load_data(tgt, "train"), None, None])  # the data trained on
    assert key != twin_key(base, 0, 30, data, source_weights=[1.0])
    accum = base.model_copy(update={"train": base.train.model_copy(update={"grad_accum_steps": 2})})
    assert twin_key(accum, 0, 30, data) is None and twin_key(base, 0, None, data) is None
    carried_out = base.model_copy(update={  # how a run is carried out, not what it computes: the same twin
        "train": base.train.model_copy(update={"threads": 1, "keep_checkpoints": 5}),
        "data": base.data.model_copy(update={"num_workers": 2, "cache_mb": 16}),
    })
    assert twin_key(carried_out, 0, 30, data) == key


def test_mcc_s_own_bottleneck_is_another_twin(tmp_path: Path) -> None:
    from transferkit.data import load_data

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    path = tmp_path / "big.npz"
    np.savez(path, x_train=rng.normal(size=(300, 5)).astype(np.float32), y_train=y)
    data = [load_data(str(path), "train"), None, None]  # 300 items: MCC trains its 256-d bottleneck on an mlp
    keys = {m: twin_key(_twin_cfg(tmp_path, str(path), str(path), m, "a"), 0, 30, data)
            for m in ("none", "dann", "mcc")}
    assert keys["none"] == keys["dann"] != keys["mcc"]


def test_a_damaged_cache_entry_is_retrained_not_an_error(tmp_path: Path, shifted: tuple[str, str]) -> None:
    src, tgt = shifted
    fit(_twin_cfg(tmp_path, src, tgt, "none", "plain"), progress=False)
    for path in (tmp_path / FOLDER).glob("*.safetensors"):
        path.write_bytes(b"not a safetensors file")
    fit(_twin_cfg(tmp_path, src, tgt, "mcc", "mcc"), progress=False)
    assert _report(tmp_path, "mcc", 0)["guard"]["twin"] == "trained for this run"
    for path in (tmp_path / FOLDER).glob("*.safetensors"):  # rewritten whole
        assert load_file(path)
