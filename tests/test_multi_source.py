"""Several source domains into one target (issue 8, part 3), and sequential pre-train-then-fine-tune
(``model.init_from``, part 1's comparison)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from helpers import invoke_ok, mlp_config, save_splits, two_blobs
from transferkit.adapt.losses import coral_loss
from transferkit.adapt.methods import build_method
from transferkit.config import RunConfig, parse_config
from transferkit.errors import ConfigError, DataError
from transferkit.experiment import build_model, fit, load_run_data, load_sources
from transferkit.train.engine import StepOutputs


def _out(k: int, n: int = 12, d: int = 4, seed: int = 0, weights: list[float] | None = None) -> StepOutputs:
    g = torch.Generator().manual_seed(seed)
    domains = torch.arange(n) % k
    out = StepOutputs(torch.randn(n, d, generator=g) + domains[:, None].float(), torch.randn(n, 3, generator=g),
                      torch.zeros(n, dtype=torch.long), torch.randn(8, d, generator=g), torch.randn(8, 3, generator=g),
                      0.5, source_domains=domains)
    if weights is not None:
        out.source_weights = torch.tensor(weights)[domains]
    return out


def test_per_source_coral_is_the_weighted_mean_of_each_source_against_the_target() -> None:
    out = _out(3, weights=[2.0, 1.0, 0.5])
    (term,) = build_method("coral", 4, 3, num_sources=3)
    parts = [coral_loss(out.source_features[out.source_domains == k], out.target_features) for k in range(3)]
    expected = (2.0 * parts[0] + 1.0 * parts[1] + 0.5 * parts[2]) / 3.5
    assert float(term.fn(out)) == pytest.approx(float(expected), rel=1e-5)
    (pooled,) = build_method("coral", 4, 3)  # one source: the plain loss on every source item
    assert float(pooled.fn(out)) == pytest.approx(float(coral_loss(out.source_features, out.target_features)))


def test_multi_source_dann_k_plus_1_way_and_per_source() -> None:
    (term,) = build_method("dann", 4, 3, num_sources=3, multi_source="k+1-way", options={"hidden": 8})
    assert term.module.net[-1].out_features == 4
    out = _out(3)
    value = term.fn(out)
    scalar = float(value.detach())
    # at initialisation a (k+1)-way discriminator is near chance on both sides: about log(4) = 1.39
    assert math.isfinite(scalar) and 0.8 < scalar < 2.5
    value.backward()
    assert term.module.net[0].weight.grad is not None
    with torch.no_grad():  # a discriminator that cannot tell: every domain equally likely, CE = log(k+1) per side
        term.module.net[-1].weight.zero_()
        term.module.net[-1].bias.zero_()
    assert float(term.fn(out).detach()) == pytest.approx(math.log(4))
    with pytest.raises(ConfigError, match="source index"):
        term.fn(StepOutputs(out.source_features, out.source_logits, out.source_labels, out.target_features,
                            out.target_logits, 0.5))
    (per,) = build_method("dann", 4, 3, num_sources=3, options={"hidden": 8})  # the default: one per source
    assert len(per.module) == 3 and all(d.net[-1].out_features == 1 for d in per.module)
    value = per.fn(_out(3, weights=[1.0, 1.0, 0.0]))  # the third source weighs nothing: its discriminator idles
    value.backward()
    assert per.module[0].net[0].weight.grad is not None and per.module[2].net[0].weight.grad.abs().sum() == 0
    assert 0.3 < float(value.detach()) < 1.2  # near the binary chance level log(2) = 0.69
    with torch.no_grad():
        for d in per.module:
            d.net[-1].weight.zero_()
            d.net[-1].bias.zero_()
    assert float(per.fn(_out(3)).detach()) == pytest.approx(math.log(2))


def _domain(path: Path, shift: float, seed: int, classes: tuple[str, str] = ("a", "b")) -> Path:
    """Two Gaussian classes (240 items, 180 to train) moved by ``shift`` along both axes."""
    x, y = two_blobs(240, seed, shift=(shift, shift))
    return save_splits(path, x, y, 180, classes)


def _three_sources_cfg(tmp_path: Path, name: str, **over: object) -> RunConfig:
    """An MLP run from three sources (two near the target, one 4 units away); ``over``: dotted overrides."""
    sources = [str(_domain(tmp_path / f"s{i}.npz", s, i)) for i, s in enumerate((0.2, 0.5, 4.0))]
    target = str(_domain(tmp_path / "t.npz", 0.0, 9))
    # standardize none: the discrepancy weights measure the raw gaps these toy sources are built with
    return mlp_config(tmp_path / "runs", name, sources, target,
                      mlp={"hidden": 16, "depth": 1, "dropout": 0.0, "standardize": "none"},
                      train={"epochs": 3, "lr": 0.01, "device": "cpu"}, adapt={"guard": False}, **over)


def test_sources_load_as_one_dataset_that_knows_each_item_source(tmp_path: Path) -> None:
    cfg = _three_sources_cfg(tmp_path, "load")
    data = load_run_data(cfg, 0)
    train = data.source_train
    assert data.source_names == cfg.data.source and len(data.source_names) == 3
    assert sorted(np.unique(train.meta["source_index"]).tolist()) == [0, 1, 2]
    assert int(train[0]["t"]["source_index"]) == int(train.meta["source_index"][0])
    assert data.source_eval is not None and len(data.source_eval) == 180  # 60 test items of each source


def test_sources_with_other_label_sets_or_inputs_are_refused(tmp_path: Path) -> None:
    a = str(_domain(tmp_path / "a.npz", 0.0, 0))
    b = str(_domain(tmp_path / "b.npz", 0.0, 1, classes=("c", "d")))
    with pytest.raises(DataError, match=r"different label sets.*0 shared"):
        load_sources([a, b], "train", None)
    with pytest.raises(DataError, match="different inputs"):
        load_sources([a, "digits-uci"], "train", None)
    with pytest.raises(ConfigError, match="distinct"):
        parse_config({"data": {"source": [a, a]}})
    with pytest.raises(ConfigError, match="weighs several sources"):
        fit(parse_config({"output_dir": str(tmp_path), "model": {"backbone": "mlp"},
                          "data": {"source": a, "target": a, "source_weighting": "discrepancy"}}), progress=False)


def test_per_source_dann_with_discrepancy_weights_end_to_end(tmp_path: Path) -> None:
    report = fit(_three_sources_cfg(tmp_path, "ms", **{"adapt.method": "dann", "data.source_weighting": "discrepancy"}),
                 progress=False)
    seed = report["per_seed"][0]
    weights = seed["source_weights"]
    names = list(weights)
    assert len(names) == 3 and sum(weights.values()) == pytest.approx(3.0)
    # the third source sits 4 units away from the target; the first two within 0.5
    assert weights[names[2]] < 0.5 < min(weights[names[0]], weights[names[1]])
    assert seed["multi_source"] == "per-source" and "target" in seed["evaluations"]
    run = tmp_path / "runs" / "ms"
    assert "Source weights" in (run / "report.md").read_text() and "Source weights" in (run / "report.html").read_text()
    assert " + " in (run / "report.md").read_text().splitlines()[3]  # the sources, named


def test_cli_takes_several_sources(tmp_path: Path) -> None:
    s0, s1 = (str(_domain(tmp_path / f"s{i}.npz", 0.3 * i, i)) for i in range(2))
    t = str(_domain(tmp_path / "t.npz", 0.0, 9))
    invoke_ok("fit", "--source", s0, "--source", s1, "--target", t, "--backbone", "mlp", "--method", "dan",
              "--epochs", "1", "--output-dir", tmp_path / "runs", "--name", "cli", "--set", "adapt.guard=false",
              "--set", "data.multi_source=pooled", "--no-progress")
    config = (tmp_path / "runs" / "cli" / "config.yaml").read_text()
    assert "multi_source: pooled" in config and s1 in config


def test_init_from_starts_from_an_earlier_runs_weights(tmp_path: Path) -> None:
    first = _three_sources_cfg(tmp_path, "pre", **{"data.source": str(_domain(tmp_path / "p.npz", 0.0, 3))})
    fit(first, progress=False)
    saved = load_file(str(tmp_path / "runs" / "pre" / "model.safetensors"))
    second = parse_config(first.model_dump(mode="json"), {"name": "ft", "model.init_from":
                                                          str(tmp_path / "runs" / "pre" / "model.safetensors")})
    model = build_model(second, load_run_data(second, 0))
    for k, v in model.state_dict().items():
        if k.startswith(("backbone.", "head.")):
            assert torch.equal(v, saved[k]), k
    other = parse_config(second.model_dump(mode="json"), {"model.backbone_kwargs": {"hidden": 8}})
    with pytest.raises(ConfigError, match="does not fit this backbone"):
        build_model(other, load_run_data(other, 0))
    with pytest.raises(ConfigError, match="not a file"):
        bad = parse_config(second.model_dump(mode="json"), {"model.init_from": str(tmp_path / "nope.safetensors")})
        build_model(bad, load_run_data(bad, 0))
