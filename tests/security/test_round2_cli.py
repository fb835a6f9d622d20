"""Issue 29, second round, the command line's part: flags, output files, the offline switch and proxies, MLflow
folders, the demo's and the sweep's run names, bools in number fields. Each bad input is a one-line error with exit
code 2 (or the right result), never a traceback, and is refused before any work or any folder."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.config import parse_config
from transferkit.errors import ConfigError, NetworkDisabledError, RunDirError

runner = CliRunner()


def _invoke(*args: Any) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    extra = f"\n{result.exception!r}" if result.exit_code not in (0, 2) else ""
    return result.exit_code, result.output + extra


def _vectors(path: Path, n: int = 40) -> Path:
    rows = ["f0,f1,f2,label"] + [f"{(i % 2) + 0.1 * (i % 5)},{i % 3},{0.5 * (i % 2)},{i % 2}" for i in range(n)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _fit_args(tmp: Path, name: str) -> list[Any]:
    return ["fit", "--source", _vectors(tmp / "d.csv"), "--backbone", "mlp", "--epochs", "1", "--no-progress",
            "--output-dir", tmp / "runs", "--name", name, "--set", "train.threads=1",
            "--set", "model.backbone_kwargs={hidden: 8, depth: 1}"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A one-epoch mlp run and its data: (run folder, data file)."""
    tmp = tmp_path_factory.mktemp("round2cli")
    code, text = _invoke(*_fit_args(tmp, "r"))
    assert code == 0, text
    return tmp / "runs" / "r", tmp / "d.csv"


# -- item 10: outputs -----------------------------------------------------------------------------------------------
def test_predict_does_not_overwrite_a_file_without_overwrite(trained: tuple[Path, Path], tmp_path: Path) -> None:
    run, data = trained
    important = tmp_path / "important.csv"
    important.write_text("keep me\n", encoding="utf-8")
    code, text = _invoke("predict", run, "--data", data, "--split", "train", "--out", important)
    assert code == 2 and "already exists" in text and "--overwrite" in text and "Traceback" not in text
    assert important.read_text(encoding="utf-8") == "keep me\n"
    code, text = _invoke("predict", run, "--data", data, "--split", "train", "--out", important, "--overwrite")
    assert code == 0, text
    assert important.read_text(encoding="utf-8").startswith("index,input,label,prediction,confidence")


def _special_targets(tmp_path: Path) -> dict[str, Path]:
    """A FIFO, a folder and links to a device, all inside tmp_path (never the system's own /dev nodes: run as root,
    the old code replaced whatever it was given)."""
    if not hasattr(os, "mkfifo") or not Path("/dev/full").exists():
        pytest.skip("needs POSIX FIFOs and /dev/full")
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    full = tmp_path / "full.csv"
    full.symlink_to("/dev/full")
    null = tmp_path / "null.npz"
    null.symlink_to("/dev/null")
    return {"fifo": fifo, "folder": folder, "link to /dev/full": full, "link to /dev/null": null}


def _unchanged(targets: dict[str, Path]) -> None:
    assert stat.S_ISFIFO(targets["fifo"].lstat().st_mode)
    assert targets["folder"].is_dir() and not any(targets["folder"].iterdir())
    assert os.readlink(targets["link to /dev/full"]) == "/dev/full"
    assert os.readlink(targets["link to /dev/null"]) == "/dev/null"


@pytest.mark.parametrize("overwrite", [False, True])
def test_outputs_never_replace_a_device_fifo_or_folder(trained: tuple[Path, Path], tmp_path: Path,
                                                       overwrite: bool) -> None:
    run, data = trained
    targets = _special_targets(tmp_path)
    flag = ["--overwrite"] if overwrite else []
    for what, target in targets.items():
        if target.suffix == ".csv":
            code, text = _invoke("predict", run, "--data", data, "--split", "train", "--out", target, *flag)
        else:
            code, text = _invoke("extract", "--data", data, "--backbone", "mlp", "--out", target, *flag)
        assert code == 2 and "regular file" in text and "Traceback" not in text, (what, text)
    code, text = _invoke("measure", "--source", data, "--target", data, "--json", targets["fifo"], *flag)
    assert code == 2 and "--json" in text and "regular file" in text
    _unchanged(targets)


def test_measure_and_rank_json_refuse_an_existing_file_before_any_work(tmp_path: Path) -> None:
    existing = tmp_path / "r.json"
    existing.write_text("{}", encoding="utf-8")
    # the data does not even exist: the output is checked first
    code, text = _invoke("measure", "--source", tmp_path / "nope.csv", "--target", tmp_path / "nope.csv",
                         "--json", existing)
    assert code == 2 and "already exists" in text and "--overwrite" in text
    code, text = _invoke("rank", "--data", tmp_path / "nope.csv", "--backbones", "mlp", "--json", existing)
    assert code == 2 and "already exists" in text
    assert existing.read_text(encoding="utf-8") == "{}"


def test_atomic_path_rechecks_the_target_when_it_moves_the_file_into_place(tmp_path: Path) -> None:
    from transferkit.runs import atomic_path

    target = tmp_path / "out.csv"
    with pytest.raises(RunDirError, match="already exists"), atomic_path(target, overwrite=False) as tmp:
        tmp.write_text("new", encoding="utf-8")
        target.write_text("appeared meanwhile", encoding="utf-8")  # e.g. another process, during a long predict
    assert target.read_text(encoding="utf-8") == "appeared meanwhile"
    target.unlink()
    with pytest.raises(RunDirError, match="a FIFO"), atomic_path(target) as tmp:
        tmp.write_text("new", encoding="utf-8")
        os.mkfifo(target)
    assert stat.S_ISFIFO(target.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]  # no temporary file left


# -- item 11: offline refuses proxies -----------------------------------------------------------------------------
@pytest.fixture
def fake_proxy(monkeypatch: pytest.MonkeyPatch) -> socket.socket:
    """A listening socket on loopback named by every proxy variable: whatever connects to it is a leak."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.3)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    for key in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(key, url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    yield listener
    listener.close()


def _reached(listener: socket.socket) -> bool:
    try:
        conn, _ = listener.accept()
    except TimeoutError:
        return False
    conn.close()
    return True


def test_offline_mode_does_not_go_out_through_a_loopback_proxy(fake_proxy: socket.socket, tmp_path: Path) -> None:
    import urllib.request

    import torch.hub

    from transferkit.network import offline

    url = fake_proxy.getsockname()
    before = os.environ["HTTPS_PROXY"]
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(2)  # the old code hung waiting for the proxy's answer
    try:
        with offline():
            assert not any(k.lower().endswith("_proxy") and k.lower() != "no_proxy" for k in os.environ)
            with pytest.raises(NetworkDisabledError):
                urllib.request.urlopen("https://download.pytorch.org/models/x.pth", timeout=2)
            with pytest.raises(NetworkDisabledError):
                torch.hub.download_url_to_file("https://download.pytorch.org/models/x.pth", str(tmp_path / "x.pth"),
                                               progress=False)
            # a proxy given in code is bypassed too (no_proxy=*), not only the variables'
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({"https": f"http://{url[0]}:{url[1]}"}))
            with pytest.raises(NetworkDisabledError):
                opener.open("https://download.pytorch.org/models/x.pth", timeout=2)
    finally:
        socket.setdefaulttimeout(old_timeout)
    assert not _reached(fake_proxy), "a request left through the loopback proxy"
    assert os.environ["HTTPS_PROXY"] == before and "NO_PROXY" not in os.environ  # put back as they were


def test_set_offline_clears_the_proxies_and_puts_them_back(fake_proxy: socket.socket) -> None:
    from transferkit.network import offline, set_offline

    before = {k: v for k, v in os.environ.items() if k.lower().endswith("_proxy")}
    set_offline(True)
    with offline():  # nested: still cleared inside and after the block
        assert "HTTPS_PROXY" not in os.environ and os.environ["no_proxy"] == "*"
    assert "HTTPS_PROXY" not in os.environ
    set_offline(False)
    assert {k: v for k, v in os.environ.items() if k.lower().endswith("_proxy")} == before


# -- item 9: MLflow in a folder ---------------------------------------------------------------------------------------
def test_mlflow_in_a_folder_works_and_a_file_is_refused_before_the_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "false")  # recorded, then unset as on a clean machine: the
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")  # test leaves the variable as it found it
    store = tmp_path / "mlruns"
    code, text = _invoke(*_fit_args(tmp_path, "tracked"), "--log-to", "mlflow", "--set",
                         f"tracking.mlflow_uri={store}")
    assert code == 0, text
    run_id = (tmp_path / "runs" / "tracked" / "mlflow_run_id.txt").read_text(encoding="utf-8").strip()
    assert any(p.name == run_id for p in store.glob("*/*")), "the MLflow run is not in the folder"

    a_file = tmp_path / "store.txt"
    a_file.write_text("x", encoding="utf-8")
    code, text = _invoke(*_fit_args(tmp_path, "refused"), "--log-to", "mlflow", "--set",
                         f"tracking.mlflow_uri={a_file.as_uri()}")
    assert code == 2 and "is a file, not a folder" in text and "Traceback" not in text
    assert not (tmp_path / "runs" / "refused").exists()


def test_a_tracker_that_cannot_open_warns_and_the_run_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transferkit.runs import RunDir
    from transferkit.train import tracking

    class Refusing:
        def __init__(self, *args: Any) -> None:
            raise RuntimeError("The filesystem tracking backend is in maintenance mode")

    monkeypatch.setattr(tracking, "MlflowTracker", Refusing)
    with pytest.warns(RuntimeWarning, match="tracking 'mlflow' could not start: RuntimeError: The filesystem"):
        group = tracking.open_trackers(["csv", "mlflow"], RunDir(tmp_path), run_name="x", config={})
    assert [name for name, _ in group.trackers] == ["csv"]


# -- item 12: tracebacks from plain flags ---------------------------------------------------------------------------
BAD_FLAGS = {  # RUN, DATA and TMP stand for the trained run, its data and the test's empty folder
    "evaluate --batch-size 0": ["evaluate", "RUN", "--data", "DATA", "--split", "train", "--batch-size", "0"],
    "predict --batch-size -3": ["predict", "RUN", "--data", "DATA", "--split", "train", "--out", "TMP/p.csv",
                                "--batch-size", "-3"],
    "extract --batch-size 0": ["extract", "--data", "DATA", "--backbone", "mlp", "--out", "TMP/f.npz",
                               "--batch-size", "0"],
    "extract --num-workers -1": ["extract", "--data", "DATA", "--backbone", "mlp", "--out", "TMP/f.npz",
                                 "--num-workers", "-1"],
    "extract --device foo": ["extract", "--data", "DATA", "--backbone", "mlp", "--out", "TMP/f.npz", "--device", "foo"],
    "measure --device foo": ["measure", "--source", "DATA", "--target", "DATA", "--backbone", "mlp", "--device", "foo"],
    "measure --device cuda:999": ["measure", "--source", "DATA", "--target", "DATA", "--backbone", "mlp",
                                  "--device", "cuda:999"],
    "rank --image-size 0": ["rank", "--data", "DATA", "--backbones", "mlp", "--image-size", "0"],
    "demo --name 300 chars": ["demo", "--output-dir", "TMP/demo", "--name", "x" * 300, "--steps", "1", "--seeds", "0"],
    "demo --name ../escape": ["demo", "--output-dir", "TMP/demo", "--name", "../escape", "--steps", "1", "--seeds",
                              "0"],
    "demo --shots 0": ["demo", "--output-dir", "TMP/demo", "--shots", "0", "--steps", "1", "--seeds", "0"],
}


@pytest.mark.parametrize("case", list(BAD_FLAGS))
def test_bad_flags_are_exit_2_before_any_work(trained: tuple[Path, Path], tmp_path: Path, case: str) -> None:
    run, data = trained
    places = {"RUN": str(run), "DATA": str(data), "TMP": str(tmp_path)}
    args = [places.get(a, a.replace("TMP", str(tmp_path))) for a in BAD_FLAGS[case]]
    code, text = _invoke(*args)
    assert code == 2 and "Traceback" not in text, text
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output file, no run folder (nor ../escape)


# -- minor: bools are not numbers, the sweep's run names ------------------------------------------------------------
@pytest.mark.parametrize("override", [
    {"train.epochs": True}, {"train.lr": True}, {"seeds": [True]}, {"data.batch_size": True},
    {"model.bottleneck_dim": True}, {"finetune.lp_epochs": False}, {"model.heads": [{"name": "h", "weight": True}]},
])
def test_true_is_not_a_number_in_any_field(override: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="not true/false"):
        parse_config({}, override)


def test_bool_fields_still_take_bools() -> None:
    cfg = parse_config({}, {"model.pretrained": False, "online": True, "adapt.guard": False,
                            "model.backbone_kwargs": {"flag": True}})
    assert cfg.online is True and cfg.model.backbone_kwargs == {"flag": True}


def test_epochs_true_on_the_command_line(tmp_path: Path) -> None:
    code, text = _invoke(*_fit_args(tmp_path, "b"), "--set", "train.epochs=true")
    assert code == 2 and "train.epochs" in text and not (tmp_path / "runs").exists()


def test_a_sweep_checks_every_run_name_before_the_first_candidate_trains(tmp_path: Path) -> None:
    from transferkit.sweep import run_sweep

    base = parse_config({"name": "sw", "output_dir": str(tmp_path / "runs"), "data": {"source": str(
        _vectors(tmp_path / "d.csv"))}, "model": {"backbone": "mlp"}, "train": {"epochs": 1, "threads": 1}})
    with pytest.raises(ConfigError, match=r"run name .* cannot be a folder"):
        run_sweep(base, ["model.backbone=mlp," + "m" * 110], "entropy", progress=False)
    assert not (tmp_path / "runs").exists()  # the first candidate did not train
    with pytest.raises(ConfigError, match="cannot be a folder"):  # a search: each listed value at the last index
        run_sweep(base, ["lr=0.001:0.1:log", "model.backbone=mlp," + "m" * 110], "entropy", trials=2,
                  progress=False)
    assert not (tmp_path / "runs").exists()
