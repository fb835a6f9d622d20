"""The text modality end to end through the CLI: a JSON-lines review file, a tiny random BERT folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from helpers import invoke, invoke_ok


def fit(tmp_path: Path, reviews: Path, model: Path, name: str, *extra: str) -> dict:
    invoke_ok("fit", "--source", f"{reviews}?domain=books", "--target", f"{reviews}?domain=kitchen",
              "--backbone", f"hf:{model}", "--name", name, "--output-dir", tmp_path / "runs", "--no-progress",
              "--set", "data.train_split=all", "--set", "data.eval_split=all", "--set", "data.batch_size=8",
              "--set", "model.backbone_kwargs.max_length=16", *extra)
    return json.loads((tmp_path / "runs" / name / "report.json").read_text())


def test_frozen_text_features_with_adaptation(tmp_path: Path, reviews_jsonl: Path, tiny_text_model: Path) -> None:
    """DANN trains the bottleneck on the frozen encoder's features: its adversarial term is what moves them. A
    control run with the term's weight at 0 (same seed, steps, batches and forward passes; its source-only twin
    reused from the cache) maps the same items elsewhere."""
    dann = ("--strategy", "linear-probe", "--set", "model.bottleneck_dim=8", "--method", "dann", "--epochs", "3")
    report = fit(tmp_path, reviews_jsonl, tiny_text_model, "frozen", *dann)
    evals, keep = report["evaluations"], report["guard"]["keep"]
    assert {"target", "target_adapted", "target_source_only"} <= set(evals) and evals["target"]["n"] == 24
    assert evals["target"] == evals[f"target_{keep.replace('-', '_')}"]  # the kept model is the one scored
    lines = (tmp_path / "runs" / "frozen" / "metrics.jsonl").read_text().splitlines()
    adapted = [json.loads(line) for line in lines if json.loads(line)["phase"] == "lp"]
    assert len(adapted) == 3 and all(row["loss/dann"] > 0 for row in adapted)  # the term trained every epoch
    fit(tmp_path, reviews_jsonl, tiny_text_model, "control", *dann, "--set", "adapt.weight=0")
    moved, still = (np.load(tmp_path / "runs" / name / "feature_map.npz") for name in ("frozen", "control"))
    assert np.array_equal(moved["before_target"], still["before_target"])  # the same source-only twin
    assert not np.allclose(moved["after_target"], still["after_target"], atol=1e-6)


def test_lora_end_to_end_then_evaluate_the_saved_model(tmp_path: Path, reviews_jsonl: Path,
                                                        tiny_text_model: Path) -> None:
    report = fit(tmp_path, reviews_jsonl, tiny_text_model, "lora", "--strategy", "lora", "--method", "mcc",
                 "--epochs", "2", "--lr", "0.01", "--set", "adapt.guard=false")
    accuracy = report["evaluations"]["target"]["accuracy"]
    invoke_ok("evaluate", tmp_path / "runs" / "lora", "--data", f"{reviews_jsonl}?domain=kitchen", "--split", "all")
    scored = json.loads(next((tmp_path / "runs" / "lora" / "evaluations").glob("*.json")).read_text())
    assert abs(scored["accuracy"] - accuracy) < 1e-9  # the merged, saved model is the one that was scored


def test_text_data_into_an_image_backbone_fails_before_writing(tmp_path: Path, reviews_jsonl: Path) -> None:
    code, output = invoke("fit", "--source", f"{reviews_jsonl}?domain=books", "--backbone", "lenet",
                          "--name", "bad", "--output-dir", tmp_path / "runs", "--no-progress")
    assert code != 0
    assert "reads image inputs, but 'reviews/books' holds text data" in output
    assert not (tmp_path / "runs" / "bad").exists()
