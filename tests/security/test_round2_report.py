"""Issue 29, second round: a run folder read back by ``transferkit report`` / ``evaluate`` is data.

A report.json from elsewhere may name any file as a plot, a seed or an evaluation; config.yaml, metrics.jsonl, a
seed's folder or ``evaluations`` may be links out of the run; numbers may not fit a float; class names may hold
matplotlib's math syntax. Each case is refused with one line naming the file (exit 2), or gives the right page,
and nothing outside the run folder is read, embedded or written. Run folders are made by hand (fast); one real
``fit`` (with ``$\\notacommand{x}$`` as a class name) serves the end-to-end cases.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.errors import RunDirError
from transferkit.evaluate.html import render_html
from transferkit.evaluate.plots import plot_confusion_matrix, plot_feature_map, plot_learning_curves
from transferkit.evaluate.run_files import check_seed, evaluations_folder, read_plot

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MATH = r"$\notacommand{x}$"


def _invoke(*args: Any) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    extra = f"\n{result.exception!r}" if result.exit_code not in (0, 2) else ""
    return result.exit_code, result.output + extra


def _seed_report(seed: int | str = 0, role: str = "target", plots: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report of one seed, of the shape pipeline.run writes (only what the report reads)."""
    evaluation = {"domain": "t", "n": 4, "accuracy": 0.5, "macro_f1": 0.5, "ece": 0.1,
                  "confusion_matrix": [[1, 1], [1, 1]], "per_class_accuracy": {"a": 0.5, "b": 0.5}}
    return {"name": "r", "backbone": "mlp", "strategy": "full", "source": "s.csv", "target": "t.csv",
            "method": "none", "classes": ["a", "b"], "selection": "last epoch", "seed": seed,
            "evaluations": {role: evaluation}, "plots": plots or {}}


def _run(root: Path, report: dict[str, Any], seeds: tuple[int, ...] = ()) -> Path:
    """A run folder holding ``report`` (a multi-seed run when ``seeds``: each seed's folder too)."""
    run = root / "run"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("name: r\n", encoding="utf-8")
    (run / "metrics.jsonl").write_text('{"epoch": 0, "phase": "train", "train_loss": 0.7}\n', encoding="utf-8")
    (run / "report.json").write_text(json.dumps(report), encoding="utf-8")
    for seed in seeds:
        (run / f"seed-{seed}").mkdir()
        (run / f"seed-{seed}" / "metrics.jsonl").write_text('{"epoch": 0, "train_loss": 0.7}\n', encoding="utf-8")
    return run


def _aggregate(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    head = {k: v for k, v in per_seed[0].items() if k not in ("seed", "evaluations", "plots")}
    return {**head, "seeds": [r["seed"] for r in per_seed], "summary": {}, "per_seed": per_seed}


def _secret_png(folder: Path) -> tuple[Path, str]:
    """A PNG-looking private file outside the run, and its base64 (what an embedding would put in the page)."""
    folder.mkdir(parents=True, exist_ok=True)
    secret = folder / "secret.png"
    secret.write_bytes(PNG_MAGIC + b"PRIVATE-BYTES-OF-THE-USER" * 4)
    return secret, base64.b64encode(secret.read_bytes()).decode("ascii")


# -- item 2: nothing embedded that the run did not write ------------------------------------------------------------
@pytest.mark.parametrize("kind", ["absolute", "dotdot", "passwd", "link", "fifo", "not-png"])
def test_a_plot_named_by_a_foreign_report_is_never_embedded(tmp_path: Path, kind: str) -> None:
    run = tmp_path / "victim" / "inbox" / "run"
    run.mkdir(parents=True)
    secret, secret_b64 = _secret_png(tmp_path / "victim")
    name = {"absolute": str(secret), "dotdot": "../../secret.png", "passwd": "/etc/passwd"}.get(kind,
                                                                                                 "learning_curves.png")
    if kind == "link":
        (run / name).symlink_to(secret)
    elif kind == "fifo":
        os.mkfifo(run / name)  # must not hang the page
    elif kind == "not-png":
        (run / name).write_bytes(b"PRIVATE TEXT, NOT AN IMAGE")
        secret_b64 = base64.b64encode((run / name).read_bytes()).decode("ascii")
    if kind == "passwd":
        secret_b64 = base64.b64encode(Path("/etc/passwd").read_bytes()).decode("ascii")
    page = render_html(_seed_report(plots={"learning curves": name}), run)
    assert secret_b64 not in page and "data:image/png" not in page
    assert "learning curves:" in page  # a note stands in its place


def test_the_run_s_own_plots_are_still_embedded(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    png = PNG_MAGIC + b"a real plot"
    (run / "confusion_target.png").write_bytes(png)
    assert read_plot(run, "confusion_target.png") == png
    page = render_html(_seed_report(plots={"confusion matrix (target)": "confusion_target.png"}), run)
    assert base64.b64encode(png).decode("ascii") in page


def test_report_on_a_foreign_multi_seed_run_embeds_nothing_from_outside(tmp_path: Path) -> None:
    _, secret_b64 = _secret_png(tmp_path / "inbox")  # seed-0/../../secret.png, from the run's seed folder
    seed = _seed_report(plots={"confusion matrix (target)": "../../secret.png", "feature map": "../../secret.png"})
    run = _run(tmp_path / "inbox", _aggregate([seed]), seeds=(0,))
    code, text = _invoke("report", run)
    assert code == 0, text
    for page in (run / "report.html", run / "seed-0" / "report.html"):
        assert secret_b64 not in page.read_text(encoding="utf-8")


def test_a_config_yaml_that_is_a_link_is_not_embedded(tmp_path: Path) -> None:
    private = tmp_path / "private.txt"
    private.write_text("aws_secret_access_key = PRIVATE-KEY-42\n", encoding="utf-8")
    run = _run(tmp_path / "inbox", _seed_report())
    (run / "config.yaml").unlink()
    (run / "config.yaml").symlink_to(private)
    code, text = _invoke("report", run)
    assert code == 0, text
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "PRIVATE-KEY-42" not in page and "symbolic link" in page


def test_a_config_yaml_that_is_not_utf8_is_named_not_report_json(tmp_path: Path) -> None:
    run = _run(tmp_path, _seed_report())
    (run / "config.yaml").write_bytes(b"name: \xff\xfe\n")
    code, text = _invoke("report", run)
    assert code == 0 and "report.json" not in text.replace(f"{run}/report.json", ""), text
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "config.yaml is not UTF-8" in page


@pytest.mark.parametrize("seed", ["x/../../victim", "0/../../victim", -1, 2**40, True, "0", 1.5])
def test_seed_names_that_are_not_integers_are_refused(tmp_path: Path, seed: Any) -> None:
    run = _run(tmp_path / "a" / "b", _aggregate([_seed_report(seed=seed)]))
    (run / "seed-x").mkdir()
    (run / "seed-0").mkdir()
    victim = tmp_path / "a" / "b" / "victim"  # where run/seed-x/../../victim leads
    victim.mkdir()
    code, text = _invoke("report", run)
    assert not (victim / "report.html").exists()
    assert code == 2 and "report.json" in text and "seed" in text and "Traceback" not in text, text
    assert check_seed(7, "r") == 7


def test_a_seed_folder_that_is_a_link_is_neither_read_nor_written(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "metrics.jsonl").write_text('{"epoch": 0, "train_loss": "not yours"}\n', encoding="utf-8")
    run = _run(tmp_path / "inbox", _aggregate([_seed_report(seed=0)]))
    (run / "seed-0").symlink_to(elsewhere, target_is_directory=True)
    code, text = _invoke("report", run)
    assert code == 0, text
    assert sorted(p.name for p in elsewhere.iterdir()) == ["metrics.jsonl"]


@pytest.mark.parametrize("role", ["../../../escaped", "a/b", "Target", ""])
def test_evaluation_names_that_cannot_be_file_names_are_refused(tmp_path: Path, role: str) -> None:
    run = _run(tmp_path / "a" / "b", _seed_report(role=role))
    (run / "confusion_..").mkdir()  # run/confusion_../../../escaped.png climbed out of the run with it
    code, text = _invoke("report", run)
    assert not (tmp_path / "a" / "b" / "escaped.png").exists()  # where run/confusion_../../escaped.png leads
    assert code == 2 and "report.json" in text and "evaluation named" in text, text


@pytest.mark.parametrize("name", ["report.json", "metrics.jsonl"])
def test_run_files_that_are_links_are_not_read(tmp_path: Path, name: str) -> None:
    other = _run(tmp_path / "other", _seed_report())  # a valid run elsewhere: following the link would work
    run = _run(tmp_path / "inbox", _seed_report())
    (run / name).unlink()
    (run / name).symlink_to(other / name)
    code, text = _invoke("report", run)
    assert code == 2 and name in text and "symbolic link" in text, text


# -- item 12 (part): numbers a run never writes -----------------------------------------------------------------
@pytest.mark.parametrize("where", ["accuracy", "matrix"])
def test_a_400_digit_number_in_report_json_is_a_clear_error(tmp_path: Path, where: str) -> None:
    report = _seed_report()
    big = 10**400
    if where == "matrix":
        report["evaluations"]["target"]["confusion_matrix"][0][0] = big
    else:
        report["evaluations"]["target"][where] = big
    run = _run(tmp_path, report)
    code, text = _invoke("report", run)
    assert code == 2 and "report.json" in text and "401-digit number" in text and "Traceback" not in text, text


def test_the_page_renders_numbers_that_do_not_fit_a_float(tmp_path: Path) -> None:
    report = _seed_report()
    report["evaluations"]["target"]["accuracy"] = 10**400  # render_html is public: it must not raise either
    page = render_html(report, tmp_path)
    assert "<table>" in page


def test_a_feature_map_declaring_terabytes_is_not_loaded(tmp_path: Path) -> None:
    run = _run(tmp_path, _seed_report())
    header = np.lib.format
    import io
    import zipfile

    buf = io.BytesIO()
    header.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (2**20, 2**20)})
    with zipfile.ZipFile(run / "feature_map.npz", "w") as zf:
        for key in ("after_source", "after_target"):
            zf.writestr(f"{key}.npy", buf.getvalue())
    code, text = _invoke("report", run)
    assert code == 0, text
    assert "No feature map" in (run / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("shapes", [((3 * 10**9,), (-3 * 10**9,)), ((2**10, 2**10), (1,))])
def test_a_feature_map_header_cannot_declare_around_the_size_check(tmp_path: Path, shapes: tuple) -> None:
    """A negative size summed in cancelled a huge one (the check saw 0 bytes, the load asked for 11 GiB); a header
    may not declare more than its member holds either."""
    import io
    import zipfile

    from transferkit.evaluate.run_files import _declared_bytes

    path = tmp_path / "feature_map.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for key, shape in zip(("after_source", "after_target"), shapes, strict=True):
            buf = io.BytesIO()
            np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
            zf.writestr(f"{key}.npy", buf.getvalue() + b"\0" * 4)
    with pytest.raises(RunDirError, match=r"negative size|declares"):
        _declared_bytes(path)


# -- item 8: labels are plain text in every plot ---------------------------------------------------------------
NAMES = [MATH, r"$x^$", "a$b$c$", "\\$", "%${}_^", "$\\frac{1}{0}$", "x" * 500, "line\nbreak"]


def test_plots_draw_math_syntax_in_names_literally(tmp_path: Path) -> None:
    n = len(NAMES)
    plot_confusion_matrix(np.eye(n, dtype=int).tolist(), NAMES, tmp_path / "cm.png", f"target: {MATH}")
    labels = np.arange(60) % n
    plot_feature_map((np.random.default_rng(0).random((60, 4)), np.random.default_rng(1).random((40, 4))),
                     tmp_path / "fm.png", source_labels=labels, classes=NAMES, title=MATH)
    plot_learning_curves([{"epoch": 0, "phase": MATH, "train_loss": 1.0}], tmp_path / "lc.png", MATH)
    assert all((tmp_path / f).read_bytes().startswith(PNG_MAGIC) for f in ("cm.png", "fm.png", "lc.png"))


@pytest.fixture(scope="module")
def math_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real run whose classes are ``$\\notacommand{x}$`` and ``b`` (it crashed after training before)."""
    root = tmp_path_factory.mktemp("math")
    rows = ["f0,f1,f2,label"] + [f"{(i % 2) + 0.1 * (i % 5)},{i % 3},{0.5 * (i % 2)},\"{[MATH, 'b'][i % 2]}\""
                                 for i in range(40)]
    (root / "d.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    code, text = _invoke("fit", "--source", root / "d.csv", "--backbone", "mlp", "--epochs", "1",
                         "--set", "train.threads=1", "--output-dir", root / "runs", "--name", "r", "--no-progress",
                         "--set", "model.backbone_kwargs={hidden: 8, depth: 1}")
    assert code == 0, text
    return root / "runs" / "r"


def test_class_names_with_math_syntax_finish_the_run_and_its_report(math_run: Path, tmp_path: Path) -> None:
    assert (math_run / "model.safetensors").is_file() and (math_run / "report.html").is_file()
    assert MATH in json.loads((math_run / "report.json").read_text(encoding="utf-8"))["classes"]
    run = Path(shutil.copytree(math_run, tmp_path / "r"))
    code, text = _invoke("report", run)
    assert code == 0, text
    assert (run / "learning_curves.png").is_file()


def test_evaluate_does_not_write_through_an_evaluations_link(math_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(math_run, tmp_path / "r"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "evaluations").symlink_to(elsewhere, target_is_directory=True)
    code, text = _invoke("evaluate", run, "--data", math_run.parent.parent / "d.csv")
    assert code == 2 and "evaluations" in text and "symbolic link" in text, text
    assert list(elsewhere.iterdir()) == []
    with pytest.raises(RunDirError, match="symbolic link"):
        evaluations_folder(run)
    (run / "evaluations").unlink()
    code, text = _invoke("evaluate", run, "--data", math_run.parent.parent / "d.csv")  # the plain case still works
    assert code == 0 and len(list((run / "evaluations").iterdir())) == 1, text


def test_a_seed_report_is_not_changed_by_rendering_it(tmp_path: Path) -> None:
    report = _seed_report(plots={"learning curves": "/etc/passwd"})
    before = copy.deepcopy(report)
    render_html(report, tmp_path)
    assert report == before


@pytest.mark.parametrize("layout", ["model", "seed-folder"])
def test_a_model_that_is_a_link_out_of_the_run_is_not_loaded(tmp_path: Path, layout: str) -> None:
    """evaluate / predict find a run's model inside its folder only: a link to a model elsewhere is named."""
    from transferkit.runs import RunDir

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "model.safetensors").write_bytes(b"not read")
    run = tmp_path / "inbox" / "run"
    run.mkdir(parents=True)
    if layout == "model":
        (run / "model.safetensors").symlink_to(elsewhere / "model.safetensors")
        with pytest.raises(RunDirError, match="symbolic link"):
            RunDir(run).find_model()
    else:
        (run / "seed-0").symlink_to(elsewhere, target_is_directory=True)
        with pytest.raises(RunDirError, match="symbolic link"):
            RunDir(run).find_model(seed=0)
        with pytest.raises(RunDirError, match="no finished model"):
            RunDir(run).find_model()  # the linked seed folder is not one of the run's seeds


# -- a foreign report's size: plots are bounded whatever it names ------------------------------------------------
def test_a_report_naming_thousands_of_classes_is_drawn_quickly(tmp_path: Path) -> None:
    """20,000 class names in a 190 KB report.json drew tick labels for minutes and gigabytes; past
    MAX_CONFUSION_CLASSES no matrix is drawn, past MAX_LABELLED_CLASSES no names are."""
    from transferkit.evaluate import plots

    report = _seed_report()
    report["classes"] = [f"c{i}" for i in range(20_000)]
    run = _run(tmp_path, report)
    code, text = _invoke("report", run)  # minutes and gigabytes before; a second or two now
    assert code == 0, text
    assert not (run / "confusion_target.png").exists()  # a 2 x 2 matrix for 20,000 classes: not drawn
    n = plots.MAX_LABELLED_CLASSES + 1
    png = plot_confusion_matrix(np.eye(n, dtype=int).tolist(), [f"c{i}" for i in range(n)], tmp_path / "cm.png")
    assert png is not None and png.read_bytes().startswith(PNG_MAGIC)
    big = plots.MAX_CONFUSION_CLASSES + 1
    assert plot_confusion_matrix([[0] * big] * big, [str(i) for i in range(big)], tmp_path / "no.png") is None


def test_learning_curves_of_thousands_of_seeds_draw_a_bounded_number(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from transferkit.evaluate import plots

    records = [{"phase": "train", "seed": s, "epoch": 0, "train_loss": 0.5} for s in range(5_000)]
    shown: list[int] = []
    real_plot = plots.plt.Axes.plot

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        shown.append(1)
        return real_plot(self, *args, **kwargs)

    monkeypatch.setattr(plots.plt.Axes, "plot", counting)
    png = plot_learning_curves(records, tmp_path / "curves.png")
    assert png is not None and png.read_bytes().startswith(PNG_MAGIC)
    assert len(shown) == plots.MAX_CURVES  # one train-loss line per curve shown, not 5,000
