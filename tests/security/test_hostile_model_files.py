"""Hostile model files: a model file is data. Whatever its metadata says, loading it never runs code, never reaches
the network, never follows a path out of the model's folder, and fails with a one-line transferkit error.

Each attack comes with a control where one exists: the same payload *does* fire when the user asks for it on the
command line (``--trust-remote-code``) or when unpickled freely, so the tests cannot pass because the payload was
broken.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import struct
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from helpers import invoke
from transferkit.errors import ModelError
from transferkit.models.backbones import META_KWARGS, META_SPEC, create_backbone
from transferkit.models.heads import TransferModel

_invoke = partial(invoke, show_crash=True)  # a crash (exit code not 0 or 2) shows its exception


def _model_run(run: Path) -> Path:
    """A real (tiny) transferkit run folder: config.yaml and a model.safetensors with an MLP backbone."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text("name: x\n", encoding="utf-8")
    torch.manual_seed(0)
    TransferModel(create_backbone("mlp", in_features=4, hidden=8, depth=1), ["a", "b"]).save(run / "model.safetensors")
    return run / "model.safetensors"


def _rewrite(path: Path, **meta: str | None) -> Path:
    """The same tensors, with metadata entries replaced (None removes one)."""
    with safe_open(str(path), "pt") as f:
        old = dict(f.metadata() or {})
    tensors = load_file(str(path))
    for k, v in meta.items():
        key = {"spec": META_SPEC, "kwargs": META_KWARGS}.get(k, k)
        if v is None:
            old.pop(key, None)
        else:
            old[key] = v
    save_file(tensors, str(path), metadata=old)
    return path


def _four_feature_csv(path: Path) -> Path:
    """Eight rows of the four features (classes a, b) that :func:`_model_run`'s MLP reads."""
    rows = ["f0,f1,f2,f3,label"] + [f"{i},{i % 3},{i % 2},1,{'ab'[i % 2]}" for i in range(8)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


# -- 1. code execution through a model folder's auto_map ---------------------------------------------------------
def _code_folder(folder: Path, marker: Path) -> Path:
    """A transformers folder whose config names its own Python file (auto_map) that writes ``marker`` on import."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "evil.py").write_text(  # subclasses: transformers marks a remote class as such, leave Bert* alone
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import BertConfig, BertModel\n"
        "class EvilConfig(BertConfig):\n    model_type = 'evil'\n"
        "class EvilModel(BertModel):\n    config_class = EvilConfig\n", encoding="utf-8")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil", "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"},
        "vocab_size": 8, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8,
    }), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer"}), encoding="utf-8")
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]),
                                      encoding="utf-8")
    return folder


@pytest.mark.parametrize("kwargs", ['{"trust_remote_code": true}', "{}"], ids=["asks-for-trust", "plain"])
def test_auto_map_code_never_runs_from_a_model_file(tmp_path: Path, kwargs: str) -> None:
    run, marker = tmp_path / "run", tmp_path / "PWNED"
    model = _model_run(run)
    _code_folder(run / "enc", marker)
    _rewrite(model, spec="hf:enc", kwargs=kwargs)
    data = _four_feature_csv(tmp_path / "d.csv")
    for command in (["evaluate", run, "--data", data], ["predict", run, "--data", data, "--out", tmp_path / "p.csv"],
                    ["extract", "--data", data, "--backbone", f"file:{model}", "--out", tmp_path / "f.npz"],
                    ["rank", "--data", data, "--backbones", f"file:{model}"]):
        code, text = _invoke(*command)
        assert code == 2 and "Traceback" not in text, (command, text)
        assert not marker.exists(), command
    if "trust_remote_code" in kwargs:
        assert "trust_remote_code" in text and "--trust-remote-code" in text
        _rewrite(model, kwargs="{}")
    # control: the payload is real -- the user's own flag on the command line does run it
    _invoke("evaluate", run, "--data", data, "--trust-remote-code")
    assert marker.exists()


def test_init_from_a_model_file_runs_no_code(tmp_path: Path) -> None:
    run, marker = tmp_path / "run", tmp_path / "PWNED"
    model = _model_run(run)
    _code_folder(run / "enc", marker)
    _rewrite(model, spec="hf:enc", kwargs='{"trust_remote_code": true}')
    data = _four_feature_csv(tmp_path / "d.csv")
    code, text = _invoke("fit", "--source", data, "--backbone", "mlp", "--init-from", model, "--epochs", "1",
                         "--output-dir", tmp_path / "runs", "--name", "x", "--no-progress",
                         "--set", "model.backbone_kwargs={hidden: 8, depth: 1}", "--set", "data.val_fraction=0")
    assert not marker.exists()
    assert code in (0, 2) and "Traceback" not in text, text


# -- 2. the network through a model file --------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", ['{"pretrained": true, "online": true}', '{"weights": "/etc/passwd"}',
                                    '{"pretrained_cfg_overlay": {"url": "http://example.com/w.pth"}}'])
def test_metadata_cannot_ask_for_downloads_or_other_files(tmp_path: Path, kwargs: str) -> None:
    run = tmp_path / "run"
    _rewrite(_model_run(run), spec="torchvision:resnet18", kwargs=kwargs)
    code, text = _invoke("evaluate", run, "--data", _four_feature_csv(tmp_path / "d.csv"))
    key = next(iter(json.loads(kwargs)))
    assert code == 2 and f"{key!r}" in text and "Traceback" not in text, text
    assert "NetworkBlocked" not in text and "URLError" not in text


def test_offline_mode_blocks_libraries_that_ignore_the_hub_variables() -> None:
    # torch.hub and torchvision downloads go through urllib and do not read HF_HUB_OFFLINE: the socket guard stops
    # them, with transferkit's own error (not the test suite's guard, which sits below it)
    from transferkit.errors import NetworkDisabledError
    from transferkit.network import offline

    with offline(), pytest.raises(NetworkDisabledError, match="--online"):
        torch.hub.load_state_dict_from_url("https://download.pytorch.org/models/resnet18-f37072fd.pth",
                                           model_dir=os.devnull + "-never")
    import torchvision

    with offline(), pytest.raises(NetworkDisabledError):
        torchvision.models.resnet18(weights="DEFAULT")


def test_every_cli_command_starts_offline(tmp_path: Path) -> None:
    import urllib.request

    from transferkit.errors import NetworkDisabledError
    from transferkit.network import is_offline, set_offline

    set_offline(False)
    _invoke("datasets")  # any command, even one that loads nothing
    try:
        assert is_offline() and os.environ["HF_HUB_OFFLINE"] == "1"
        with pytest.raises(NetworkDisabledError):
            urllib.request.urlopen("http://example.com", timeout=1)
    finally:
        set_offline(False)
    assert not is_offline()


# -- 3. paths that leave the model's folder -----------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["hf:../outside", "st:../outside", "onnx:../outside/m.onnx", "hf:/etc",
                                  "onnx:/dev/zero", "hf:link", "hf:model.backbone/../../outside", "st:a\x00b"])
def test_metadata_paths_stay_inside_the_model_folder(tmp_path: Path, spec: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "m.onnx").write_bytes(b"\0" * 16)
    run = tmp_path / "run"
    model = _model_run(run)
    (run / "link").symlink_to(outside, target_is_directory=True)  # a link inside that leads out
    _rewrite(model, spec=spec, kwargs="{}")
    reason = "outside the model file's folder|an absolute path|not a file name"
    with pytest.raises(ModelError, match=reason):
        TransferModel.load(model)
    code, text = _invoke("evaluate", run, "--data", _four_feature_csv(tmp_path / "d.csv"))
    assert code == 2 and re.search(reason, text), text


def test_a_file_that_names_itself_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    model = _rewrite(_model_run(run), spec="file:model.safetensors")
    with pytest.raises(ModelError, match="never another file"):
        TransferModel.load(model)
    with pytest.raises(ModelError, match="never another file"):
        create_backbone(f"file:{model}")


@pytest.mark.parametrize(("meta", "match"), [
    ({"spec": None}, "does not say which architecture"),
    ({"spec": "mlp", "kwargs": "[1, 2]"}, "must hold a JSON dict"),
    ({"spec": "mlp", "kwargs": "{not json"}, "not valid JSON"),
    ({"spec": "mlp", "kwargs": "[" * 100_000}, "not valid JSON"),
    ({"spec": "mlp", "kwargs": json.dumps({"in_features": 4, "hidden": 8, "pad": "x" * 2_000_000})}, "characters long"),
    ({"spec": "mlp", "kwargs": '{"in_features": 4, "hidden": 100000000000}'}, "hidden must be an integer"),
    ({"transferkit.classes": '{"a": 1}'}, "must hold a JSON list"),
    ({"transferkit.tasks": json.dumps([{"name": "label", "kind": "classification", "outputs": 10**12}])},
     "outputs must be an integer"),
    ({"transferkit.tasks": json.dumps([{"name": "x", "kind": "classification", "__class__": 1}])}, "fields"),
    ({"transferkit.head": '{"bottleneck_dim": 10000000000}'}, "bottleneck_dim"),
])
def test_broken_or_hostile_metadata_is_a_model_error(tmp_path: Path, meta: dict[str, str | None], match: str) -> None:
    model = _rewrite(_model_run(tmp_path / "run"), **meta)
    with pytest.raises(ModelError, match=match):
        TransferModel.load(model)


# -- 4. files that are not what they claim ------------------------------------------------------------------------
def test_a_header_that_claims_too_much_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "run" / "model.safetensors"
    path.parent.mkdir()
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{" + b" " * 64)
    with pytest.raises(ModelError, match="header claims 1,099,511,627,776 bytes"):
        TransferModel.load(path)
    code, text = _invoke("evaluate", path.parent, "--data", _four_feature_csv(tmp_path / "d.csv"))
    assert code == 2 and "header claims" in text


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_pickle_named_safetensors_is_never_unpickled(tmp_path: Path, writer: str) -> None:
    marker, run = tmp_path / "PWNED", tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: x\n", encoding="utf-8")
    path = run / "model.safetensors"
    payload = {"weight": _Payload(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with path.open("wb") as fh:
            pickle.dump(payload, fh)
    for load in (lambda: TransferModel.load(path), lambda: create_backbone(f"file:{path}")):
        with pytest.raises(ModelError, match="is not a safetensors file"):
            load()
    code, text = _invoke("evaluate", run, "--data", _four_feature_csv(tmp_path / "d.csv"))
    assert code == 2 and "not a safetensors file" in text
    assert not marker.exists()
    # control: the payload does fire when the file is unpickled freely
    if writer == "torch.save":  # from bytes: torch.load hands a file *named* .safetensors to safetensors itself
        torch.load(io.BytesIO(path.read_bytes()), weights_only=False)
    else:
        pickle.loads(path.read_bytes())
    assert marker.exists()


def test_a_model_with_nan_weights_is_not_scored(tmp_path: Path) -> None:
    run = tmp_path / "run"
    model = _model_run(run)
    tensors = load_file(str(model))
    with safe_open(str(model), "pt") as f:
        meta = dict(f.metadata())
    tensors["head.fc.weight"][0, 0] = float("nan")
    save_file(tensors, str(model), metadata=meta)
    code, text = _invoke("evaluate", run, "--data", _four_feature_csv(tmp_path / "d.csv"))
    assert code == 2 and "non-finite weights" in text and "head.fc.weight" in text
    assert not (run / "evaluations").exists()


# -- what transferkit writes itself still loads: a moved run folder, a text model saved beside its files ---------
def test_a_saved_text_model_carries_its_files_and_loads_after_the_folder_moves(
    tmp_path: Path, tiny_text_model: Path
) -> None:
    torch.manual_seed(0)
    model = TransferModel(create_backbone(f"hf:{tiny_text_model}", max_length=16), ["neg", "pos"])
    path = model.save(tmp_path / "a" / "model.safetensors")
    with safe_open(str(path), "pt") as f:
        assert f.metadata()[META_SPEC] == "hf:model.backbone"  # no path outside the folder
    assert not any(p.name.endswith((".bin", ".safetensors")) for p in (tmp_path / "a" / "model.backbone").iterdir())
    moved = tmp_path / "b"
    (tmp_path / "a").rename(moved)
    back = TransferModel.load(moved / "model.safetensors")
    x = model.backbone.transform.batch(["good book", "bad blender"])
    model.eval()
    back.eval()
    with torch.no_grad():
        assert torch.equal(model(x)[1], back(x)[1])


# -- 5. files that describe far more than they hold (memory), or take for ever to build ----------------------------
@pytest.mark.parametrize(("meta", "match"), [
    ({"spec": "mlp", "kwargs": '{"in_features": 10000000, "hidden": 65536}'}, "backbone its metadata describes"),
    ({"spec": "timm:vit_7b_patch16_dinov3", "kwargs": "{}"}, "backbone its metadata describes"),
    ({"transferkit.head": '{"dropout": 0.0, "bottleneck_dim": 65536}',
      "transferkit.tasks": json.dumps([{"name": "label", "kind": "classification", "classes": ["a", "b"],
                                        "outputs": 2},
                                       {"name": "r", "kind": "regression", "field": "r", "outputs": 1000000,
                                        "offset": [0.0] * 1000000, "scale": [1.0] * 1000000}])},
     "heads its metadata describes|characters long"),
])
def test_an_architecture_larger_than_the_file_is_refused_before_allocating(
    tmp_path: Path, meta: dict[str, str], match: str
) -> None:
    # built on the meta device first and compared with the tensors the file holds: nothing real is allocated (a
    # 2.6 TB MLP or a 7-billion-parameter ViT would otherwise be, before the weights failed to load)
    model = _rewrite(_model_run(tmp_path / "run"), **meta)
    with pytest.raises(ModelError, match=match):
        TransferModel.load(model)


def test_a_config_with_more_layers_than_the_file_has_tensors(tmp_path: Path, tiny_text_model: Path) -> None:
    torch.manual_seed(0)
    path = TransferModel(create_backbone(f"hf:{tiny_text_model}", max_length=16), ["neg", "pos"]).save(
        tmp_path / "model.safetensors")
    config = json.loads((tmp_path / "model.backbone" / "config.json").read_text(encoding="utf-8"))
    config["num_hidden_layers"] = 100_000
    (tmp_path / "model.backbone" / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ModelError, match="num_hidden_layers = 100,000"):
        TransferModel.load(path)


def test_links_inside_the_backbone_folder_may_not_lead_out(tmp_path: Path, tiny_text_model: Path) -> None:
    torch.manual_seed(0)
    path = TransferModel(create_backbone(f"hf:{tiny_text_model}", max_length=16), ["neg", "pos"]).save(
        tmp_path / "m" / "model.safetensors")
    config = tmp_path / "m" / "model.backbone" / "config.json"
    (tmp_path / "outside.json").write_text(config.read_text(encoding="utf-8"), encoding="utf-8")
    config.unlink()
    config.symlink_to(tmp_path / "outside.json")
    with pytest.raises(ModelError, match=r"is a link to .*outside the model file's folder"):
        TransferModel.load(path)
    config.unlink()
    os.mkfifo(config)  # a FIFO a library would wait on for ever
    with pytest.raises(ModelError, match="not a regular file"):
        TransferModel.load(path)


@pytest.mark.parametrize(("task", "match"), [
    ({"name": "a.b", "kind": "regression", "field": "r", "outputs": 1, "offset": [0.0], "scale": [1.0]}, "bad name"),
    ({"name": "training", "kind": "regression", "field": "r", "outputs": 1, "offset": [0.0], "scale": [1.0]},
     "bad name"),
    ({"name": "r", "kind": "regression", "field": "r", "outputs": 2, "offset": [0.0], "scale": [1.0, 2.0, 3.0]},
     "offsets"),
    ({"name": "label", "kind": "multilabel", "classes": ["a", "b"], "outputs": 2}, "must classify"),
])
def test_tasks_that_cannot_be_heads(tmp_path: Path, task: dict[str, Any], match: str) -> None:
    tasks = [{"name": "label", "kind": "classification", "classes": ["a", "b"], "outputs": 2}]
    tasks = [task] if task["name"] == "label" else [*tasks, task]
    model = _rewrite(_model_run(tmp_path / "run"), **{"transferkit.tasks": json.dumps(tasks)})
    with pytest.raises(ModelError, match=match):
        TransferModel.load(model)


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.complex64, torch.uint32])
def test_tensor_types_a_model_never_holds_are_refused(tmp_path: Path, dtype: torch.dtype) -> None:
    model = _model_run(tmp_path / "run")
    with safe_open(str(model), "pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(model))
    tensors["head.fc.bias"] = tensors["head.fc.bias"].to(dtype)
    save_file(tensors, str(model), metadata=meta)
    with pytest.raises(ModelError, match="holds tensors of type"):
        TransferModel.load(model)


def test_the_guard_covers_datagrams_reverse_lookups_and_names_that_look_like_loopback() -> None:
    import socket

    from transferkit.errors import NetworkDisabledError
    from transferkit.network import offline

    with offline():
        with pytest.raises(NetworkDisabledError, match=r"look up the host '127\.attacker\.example'"):
            socket.create_connection(("127.attacker.example", 80), timeout=1)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            with pytest.raises(NetworkDisabledError, match="send a datagram"):
                udp.sendto(b"x", ("8.8.8.8", 53))
        finally:
            udp.close()
        with pytest.raises(NetworkDisabledError):
            socket.gethostbyaddr("8.8.8.8")
        with pytest.raises(NetworkDisabledError):
            socket.getnameinfo(("8.8.8.8", 53), 0)
        loop = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # loopback datagrams stay allowed
        try:
            loop.sendto(b"x", ("127.0.0.1", 9))
        finally:
            loop.close()


def test_onnxruntime_telemetry_is_switched_off() -> None:
    # onnxruntime's telemetry runs in native threads, below the socket guard; its own switch is set on import
    import transferkit  # noqa: F401

    assert os.environ.get("ORT_DISABLE_TELEMETRY") == "1"
