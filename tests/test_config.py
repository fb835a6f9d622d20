"""RunConfig: defaults, strict validation with messages that name the dotted field, YAML in and out, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from transferkit.config import (
    DataConfig,
    FinetuneConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    parse_config,
    parse_override,
)
from transferkit.errors import ConfigError


# -- defaults ----------------------------------------------------------------------------------
def test_defaults_make_a_complete_run() -> None:
    cfg = RunConfig()
    assert cfg.name == "run" and cfg.output_dir == "runs" and cfg.seeds == [0] and cfg.online is False
    assert cfg.run_path == Path("runs") / "run"
    assert cfg.data == DataConfig()
    # val_fraction None: 10 % where that holds out 10 items per class (transferkit.experiment.validation_share)
    d = cfg.data
    assert (d.source, d.target, d.val_fraction, d.batch_size) == ("mnist-5k", None, None, 64)
    assert (cfg.model.backbone, cfg.model.weights, cfg.model.pretrained) == ("lenet", None, False)
    assert (cfg.finetune.strategy, cfg.finetune.freeze_stages, cfg.finetune.backbone_lr_mult) == ("full", 0, 1.0)
    assert cfg.finetune.layer_decay is None
    t = cfg.train
    # epochs and steps None: a budget of optimiser steps that follows the data (transferkit.train.budget)
    assert (t.epochs, t.steps, t.lr, t.optimizer, t.scheduler, t.grad_accum_steps) == (None, None, 1e-3, "adamw",
                                                                                      "cosine", 1)
    assert t.early_stopping_patience is None and t.keep_checkpoints == 1


def test_partial_sections_keep_the_other_defaults() -> None:
    cfg = parse_config({"name": "x", "train": {"epochs": 3}})
    assert cfg.train.epochs == 3
    assert cfg.train.lr == TrainConfig().lr
    assert cfg.finetune == FinetuneConfig() and cfg.model == ModelConfig()


@pytest.mark.parametrize(("raw", "items", "width"), [
    ({"model": {"backbone": "mlp"}, "adapt": {"method": "mcc"}}, 450, 256),  # MCC's own default on feature vectors
    ({"model": {"backbone": "mlp"}, "adapt": {"method": "mcc"}}, 90, None),  # too few labelled items to train it
    ({"model": {"backbone": "mlp", "bottleneck_dim": None}, "adapt": {"method": "mcc"}}, 450, None),  # said: kept
    ({"model": {"backbone": "mlp", "bottleneck_dim": 64}, "adapt": {"method": "mcc"}}, 90, 64),
    ({"model": {"backbone": "mlp"}, "adapt": {"method": "dan"}}, 450, None),
    ({"model": {"backbone": "mlp"}, "adapt": {"method": "auto"}}, 450, None),  # per candidate, not for the run
    ({"model": {"backbone": "lenet"}, "adapt": {"method": "mcc"}}, 450, None),
    ({"model": {"backbone": "mlp"}, "adapt": {"method": "mcc"}, "finetune": {"strategy": "linear-probe"}}, 450, None),
])
def test_bottleneck_auto_is_the_method_s_default_for_the_data(raw: dict, items: int, width: int | None) -> None:
    from transferkit.config import MIN_ITEMS_FOR_METHOD_BOTTLENECK, bottleneck_width

    assert 90 < MIN_ITEMS_FOR_METHOD_BOTTLENECK <= 450  # the two sizes measured on either side (docs/defaults.md)
    cfg = parse_config(raw)
    assert bottleneck_width(cfg, items) == width
    # the saved config reads back to the same model
    assert bottleneck_width(parse_config(yaml.safe_load(cfg.to_yaml())), items) == width


# -- validation errors -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"train": {"epoch": 3}}, "unknown field `train.epoch` (did you mean `epochs`?)"),
        ({"trian": {"epochs": 3}}, "unknown field `trian` (did you mean `train`?)"),
        ({"finetune": {"layer_decy": 0.5}}, "unknown field `finetune.layer_decy` (did you mean `layer_decay`?)"),
        ({"data": {"batchsize": 8}}, "unknown field `data.batchsize` (did you mean `batch_size`?)"),
    ],
)
def test_unknown_key_is_named_with_a_suggestion(raw: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="exp.yaml")
    assert str(info.value) == f"exp.yaml: {expected}"


def test_unknown_key_without_a_close_match_lists_the_known_fields() -> None:
    with pytest.raises(ConfigError, match=r"unknown field `model.zzzzzz` \(known: backbone, weights, pretrained"):
        parse_config({"model": {"zzzzzz": 1}})


@pytest.mark.parametrize(
    ("raw", "field", "got"),
    [
        ({"train": {"lr": "fast"}}, "train.lr", "'fast'"),
        ({"train": {"epochs": -1}}, "train.epochs", "-1"),
        ({"train": {"epochs": 0}}, "train.epochs", "0"),
        ({"train": {"weight_decay": -0.1}}, "train.weight_decay", "-0.1"),
        ({"train": {"optimizer": "adam"}}, "train.optimizer", "'adam'"),
        ({"data": {"batch_size": 0}}, "data.batch_size", "0"),
        ({"data": {"val_fraction": 0.95}}, "data.val_fraction", "0.95"),
        ({"finetune": {"freeze_stages": -2}}, "finetune.freeze_stages", "-2"),
        ({"finetune": {"strategy": "adapters"}}, "finetune.strategy", "'adapters'"),
        ({"finetune": {"layer_decay": 0}}, "finetune.layer_decay", "0"),
        ({"seeds": [1, -1]}, "seeds.1", "-1"),
        ({"seeds": []}, "seeds", "[]"),
    ],
)
def test_bad_value_names_the_dotted_field(raw: dict, field: str, got: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="exp.yaml")
    msg = str(info.value)
    assert msg.startswith(f"exp.yaml: field `{field}`: "), msg
    assert msg.endswith(f"(got {got})"), msg


def test_all_errors_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"train": {"lr": -1, "epochs": "x"}})
    msg = str(info.value)
    assert "`train.lr`" in msg and "`train.epochs`" in msg


def test_section_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(ConfigError, match="field `train`"):
        parse_config({"train": 5})


def test_duplicate_seeds_and_weights_with_pretrained_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"field `seeds`: .*distinct"):
        parse_config({"seeds": [1, 2, 1]})
    with pytest.raises(ConfigError, match=r"field `model`: .*either model.weights or model.pretrained"):
        parse_config({"model": {"weights": "w.safetensors", "pretrained": True}})


@pytest.mark.parametrize("name", ["a/b", "../escape", "a..b", "..", "/abs", "", ".hidden", "a b"])
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=r"field `name`: .*no '/', no '\.\.'"):
        parse_config({"name": name})


@pytest.mark.parametrize("name", ["demo", "mnist-to-usps_2", "v1.2", "A"])
def test_safe_names_are_accepted(name: str) -> None:
    assert parse_config({"name": name}).name == name


def test_assignment_is_validated_too() -> None:
    cfg = RunConfig()
    with pytest.raises(ValueError, match="epochs"):
        cfg.train.epochs = 0


# -- YAML --------------------------------------------------------------------------------------
def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "name": "rt",
            "seeds": [3, 1],
            "data": {"source": "usps", "target": "mnist", "source_per_class": 5, "val_fraction": 0.0},
            "model": {"backbone": "timm:resnet18", "backbone_kwargs": {"drop_rate": 0.2}, "head_dropout": 0.5},
            "finetune": {"strategy": "lp-ft", "layer_decay": 0.7, "lp_lr": 0.01},
            "train": {"epochs": 2, "lr": 0.05, "optimizer": "sgd", "early_stopping_patience": 2},
        }
    )
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml(), encoding="utf-8")
    # the file is plain YAML, every default filled in
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert raw["train"]["scheduler"] == "cosine" and raw["finetune"]["lp_epochs"] == 10
    back = RunConfig.from_yaml(path)
    assert back == cfg
    assert back.model.backbone_kwargs == {"drop_rate": 0.2} and back.seeds == [3, 1]


def test_empty_yaml_file_gives_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    assert RunConfig.from_yaml(path) == RunConfig()


def test_from_yaml_errors_name_the_file(tmp_path: Path) -> None:
    bad_key = tmp_path / "typo.yaml"
    bad_key.write_text("train:\n  epocs: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{bad_key}: unknown field `train.epocs` \(did you mean `epochs`\?\)"):
        RunConfig.from_yaml(bad_key)

    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"config file {not_mapping} must hold a mapping.*got list"):
        RunConfig.from_yaml(not_mapping)

    invalid = tmp_path / "broken.yaml"
    invalid.write_text("train: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"config file {invalid} is not valid YAML"):
        RunConfig.from_yaml(invalid)

    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=rf"config file {missing} does not exist"):
        RunConfig.from_yaml(missing)

    with pytest.raises(ConfigError, match="is not a file"):
        RunConfig.from_yaml(tmp_path)  # a folder is not a config file


# -- overrides ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train.lr=0.01", ("train.lr", 0.01)),
        ("train.epochs=3", ("train.epochs", 3)),
        ("seeds=[0, 1, 2]", ("seeds", [0, 1, 2])),
        ("data.target=null", ("data.target", None)),
        ("model.pretrained=true", ("model.pretrained", True)),
        ("name=demo", ("name", "demo")),
        (" train.lr =0.5", ("train.lr", 0.5)),
        ("data.source=a=b", ("data.source", "a=b")),
    ],
)
def test_parse_override(text: str, expected: tuple) -> None:
    assert parse_override(text) == expected


def test_exponent_without_a_dot_still_becomes_a_float() -> None:
    # PyYAML (YAML 1.1) reads "1e-4" as a string; overrides turn it into the number a user means,
    # so untyped fields (backbone_kwargs) get a float too
    assert parse_override("train.lr=1e-4") == ("train.lr", 1e-4)
    assert parse_override("model.backbone_kwargs.drop_rate=1e-2") == ("model.backbone_kwargs.drop_rate", 0.01)
    assert parse_override("data.source=e5") == ("data.source", "e5")
    assert parse_config({}, dict([parse_override("train.lr=1e-4")])).train.lr == pytest.approx(1e-4)


@pytest.mark.parametrize("text", ["train.lr", "=3", "  =3"])
def test_parse_override_refuses_malformed(text: str) -> None:
    with pytest.raises(ConfigError, match=r"must look like section\.field=value"):
        parse_override(text)


def test_parse_override_refuses_bad_yaml_value() -> None:
    with pytest.raises(ConfigError, match="value is not valid YAML"):
        parse_override("seeds=[1, 2")


def test_overrides_apply_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: base\ntrain:\n  epochs: 5\n  lr: 0.1\n", encoding="utf-8")
    overrides = dict(parse_override(t) for t in ["train.epochs=2", "finetune.strategy=partial", "seeds=[4, 5]"])
    cfg = RunConfig.from_yaml(path, overrides)
    assert cfg.train.epochs == 2 and cfg.train.lr == 0.1  # overridden, kept
    assert cfg.finetune.strategy == "partial" and cfg.seeds == [4, 5]
    # the raw mapping handed in is not modified
    raw = {"train": {"epochs": 5}}
    parse_config(raw, {"train.epochs": 1})
    assert raw == {"train": {"epochs": 5}}


def test_bad_override_is_named_like_a_file_field() -> None:
    with pytest.raises(ConfigError, match=r"unknown field `train.lrr` \(did you mean `lr`\?\)"):
        parse_config({}, dict([parse_override("train.lrr=0.1")]))
    with pytest.raises(ConfigError, match=r"field `train.epochs`: .*\(got 'many'\)"):
        parse_config({}, dict([parse_override("train.epochs=many")]))
    with pytest.raises(ConfigError, match=r"override 'train.lr': `train` is not a section"):
        parse_config({"train": 5}, {"train.lr": 1})
