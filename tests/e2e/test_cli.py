"""End-to-end tests of every CLI command on tiny data (in-process through typer's runner)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import invoke
from transferkit.errors import DataError


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    """A two-class vector task with train/test splits in one .npz file."""
    rng = np.random.default_rng(0)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 2, n)
        x = rng.normal(size=(n, 6)).astype(np.float32) + 2.0 * y[:, None]
        return x, y

    xtr, ytr = make(120)
    xte, yte = make(60)
    path = tmp_path / "toy.npz"
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte, classes=np.array(["neg", "pos"]))
    return path


@pytest.fixture
def trained_run(tmp_path: Path, tiny_npz: Path) -> Path:
    code, out = invoke(
        "fit", "--source", tiny_npz, "--target", tiny_npz, "--backbone", "mlp", "--epochs", "3",
        "--lr", "0.01", "--name", "toy", "--output-dir", tmp_path / "runs", "--no-progress",
    )
    assert code == 0, out
    return tmp_path / "runs" / "toy"


def test_finished_checkpoints_are_kept_on_request(tmp_path: Path) -> None:
    data = tmp_path / "toy.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x_train=rng.normal(size=(40, 3)).astype(np.float32), y_train=np.arange(40) % 2)
    code, out = invoke("fit", "--source", data, "--backbone", "mlp", "--epochs", "1", "--name", "kept",
                       "--output-dir", tmp_path, "--no-progress", "--set", "train.keep_finished_checkpoints=true")
    assert code == 0, out
    assert (tmp_path / "kept" / "checkpoints" / "train" / "best" / "model.safetensors").is_file()


def test_fit_writes_a_complete_run_directory(trained_run: Path) -> None:
    for name in ("config.yaml", "metrics.jsonl", "model.safetensors", "report.json", "report.md",
                 "learning_curves.png", "confusion_target.png"):
        assert (trained_run / name).is_file(), name
    assert not (trained_run / "checkpoints").exists()  # a finished seed's checkpoints: removed, nothing resumes them
    report = json.loads((trained_run / "report.json").read_text())
    assert report["evaluations"]["target"]["accuracy"] > 0.8  # separable toy task
    assert len((trained_run / "metrics.jsonl").read_text().splitlines()) == 3


def test_fit_refuses_to_overwrite_and_exits_2(trained_run: Path, tiny_npz: Path) -> None:
    before = (trained_run / "model.safetensors").read_bytes()
    code, out = invoke("fit", "--source", tiny_npz, "--backbone", "mlp", "--epochs", "1", "--name", "toy",
                       "--output-dir", trained_run.parent, "--no-progress")
    assert code == 2
    assert "already exists" in out and "--overwrite" in out
    assert (trained_run / "model.safetensors").read_bytes() == before


def test_fit_overwrite_and_multi_seed(tmp_path: Path, tiny_npz: Path) -> None:
    code, out = invoke("fit", "--source", tiny_npz, "--backbone", "mlp", "--epochs", "2", "--seeds", "0,1",
                       "--name", "seeds", "--output-dir", tmp_path, "--no-progress")
    assert code == 0, out
    report = json.loads((tmp_path / "seeds" / "report.json").read_text())
    assert report["seeds"] == [0, 1]
    acc = report["summary"]["source"]["accuracy"]
    assert len(acc["values"]) == 2 and acc["std"] == pytest.approx(np.std(acc["values"], ddof=1))
    assert (tmp_path / "seeds" / "seed-1" / "model.safetensors").is_file()
    assert "±" in (tmp_path / "seeds" / "report.md").read_text()


def test_fit_from_yaml_with_overrides(tmp_path: Path, tiny_npz: Path) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"name: yaml-run\noutput_dir: {tmp_path / 'runs'}\n"
        f"data:\n  source: {tiny_npz}\n  val_fraction: 0.2\n"
        "model:\n  backbone: mlp\n  backbone_kwargs: {hidden: 16}\n"
        "finetune:\n  strategy: linear-probe\ntrain:\n  epochs: 2\n  lr: 0.05\n"
    )
    code, out = invoke("fit", "-c", cfg, "--set", "train.epochs=3", "--no-progress")
    assert code == 0, out
    saved = (tmp_path / "runs" / "yaml-run" / "config.yaml").read_text()
    assert "epochs: 3" in saved and "linear-probe" in saved and "hidden: 16" in saved


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--source", "no-such-dataset"], "no-such-dataset"),
        (["--set", "train.lrr=0.1"], "train.lrr"),
        (["--epochs", "0"], "train.epochs"),
        (["--set", "data.batch_size=abc"], "data.batch_size"),
        (["--backbone", "timm:definitely_not_a_model"], "definitely_not_a_model"),
        (["--backbone", "what"], "unknown backbone"),
        (["--name", "../escape"], "name"),
        (["--strategy", "partial", "--set", "finetune.freeze_stages=9"], "freeze_stages"),
        (["--seeds", "a,b"], "--seeds"),
    ],
)
def test_fit_bad_input_exits_2_with_reason_and_writes_nothing(tmp_path: Path, args: list[str], needle: str) -> None:
    out_dir = tmp_path / "runs"
    code, out = invoke("fit", "--source", "digits-uci", "--epochs", "1", "--name", "bad", "--output-dir", out_dir,
                       "--no-progress", *args)
    assert code == 2, out
    assert needle in out
    assert "Traceback" not in out
    assert not (out_dir / "bad").exists()


def test_fit_missing_config_file(tmp_path: Path) -> None:
    code, out = invoke("fit", "-c", tmp_path / "nope.yaml")
    assert code == 2 and "nope.yaml" in out


def test_target_with_other_label_set_is_refused(tmp_path: Path, tiny_npz: Path) -> None:
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros((10, 6), np.float32), y=np.arange(10) % 3, classes=np.array(["a", "b", "c"]))
    code, out = invoke("fit", "--source", tiny_npz, "--target", other, "--backbone", "mlp", "--name", "x",
                       "--output-dir", tmp_path / "runs", "--set", "data.eval_split=train", "--no-progress")
    assert code == 2 and "label sets" in out
    assert not (tmp_path / "runs" / "x").exists()


def test_resume_a_finished_run_keeps_its_results(trained_run: Path, tiny_npz: Path) -> None:
    before = json.loads((trained_run / "report.json").read_text())
    code, out = invoke("fit", "--source", tiny_npz, "--target", tiny_npz, "--backbone", "mlp", "--epochs", "3",
                       "--lr", "0.01", "--name", "toy", "--output-dir", trained_run.parent, "--resume", "--no-progress")
    assert code == 0, out
    after = json.loads((trained_run / "report.json").read_text())
    assert after["evaluations"]["target"]["accuracy"] == before["evaluations"]["target"]["accuracy"]


def test_resume_with_changed_config_is_refused(trained_run: Path, tiny_npz: Path) -> None:
    code, out = invoke("fit", "--source", tiny_npz, "--target", tiny_npz, "--backbone", "mlp", "--epochs", "5",
                       "--lr", "0.01", "--name", "toy", "--output-dir", trained_run.parent, "--resume", "--no-progress")
    assert code == 2 and "train.epochs" in out


def test_evaluate(trained_run: Path, tiny_npz: Path) -> None:
    code, out = invoke("evaluate", trained_run, "--data", tiny_npz, "--split", "test")
    assert code == 0, out
    saved = json.loads((trained_run / "evaluations" / "toy.npz-test.json").read_text())
    assert saved["n"] == 60 and 0.8 < saved["accuracy"] <= 1.0
    assert f"{100 * saved['accuracy']:.2f}" in out


def test_evaluate_run_is_the_commands_library_call(trained_run: Path, tiny_npz: Path) -> None:
    from transferkit.evaluate.score_run import evaluate_run

    metrics, path = evaluate_run(trained_run, str(tiny_npz), "test", progress=False)
    assert path == trained_run / "evaluations" / "toy.npz-test.json"
    assert json.loads(path.read_text())["accuracy"] == metrics["accuracy"] and metrics["n"] == 60
    unlabelled = tiny_npz.parent / "unlabelled.npz"
    np.savez(unlabelled, x=np.zeros((4, 6), np.float32))
    with pytest.raises(DataError, match="has no labels; use `transferkit predict`"):
        evaluate_run(trained_run, str(unlabelled), "all", progress=False)


def test_evaluate_errors(tmp_path: Path, trained_run: Path) -> None:
    code, out = invoke("evaluate", tmp_path / "missing-run", "--data", "digits-uci")
    assert code == 2 and "missing-run" in out
    code, out = invoke("evaluate", trained_run, "--data", "digits-uci", "--split", "test")
    assert code == 2 and "classes" in out  # a 2-class model cannot be scored on 10 digit classes


def test_predict(trained_run: Path, tiny_npz: Path, tmp_path: Path) -> None:
    out_csv = tmp_path / "preds.csv"
    code, out = invoke("predict", trained_run, "--data", tiny_npz, "--split", "test", "--out", out_csv)
    assert code == 0, out
    rows = out_csv.read_text().splitlines()
    assert rows[0] == "index,input,label,prediction,confidence" and len(rows) == 61
    assert {r.split(",")[3] for r in rows[1:]} <= {"neg", "pos"}


def test_extract_streams_features(tmp_path: Path) -> None:
    out = tmp_path / "feats.npz"
    code, text = invoke("extract", "--data", "digits-uci", "--split", "test", "--backbone", "lenet", "--out", out,
                        "--batch-size", "100")
    assert code == 0, text
    with np.load(out) as z:
        assert z["features"].shape == (898, 500) and z["labels"].shape == (898,)
    code, text = invoke("extract", "--data", "digits-uci", "--out", out)
    assert code == 2 and "--overwrite" in text
    code, text = invoke("extract", "--data", "digits-uci", "--out", tmp_path / "x.txt")
    assert code == 2 and ".npz" in text


def test_report_rebuilds_markdown_and_plots(trained_run: Path) -> None:
    (trained_run / "report.md").unlink()
    (trained_run / "learning_curves.png").unlink()
    code, out = invoke("report", trained_run)
    assert code == 0, out
    assert (trained_run / "report.md").is_file() and (trained_run / "learning_curves.png").is_file()
    code, out = invoke("report", trained_run.parent / "nothing")
    assert code == 2


def test_demo_walks_the_whole_loop_at_a_tiny_size(tmp_path: Path) -> None:
    code, out = invoke("demo", "--output-dir", tmp_path, "--name", "demo", "--seeds", "0,1", "--steps", "6",
                       "--finetune-epochs", "1", "--no-progress")
    assert code == 0, out
    root = tmp_path / "demo"
    summary = json.loads((root / "report.json").read_text())
    assert set(summary["rows"]) == {"source only", "adapted: dann", "scratch (10/class)", "fine-tuned: full (10/class)"}
    assert summary["budget"] == "6 steps of batch 64"
    assert {g["name"] for g in summary["gap"]} == {"mmd2", "proxy_a"} and set(summary["adaptation_gap"]["dann"]) == {
        "mmd2", "proxy_a"}
    for f in ("comparison.png", "report.md", "report.html"):
        assert (root / f).is_file(), f
    page = (root / "report.html").read_text()
    assert "Domain gap" in page and "adapt-dann/report.html" in page and "data:image/png;base64" in page
    # the guard's twin is the pre-training run's model (same settings and seed): reused, never trained twice
    for seed in (0, 1):
        guard = json.loads((root / "adapt-dann" / f"seed-{seed}" / "report.json").read_text())["guard"]
        assert guard["twin"].startswith("reused")
    assert "report.html" in out and "scratch" in out


def test_list_commands() -> None:
    code, out = invoke("datasets")
    assert code == 0 and "mnist-5k" in out and "digits-uci" in out
    code, out = invoke("backbones")
    assert code == 0 and "timm:NAME" in out


@pytest.mark.parametrize(
    "command", ["fit", "evaluate", "predict", "extract", "report", "demo", "methods", "measure", "sweep", "rank"]
)
def test_every_help_shows_an_example(command: str) -> None:
    code, out = invoke(command, "--help")
    assert code == 0 and "Example" in out and f"transferkit {command}" in out


def test_module_entry_point_runs() -> None:
    proc = subprocess.run([sys.executable, "-m", "transferkit", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "fit" in proc.stdout


def test_unknown_command_is_a_usage_error() -> None:
    code, _ = invoke("frobnicate")
    assert code == 2


def _image_tree(root: Path, per_class: int = 6) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls, base in (("ants", 40), ("bees", 200)):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                arr = np.clip(base + rng.normal(0, 20, (48, 64, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(folder / f"{i}.jpg")
    return root


def test_fit_pretrained_linear_probe_on_an_image_folder(tmp_path: Path) -> None:
    tree = _image_tree(tmp_path / "hymenoptera")
    code, out = invoke(
        "fit", "--source", tree, "--backbone", "torchvision:mobilenet_v2", "--pretrained", "--strategy",
        "linear-probe", "--epochs", "3", "--lr", "0.05", "--name", "img", "--output-dir", tmp_path / "runs",
        "--set", "data.eval_split=val", "--no-progress",
    )
    assert code == 0, out
    report = json.loads((tmp_path / "runs" / "img" / "report.json").read_text())
    assert report["classes"] == ["ants", "bees"]
    assert report["evaluations"]["source"]["accuracy"] == 1.0  # dark vs bright images: trivially separable


def test_a_linear_probe_without_a_training_length_is_solved_as_logistic_regression(tmp_path: Path) -> None:
    tree = _image_tree(tmp_path / "hymenoptera")
    code, out = invoke(
        "fit", "--source", tree, "--backbone", "torchvision:mobilenet_v2", "--pretrained", "--strategy",
        "linear-probe", "--name", "img", "--output-dir", tmp_path / "runs", "--set", "data.eval_split=val",
        "--no-progress",
    )
    assert code == 0, out
    run = tmp_path / "runs" / "img"
    report = json.loads((run / "report.json").read_text())
    fit = report["per_seed"][0]["fit"] if "per_seed" in report else report["fit"]
    assert fit["solver"].startswith("L2 logistic regression by L-BFGS, C=1;") and fit["probe_c"] == 1.0
    assert report["selection"].startswith("none: the linear probe is solved by L-BFGS")
    assert "Fitted in" in (run / "report.md").read_text()
    assert report["evaluations"]["source"]["accuracy"] == 1.0
    code, out = invoke("evaluate", run, "--data", tree, "--split", "val")  # the saved head is the fitted one
    assert code == 0, out
    again = json.loads((run / "evaluations" / "hymenoptera-val.json").read_text())
    assert again["accuracy"] == 1.0


def test_fit_on_a_tree_with_a_corrupt_image_exits_2_before_training(tmp_path: Path) -> None:
    tree = _image_tree(tmp_path / "tree")
    bad = tree / "train" / "bees" / "3.jpg"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated JPEG
    code, out = invoke("fit", "--source", tree, "--backbone", "lenet", "--name", "broken",
                       "--output-dir", tmp_path / "runs", "--no-progress")
    assert code == 2 and "3.jpg" in out
    assert not (tmp_path / "runs" / "broken").exists()


def test_fit_on_an_empty_class_folder_exits_2(tmp_path: Path) -> None:
    tree = _image_tree(tmp_path / "tree")
    (tree / "train" / "wasps").mkdir()
    code, out = invoke("fit", "--source", tree, "--name", "empty", "--output-dir", tmp_path / "runs", "--no-progress")
    assert code == 2 and "wasps" in out


def test_methods_lists_every_method() -> None:
    code, out = invoke("methods")
    assert code == 0
    for name in ("dann", "cdan+e", "mcc", "self-training"):
        assert name in out


def test_fit_with_an_adaptation_method(tmp_path: Path, tiny_npz: Path) -> None:
    code, out = invoke("fit", "--source", tiny_npz, "--target", tiny_npz, "--backbone", "mlp", "--epochs", "2",
                       "--method", "dann", "--lambda", "0.5", "--set", "adapt.schedule=ramp", "--set",
                       "model.bottleneck_dim=8", "--name", "da", "--output-dir", tmp_path, "--no-progress")
    assert code == 0, out
    first = json.loads((tmp_path / "da" / "metrics.jsonl").read_text().splitlines()[0])
    assert "loss/dann" in first and "loss/source_ce" in first
    report = json.loads((tmp_path / "da" / "report.json").read_text())
    assert report["method"] == "dann"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--method", "dannn"], "unknown method"),
        (["--method", "dann", "--lambda", "-1"], "adapt.weight"),
        (["--method", "mcc", "--set", "adapt.options={bogus: 1}"], "no option"),
        (["--method", "dan", "--set", "adapt.options={kernels: 0}"], "adapt.options.kernels"),
        (["--method", "mcc", "--set", "adapt.options={temperature: 0}"], "adapt.options.temperature"),
        (["--method", "dann", "--set", "adapt.options={hidden: abc}"], "adapt.options.hidden"),
        (["--method", "coral", "--strategy", "linear-probe"], "model.bottleneck_dim"),
        (["--method", "coral", "--batch-size", "1"], "data.batch_size"),
        (["--set", "model.backbone_kwargs={foo: 1}"], "backbone_kwargs"),
        (["--set", "data.val_split=test", "--set", "data.eval_split=test"], "val_split"),
    ],
)
def test_fit_bad_adaptation_settings(tmp_path: Path, tiny_npz: Path, args: list[str], needle: str) -> None:
    code, out = invoke("fit", "--source", tiny_npz, "--target", tiny_npz, "--backbone", "mlp", "--name", "bad",
                       "--output-dir", tmp_path, "--no-progress", *args)
    assert code == 2 and needle in out, out
    assert not (tmp_path / "bad").exists()


def test_method_without_target_is_refused(tmp_path: Path, tiny_npz: Path) -> None:
    code, out = invoke("fit", "--source", tiny_npz, "--backbone", "mlp", "--method", "dann", "--name", "nt",
                       "--output-dir", tmp_path, "--no-progress")
    assert code == 2 and "data.target" in out


def test_adapting_to_an_unlabelled_target(tmp_path: Path, tiny_npz: Path) -> None:
    with np.load(tiny_npz) as z:
        unlabelled = tmp_path / "unlabelled.npz"
        np.savez(unlabelled, x_train=z["x_train"] + 0.5, x_test=z["x_test"] + 0.5)
    code, out = invoke("fit", "--source", tiny_npz, "--target", unlabelled, "--backbone", "mlp", "--epochs", "2",
                       "--method", "coral", "--name", "unl", "--output-dir", tmp_path, "--no-progress")
    assert code == 0, out
    report = json.loads((tmp_path / "unl" / "report.json").read_text())
    assert "target" not in report["evaluations"] and "not scored" in report["selection"]


def test_cuda_without_a_gpu_is_refused_up_front(tmp_path: Path, tiny_npz: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, out = invoke("fit", "--source", tiny_npz, "--backbone", "mlp", "--set", "train.device=cuda", "--name", "c",
                       "--output-dir", tmp_path, "--no-progress")
    assert code == 2 and "cuda" in out
    assert not (tmp_path / "c").exists()


def test_measure_prints_the_gap_table_and_writes_json(tmp_path: Path, tiny_npz: Path) -> None:
    rng = np.random.default_rng(1)
    shifted = tmp_path / "shifted.npz"
    np.savez(shifted, x_train=rng.normal(size=(80, 6)).astype(np.float32) + 3.0, y_train=rng.integers(0, 2, 80),
             classes=np.array(["neg", "pos"]))
    out = tmp_path / "gap.json"
    code, text = invoke("measure", "--source", tiny_npz, "--target", shifted, "--permutations", "50",
                        "--per-class", "--json", out)
    assert code == 0, text
    for name in ("mmd2", "proxy_a", "coral", "wasserstein", "sliced_wasserstein", "per class"):
        assert name in text
    payload = json.loads(out.read_text())
    gaps = {g["name"]: g for g in payload["gaps"]}
    assert gaps["mmd2"]["p_value"] < 0.05 and gaps["proxy_a"]["value"] > 1.5
    assert set(payload["per_class_mmd2"]) == {"neg", "pos"}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--target", "digits-uci"], "differ in size"),
        (["--target", "mnist-5k", "--measures", "kl"], "unknown measure"),
        (["--target", "nowhere.npz"], "nowhere.npz"),
        (["--target", "mnist-5k", "--permutations", "0"], "--permutations"),
    ],
)
def test_measure_bad_input_exits_2(args: list[str], needle: str) -> None:
    code, text = invoke("measure", "--source", "mnist-5k", *args)
    assert code == 2 and needle in text, text


def test_sweep_chooses_without_target_labels_and_rejects_collapse(tmp_path: Path, tiny_npz: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(
        f"name: sw\noutput_dir: {tmp_path / 'runs'}\n"
        f"data: {{source: {tiny_npz}, target: {tiny_npz}, batch_size: 32}}\n"
        # two hidden layers (the default has one): enough capacity for λ = 1000 to collapse the target in 3 epochs
        "model: {backbone: mlp, backbone_kwargs: {depth: 2}}\ntrain: {epochs: 3, lr: 0.01, device: cpu}\n"
    )
    code, text = invoke("sweep", base, "--over", "method=entropy", "--over", "lambda=0.01,1000", "--select",
                        "info_max", "--no-progress")
    assert code == 0, text
    result = json.loads((tmp_path / "runs" / "sw" / "sweep.json").read_text())
    rows = {r["name"]: r for r in result["rows"]}
    assert set(rows) == {"00-methodentropy-weight0.01", "01-methodentropy-weight1000"}
    assert rows["01-methodentropy-weight1000"]["collapsed"]  # λ = 1000 collapses the target
    assert result["chosen"] == "00-methodentropy-weight0.01" and "◀ chosen" in text
    assert result["with_target_labels"]["would_choose"] in rows and "labels chose nothing" in text
    code, text = invoke("sweep", base, "--over", "method=entropy")  # the sweep directory exists now
    assert code == 2 and "exists" in text


def test_sweep_searches_a_range_with_optuna(tmp_path: Path, tiny_npz: Path) -> None:
    pytest.importorskip("optuna")
    base = tmp_path / "base.yaml"
    base.write_text(
        f"name: sw\noutput_dir: {tmp_path / 'runs'}\n"
        f"data: {{source: {tiny_npz}, target: {tiny_npz}, batch_size: 32}}\n"
        "model: {backbone: mlp}\ntrain: {epochs: 2, lr: 0.01, device: cpu}\n"
    )
    code, text = invoke("sweep", base, "--over", "method=dann,entropy", "--over", "lambda=0.01:1:log", "--trials", "3",
                        "--select", "info_max", "--no-progress")
    assert code == 0, text
    result = json.loads((tmp_path / "runs" / "sw" / "sweep.json").read_text())
    assert result["search"] == "optuna-tpe" and len(result["rows"]) == 3
    for row in result["rows"]:
        assert row["overrides"]["adapt.method"] in ("dann", "entropy")
        assert 0.01 <= row["overrides"]["adapt.weight"] <= 1.0
        assert (tmp_path / "runs" / "sw" / row["name"]).is_dir()
    assert result["chosen"] in {r["name"] for r in result["rows"]}


@pytest.mark.parametrize(
    ("over", "select", "needle"),
    [(["methoddann"], "dev", "key=v1,v2"), (["nosuch.key=1"], "dev", "not a config field"),
     (["method=dann"], "oracle", "unknown validator"), (["lambda=1:0"], "dev", "low < high"),
     (["method=dann", "--trials", "3"], "dev", "this sweep is a grid")],
)
def test_sweep_bad_input_exits_2(tmp_path: Path, tiny_npz: Path, over: list[str], select: str, needle: str) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(f"name: sw\noutput_dir: {tmp_path / 'runs'}\ndata: {{source: {tiny_npz}, target: {tiny_npz}}}\n"
                    "model: {backbone: mlp}\n")
    args = [a for o in over for a in (("--over", o) if not o.startswith("--") and not o.isdigit() else (o,))]
    code, text = invoke("sweep", base, *args, "--select", select, "--no-progress")
    assert code == 2 and needle in text, text
    assert not (tmp_path / "runs" / "sw").exists()  # nothing written on bad input


def test_rank_scores_every_candidate_and_writes_json(tmp_path: Path, tiny_npz: Path, trained_run: Path) -> None:
    out = tmp_path / "rank.json"
    model = f"file:{trained_run / 'model.safetensors'}"
    code, text = invoke("rank", "--data", tiny_npz, "--backbones", f"mlp,{model}", "--metrics", "logme,hscore,leep",
                        "--no-progress", "--json", out)
    assert code == 0, text
    rows = {r["candidate"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"mlp", model}
    assert rows["mlp"]["scores"]["leep"] is None and rows[model]["scores"]["leep"] <= 0  # LEEP needs a classifier
    # the trained model's features separate the toy classes better than a random MLP's
    assert rows[model]["scores"]["logme"] > rows["mlp"]["scores"]["logme"]
    assert "need a source classifier" in text


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--backbones", "mlp", "--metrics", "accuracy"], "unknown transferability metric"),
     (["--backbones", "nosuch"], "unknown backbone"),
     (["--backbones", "mlp", "--limit", "1"], "--limit")],
)
def test_rank_bad_input_exits_2(tiny_npz: Path, args: list[str], needle: str) -> None:
    code, text = invoke("rank", "--data", tiny_npz, *args, "--no-progress")
    assert code == 2 and needle in text, text


def test_fit_refuses_a_pickled_model_unless_trusted(tmp_path: Path, tiny_npz: Path) -> None:
    import torch

    from transferkit.models.backbones import create_backbone

    pickled = tmp_path / "whole_body.pt"
    torch.save(create_backbone("mlp", in_features=6).body, pickled)  # a whole module, not a state dict
    args = ["fit", "--source", tiny_npz, "--backbone", "mlp", "--weights", pickled, "--epochs", "1",
            "--output-dir", tmp_path / "runs", "--no-progress"]
    code, out = invoke(*args, "--name", "refused")
    assert code == 2 and "pickled" in out and "--trust-pickle" in out
    assert not (tmp_path / "runs" / "refused").exists()
    code, out = invoke(*args, "--name", "trusted", "--trust-pickle")
    assert code == 0, out
    assert "trust_pickle: true" in (tmp_path / "runs" / "trusted" / "config.yaml").read_text()


@pytest.mark.parametrize("command", ["fit", "evaluate", "predict", "extract", "measure", "rank", "sweep", "report"])
def test_help_fits_80_columns_without_cutting_anything(command: str) -> None:
    import os
    import shutil

    exe = shutil.which("transferkit", path=str(Path(sys.executable).parent))
    assert exe is not None
    done = subprocess.run([exe, command, "--help"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "80", "TERM": "dumb"})
    assert done.returncode == 0, done.stderr
    assert "…" not in done.stdout, [line for line in done.stdout.splitlines() if "…" in line]


def test_every_fit_flag_sets_a_config_key_that_exists_and_shows_its_description() -> None:
    import inspect
    import typing

    from transferkit.cli import FIT_FLAG_KEYS, fit
    from transferkit.config import RunConfig
    from transferkit.field_help import FIELD_HELP

    params = inspect.signature(fit, eval_str=True).parameters
    for flag, dotted in FIT_FLAG_KEYS.items():
        assert flag in params, f"FIT_FLAG_KEYS names {flag!r}, which is not a parameter of `fit`"
        model: type | None = RunConfig
        for part in dotted.split("."):
            assert part in model.model_fields, f"--{flag} sets {dotted!r}, which RunConfig does not have"
            field = model.model_fields[part]
            annotation = field.annotation
            model = annotation if isinstance(annotation, type) and hasattr(annotation, "model_fields") else None
        option = next(m for m in typing.get_args(params[flag].annotation)[1:] if hasattr(m, "help"))
        assert field.description == FIELD_HELP[dotted], f"{dotted}'s description is not FIELD_HELP's"
        assert option.help == FIELD_HELP[dotted], f"--{flag}'s help is not {dotted}'s description"
