"""``adapt.method auto``: the choice among candidates (unit) and a whole run through the CLI (end to end)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import invoke
from transferkit.adapt.auto import ENSV, SOURCE_ONLY, choose, ensemble_agreement, trainable_methods, warm_start
from transferkit.measure.selection import Candidate

Y = np.arange(40) % 4


def _cand(name: str, sharpness: float) -> Candidate:
    return Candidate(name, np.eye(4)[Y] * sharpness, np.eye(4)[Y] * 5, Y)


def test_the_best_score_among_kept_candidates_is_chosen() -> None:
    choice = choose(_cand(SOURCE_ONLY, 1), {"dann": _cand("dann", 3), "mcc": _cand("mcc", 6)},
                    {"dann": [], "mcc": []}, "entropy")
    assert choice.chosen == "mcc"
    assert set(choice.scores) == {SOURCE_ONLY, "dann", "mcc"}
    assert choice.scores["mcc"] > choice.scores["dann"] > choice.scores[SOURCE_ONLY]


def test_a_rejected_candidate_is_never_chosen_however_it_scores() -> None:
    choice = choose(_cand(SOURCE_ONLY, 1), {"dann": _cand("dann", 3), "mcc": _cand("mcc", 9)},
                    {"dann": [], "mcc": ["its target predictions collapsed"]}, "entropy")
    assert choice.chosen == "dann"
    assert "mcc" not in choice.scores and choice.rejected == {"mcc": ["its target predictions collapsed"]}


def test_source_only_when_everything_is_rejected_or_a_tie() -> None:
    rejected = choose(_cand(SOURCE_ONLY, 1), {"dann": _cand("dann", 3)}, {"dann": ["widened"]}, "entropy")
    assert rejected.chosen == SOURCE_ONLY and "no adapted candidate passed" in rejected.why
    tie = choose(_cand(SOURCE_ONLY, 2), {"dann": _cand("dann", 2)}, {"dann": []}, "entropy")
    assert tie.chosen == SOURCE_ONLY


def test_ensemble_agreement_by_hand() -> None:
    # 4 items, 2 classes; a and b predict [0, 0, 1, 1] confidently, c predicts [0, 1, 1, 0] weakly
    a = Candidate("a", np.array([[4.0, 0], [4, 0], [0, 4], [0, 4]]))
    b = Candidate("b", np.array([[3.0, 0], [3, 0], [0, 3], [0, 3]]))
    c = Candidate("c", np.array([[1.0, 0], [0, 1], [0, 1], [1, 0]]))
    agreement = ensemble_agreement({"a": a, "b": b, "c": c})
    assert agreement == {"a": 1.0, "b": 1.0, "c": 0.5}  # the ensemble is [0, 0, 1, 1]
    choice = choose(Candidate(SOURCE_ONLY, c.target_logits), {"a": a, "b": b}, {"a": [], "b": ["rejected"]}, ENSV)
    assert choice.chosen == "a" and set(choice.scores) == {SOURCE_ONLY, "a"}  # b rejected: not in the ensemble


def test_feature_alignment_is_left_out_on_frozen_features() -> None:
    skipped = trainable_methods(["dann", "mcc", "dan"], frozen_features=True)
    assert set(skipped) == {"dann", "dan"}
    assert trainable_methods(["dann", "mcc"], frozen_features=False) == {}


@pytest.fixture
def shifted_npz(tmp_path: Path) -> tuple[Path, Path]:
    """Two 3-class Gaussian domains, the target shifted: small enough to train four candidates in seconds."""
    rng = np.random.default_rng(0)

    def make(n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 3, n)
        x = rng.normal(size=(n, 5)).astype(np.float32) + 2.5 * np.eye(3, 5)[y] + shift
        return x.astype(np.float32), y

    paths = []
    for name, shift in (("src", 0.0), ("tgt", 0.7)):
        (xtr, ytr), (xte, yte) = make(250, shift), make(60, shift)  # 225 training items: MCC has its bottleneck
        path = tmp_path / f"{name}.npz"
        np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte, classes=np.array(["a", "b", "c"]))
        paths.append(path)
    return paths[0], paths[1]


def test_fit_method_auto_reports_every_candidate_and_keeps_the_chosen(tmp_path: Path,
                                                                      shifted_npz: tuple[Path, Path]) -> None:
    src, tgt = shifted_npz
    code, out = invoke("fit", "--source", src, "--target", tgt, "--backbone", "mlp", "--method", "auto",
                       "--set", "train.steps=40", "--set", "adapt.auto_methods=[dann, mcc]",
                       "--name", "auto", "--output-dir", tmp_path, "--no-progress")
    assert code == 0, out
    assert "method auto kept:" in out
    report = json.loads((tmp_path / "auto" / "report.json").read_text())
    auto = report["auto"]
    assert report["method"] == "auto"
    assert set(auto["candidates"]) == {SOURCE_ONLY, "dann", "mcc"}
    assert auto["chosen"] in auto["candidates"] and auto["validator"] == "info_max"
    # the adapted candidates started from the source-only model and trained half its steps (adapt.auto_warm_start);
    # every candidate was scored on the target for the table only
    assert auto["warm_start"] is True
    assert {n: c["steps"] for n, c in auto["candidates"].items()} == {SOURCE_ONLY: 40, "dann": 20, "mcc": 20}
    chosen_acc = auto["candidates"][auto["chosen"]]["target_accuracy"]
    assert report["evaluations"]["target"]["accuracy"] == pytest.approx(chosen_acc)
    for name, c in auto["candidates"].items():
        if name != SOURCE_ONLY:
            assert c["kept"] == (name not in auto["rejected"]) and set(c["guard_rules"]) >= {"collapse", "gap"}
    # MCC trains its own bottleneck on an mlp (as --method mcc would); the saved model is the chosen candidate itself
    widths = {name: c["bottleneck_dim"] for name, c in auto["candidates"].items()}
    assert widths == {SOURCE_ONLY: None, "dann": None, "mcc": 256}
    from transferkit.models.heads import TransferModel

    assert TransferModel.load(tmp_path / "auto" / "model.safetensors").bottleneck_dim == widths[auto["chosen"]]
    # the saved model is the chosen one: evaluate scores it the same
    code, out = invoke("evaluate", tmp_path / "auto", "--data", tgt, "--split", "test")
    assert code == 0, out
    assert "## Method auto" in (tmp_path / "auto" / "report.md").read_text()
    assert "Method auto" in (tmp_path / "auto" / "report.html").read_text()


def test_warm_start_copies_every_layer_that_fits_and_names_the_rest() -> None:
    import torch

    from transferkit.models.backbones import create_backbone
    from transferkit.models.heads import TransferModel

    def model(bottleneck: int | None) -> TransferModel:
        return TransferModel(create_backbone("mlp", in_features=5, hidden=8), ["a", "b"], bottleneck_dim=bottleneck)

    torch.manual_seed(0)
    trained = model(None)
    torch.manual_seed(1)
    same, own_bottleneck = model(None), model(4)
    assert warm_start(same, trained) == []
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in same.state_dict().items())
    left = warm_start(own_bottleneck, trained)  # the head reads the bottleneck's 4 features: it cannot be copied
    assert left and all(k.startswith(("bottleneck.", "head")) for k in left)
    for k, v in own_bottleneck.state_dict().items():
        if k.startswith("backbone."):
            assert torch.equal(v, trained.state_dict()[k])


def test_candidates_from_scratch_train_every_step(tmp_path: Path, shifted_npz: tuple[Path, Path]) -> None:
    src, tgt = shifted_npz
    code, out = invoke("fit", "--source", src, "--target", tgt, "--backbone", "mlp", "--method", "auto",
                       "--set", "train.steps=40", "--set", "adapt.auto_warm_start=false", "--name", "cold",
                       "--output-dir", tmp_path, "--no-progress")
    assert code == 0, out
    auto = json.loads((tmp_path / "cold" / "report.json").read_text())["auto"]
    assert auto["warm_start"] is False
    assert {n: c["steps"] for n, c in auto["candidates"].items()} == {SOURCE_ONLY: 40, "dan": 40, "mcc": 40}


def test_methods_the_model_cannot_train_are_left_out_and_said(tmp_path: Path, shifted_npz: tuple[Path, Path]) -> None:
    src, tgt = shifted_npz
    code, out = invoke("fit", "--source", src, "--target", tgt, "--backbone", "mlp", "--method", "auto",
                       "--strategy", "linear-probe", "--set", "train.steps=20",
                       "--set", "adapt.auto_methods=[dann, mcc]", "--name", "lp", "--output-dir", tmp_path,
                       "--no-progress")
    assert code == 0, out
    auto = json.loads((tmp_path / "lp" / "report.json").read_text())["auto"]
    assert set(auto["candidates"]) == {SOURCE_ONLY, "mcc"} and "frozen" in auto["left_out"]["dann"]
    assert "Not tried: dann" in (tmp_path / "lp" / "report.md").read_text()


@pytest.mark.parametrize(("args", "needle"), [
    (["--method", "auto", "--lambda", "0.5"], "own default"),
    (["--method", "auto", "--set", "adapt.auto_methods=[dann, nope]"], "unknown method"),
    (["--method", "auto", "--set", "adapt.auto_validator=oracle"], "unknown validator"),
    (["--method", "auto", "--strategy", "linear-probe", "--set", "adapt.auto_methods=[dann]"], "frozen"),
])
def test_method_auto_bad_settings_exit_2(tmp_path: Path, shifted_npz: tuple[Path, Path], args: list[str],
                                         needle: str) -> None:
    src, tgt = shifted_npz
    code, out = invoke("fit", "--source", src, "--target", tgt, "--backbone", "mlp", *args, "--name", "bad",
                       "--output-dir", tmp_path, "--no-progress")
    assert code == 2 and needle in out, out
    assert not (tmp_path / "bad").exists()
