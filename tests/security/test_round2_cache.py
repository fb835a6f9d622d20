"""Issue 29, the caches and resume: keys by content, entries verified on load, never written through a link, a
cache failure a warning, a resume that notices changed data, and a starting model with NaN weights named."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.content_digest import file_digest, path_digest
from transferkit.train.twin_cache import FOLDER, META_DIGEST

runner = CliRunner()


def _invoke(*args: Any) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    extra = f"\n{result.exception!r}" if result.exit_code not in (0, 2) else ""
    return result.exit_code, result.output + extra


def _domains(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    paths = []
    for name, shift in (("src", 0.0), ("tgt", 0.8)):
        y = rng.integers(0, 3, 80)
        x = (rng.normal(size=(80, 5)) + 2.5 * np.eye(3, 5)[y] + shift).astype(np.float32)
        path = tmp_path / f"{name}.npz"
        np.savez(path, x_train=x[:60], y_train=y[:60], x_test=x[60:], y_test=y[60:])
        paths.append(path)
    return paths[0], paths[1]


def _fit(out: Path, name: str, *extra: Any) -> tuple[int, str]:
    return _invoke("fit", "--backbone", "mlp", "--epochs", "1", "--set", "train.threads=1", "--output-dir", out,
                   "--name", name, "--no-progress", *extra)


def _report(out: Path, name: str) -> dict[str, Any]:
    return json.loads((out / name / "report.json").read_text())


def _has(text: str, needle: str) -> bool:
    """``needle`` in ``text``, ignoring whitespace: the console wraps long lines (and paths) at 80 columns."""
    return "".join(needle.split()) in "".join(text.split())


def _entries(out: Path) -> list[Path]:
    return sorted((out / FOLDER).glob("*.safetensors"))


# -- 1. the twin cache is keyed by the content of --init-from, not its path --------------------------------------
def test_retraining_the_init_from_model_is_a_twin_cache_miss(tmp_path: Path) -> None:
    src, tgt = _domains(tmp_path)
    out = tmp_path / "runs"
    start = out / "A" / "model.safetensors"
    assert _fit(out, "A", "--source", src)[0] == 0
    assert _fit(out, "B", "--source", src, "--target", tgt, "--init-from", start)[0] == 0  # stores its twin
    # the control: the same starting model, a guarded run reuses B as its twin
    code, text = _fit(out, "C0", "--source", src, "--target", tgt, "--init-from", start, "--method", "dann")
    assert code == 0, text
    assert _report(out, "C0")["guard"]["twin"].startswith("reused")
    # A retrained with other settings: the same path now holds another model
    assert _fit(out, "A", "--source", src, "--lr", "0.05", "--overwrite")[0] == 0
    code, text = _fit(out, "C", "--source", src, "--target", tgt, "--init-from", start, "--method", "dann")
    assert code == 0, text
    assert _report(out, "C")["guard"]["twin"] == "trained for this run"  # not the twin of the old A


def test_file_digests_follow_content_not_path_size_or_time(tmp_path: Path) -> None:
    a = tmp_path / "a.bin"
    a.write_bytes(b"one")
    first = file_digest(a)
    st = a.stat()
    a.write_bytes(b"two")  # same size; the time put back: only the bytes tell them apart
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert file_digest(a) != first
    b = tmp_path / "elsewhere.bin"
    b.write_bytes(b"two")
    assert file_digest(b) == file_digest(a)  # a path is not content
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "w.bin").write_bytes(b"w")
    before = path_digest(folder)
    (folder / "sub" / "w.bin").write_bytes(b"v")
    assert path_digest(folder) != before
    os.mkfifo(folder / "pipe")  # a FIFO enters by its kind; it is never opened (that would block)
    assert path_digest(folder) != before


def test_image_files_rewritten_in_place_change_the_dataset_fingerprint(tmp_path: Path) -> None:
    from PIL import Image

    from transferkit.data.domain import DomainDataset

    paths = []
    for i in range(4):
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(p, compress_level=0)
        paths.append(str(p))
    ds = DomainDataset(paths, np.array([0, 1, 0, 1]), "imgs", ["a", "b"], "image")
    before = ds.fingerprint()
    st = os.stat(paths[0])
    # same size, same time: other pixels
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(paths[0], compress_level=0)
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(paths[0]).st_size == st.st_size
    assert ds.fingerprint() != before


# -- 4. a planted or damaged entry is verified, named, dropped and retrained -------------------------------------
@pytest.mark.parametrize("damage", ["nan", "other-weights", "no-digest"])
def test_a_planted_twin_entry_is_dropped_and_retrained(tmp_path: Path, damage: str) -> None:
    from safetensors import safe_open

    from transferkit.train.twin_cache import state_digest

    src, tgt = _domains(tmp_path)
    out = tmp_path / "runs"
    assert _fit(out, "plain", "--source", src, "--target", tgt)[0] == 0
    [entry] = _entries(out)
    with safe_open(str(entry), framework="pt") as f:
        meta = f.metadata()
    state = load_file(entry)
    first = next(k for k, v in state.items() if v.is_floating_point())
    if damage == "nan":  # the right names and shapes, a digest recomputed by the planter: NaN still fails
        state[first] = torch.full_like(state[first], float("nan"))
        meta = {**meta, META_DIGEST: state_digest(state)}
    elif damage == "other-weights":  # finite weights of the right shapes under the old digest: not what was stored
        state[first] = state[first] + 1.0
    else:
        meta = None
    save_file(state, str(entry), metadata=meta)
    code, text = _fit(out, "dann", "--source", src, "--target", tgt, "--method", "dann")
    assert code == 0, text
    assert _report(out, "dann")["guard"]["twin"] == "trained for this run"
    assert _has(text, f"twin cache entry {entry}") and _has(text, "deleted it"), text
    assert load_file(entry)[first].isfinite().all()  # rewritten by the fresh twin
    code, _ = _fit(out, "dann2", "--source", src, "--target", tgt, "--method", "dann")
    assert code == 0 and _report(out, "dann2")["guard"]["twin"].startswith("reused")


# -- 5. a cache that cannot be written costs nothing but the cache; links are never followed ----------------------
@pytest.mark.parametrize("shape", ["file", "link", "entry-folder", "entry-link"])
def test_an_unwritable_twin_cache_is_a_warning_not_a_lost_run(tmp_path: Path, shape: str) -> None:
    src, tgt = _domains(tmp_path)
    out = tmp_path / "runs"
    out.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    cache = out / FOLDER
    if shape == "file":
        cache.write_text("not a folder")
    elif shape == "link":
        cache.symlink_to(outside)
    else:  # the entry's name is taken by a folder, or by a link out of the output folder
        assert _fit(out, "first", "--source", src, "--target", tgt)[0] == 0
        [entry] = _entries(out)
        entry.unlink()
        if shape == "entry-folder":
            entry.mkdir()
        else:
            entry.symlink_to(outside / "planted.safetensors")
    code, text = _fit(out, "plain", "--source", src, "--target", tgt)
    assert code == 0, text
    assert (out / "plain" / "model.safetensors").is_file() and (out / "plain" / "report.json").is_file()
    assert _has(text, "warning:") and _has(text, "(remove it)"), text
    assert list(outside.iterdir()) == []  # nothing written through a link
    code, text = _fit(out, "dann", "--source", src, "--target", tgt, "--method", "dann")
    assert code == 0, text
    assert _report(out, "dann")["guard"]["twin"] == "trained for this run"
    assert list(outside.iterdir()) == []
    (out / "plain" / "report.json").unlink()  # as if killed before the report: --resume finishes it
    assert _fit(out, "plain", "--source", src, "--target", tgt, "--resume")[0] == 0
    assert (out / "plain" / "report.json").is_file()


def test_a_full_disk_under_the_twin_cache_still_writes_the_model(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import transferkit.runs as runs

    src, tgt = _domains(tmp_path)
    out = tmp_path / "runs"
    real = runs.atomic_save_safetensors

    def full(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> Path:
        if FOLDER in str(path):
            raise runs.RunDirError(f"cannot write {path}: No space left on device")
        return real(state, path, metadata)

    monkeypatch.setattr(runs, "atomic_save_safetensors", full)
    code, text = _fit(out, "plain", "--source", src, "--target", tgt)
    assert code == 0, text
    assert (out / "plain" / "model.safetensors").is_file() and (out / "plain" / "report.json").is_file()
    assert _has(text, "No space left on device"), text


# -- the feature cache: verified on load, rebuilt when damaged --------------------------------------------------
def _probe_setup(tmp_path: Path) -> tuple[Any, Any, Path]:
    from transferkit.data.domain import DomainDataset
    from transferkit.features import cache_key
    from transferkit.models.backbones import create_backbone

    torch.manual_seed(0)
    bb = create_backbone("mlp", in_features=5, hidden=8)
    x = np.random.default_rng(0).normal(size=(13, 5)).astype(np.float32)
    ds = DomainDataset(x, np.arange(13) % 2, "v", ["a", "b"], "vector")
    return bb, ds, tmp_path / "cache" / f"{cache_key(bb, ds)}.npz"


@pytest.mark.parametrize("damage", ["nan", "rows", "huge-shape", "other-values", "not-a-zip"])
def test_a_damaged_feature_cache_entry_is_rebuilt(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  damage: str) -> None:
    from transferkit.features import cached_features

    bb, ds, file = _probe_setup(tmp_path)
    good = cached_features(bb, ds, cache_dir=file.parent, device="cpu", progress=False)
    with np.load(file) as z:
        members = {k: z[k] for k in z.files}
    feats = members["features"].copy()
    if damage == "nan":
        feats[0, 0] = np.nan
    elif damage == "rows":
        feats = feats[:5]
    elif damage == "other-values":
        feats = feats + 1.0
    if damage == "not-a-zip":
        file.write_bytes(b"junk")
    elif damage == "huge-shape":  # a header declaring 10^12 rows: refused before anything is allocated
        import zipfile

        with zipfile.ZipFile(file, "w") as zf, zf.open("features.npy", "w") as f:
            np.lib.format.write_array_header_2_0(f, {"descr": "<f4", "fortran_order": False, "shape": (13, 10**11)})
    else:
        np.savez(file, **{**members, "features": feats})
    again = cached_features(bb, ds, cache_dir=file.parent, device="cpu", progress=False)
    assert np.array_equal(again.inputs, good.inputs)
    err = capsys.readouterr().err
    assert _has(err, f"feature cache entry {file}") and _has(err, "deleted it"), err


def test_a_feature_cache_that_cannot_be_written_computes_in_memory(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from transferkit.features import cached_features

    bb, ds, file = _probe_setup(tmp_path)
    file.parent.mkdir()
    outside = tmp_path / "outside.npz"
    file.symlink_to(outside)  # an entry that is a link out of the cache: never read, never written through
    feats = cached_features(bb, ds, cache_dir=file.parent, device="cpu", progress=False)
    assert feats.inputs.shape == (13, 8) and not outside.exists()
    file.unlink()
    file.mkdir()  # an entry that is a folder
    again = cached_features(bb, ds, cache_dir=file.parent, device="cpu", progress=False)
    assert np.array_equal(again.inputs, feats.inputs)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    third = cached_features(bb, ds, cache_dir=blocked / "features", device="cpu", progress=False)
    assert np.array_equal(third.inputs, feats.inputs)
    assert "not cached" in capsys.readouterr().err


# -- resume notices that the data changed ------------------------------------------------------------------------
def test_resume_refuses_data_whose_content_changed(tmp_path: Path) -> None:
    src, tgt = _domains(tmp_path)
    out = tmp_path / "runs"
    args = ("--source", src, "--target", tgt, "--method", "dann")
    assert _fit(out, "r", *args)[0] == 0
    (out / "r" / "report.json").unlink()  # as if killed before the end
    (out / "r" / "model.safetensors").unlink()
    assert (out / "r" / "data-digest.json").is_file()
    code, text = _fit(out, "r", *args, "--resume")
    assert code == 0, text  # the same data: resumed
    (out / "r" / "report.json").unlink()
    (out / "r" / "model.safetensors").unlink()
    with np.load(tgt) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["x_test"] = arrays["x_test"] + 1.0  # same file name, other content
    np.savez(tgt, **arrays)
    code, text = _fit(out, "r", *args, "--resume")
    assert code == 2, text
    line = " ".join(text.split())
    assert "data.target" in line and str(tgt) in line and "changed since the run started" in line
    assert "--overwrite" in line and "Traceback" not in text


@pytest.mark.parametrize("planted", ['{"scheme": 99, "data.source": "x"}', "[]", None])
def test_a_data_digest_that_cannot_be_read_never_switches_the_check_off_silently(tmp_path: Path,
                                                                                  planted: str | None) -> None:
    """A data-digest.json of an unknown scheme (or not a mapping) is refused; a missing one is resumed with a
    warning that says the data could not be checked (it used to switch the check off without a word)."""
    src, tgt = _domains(tmp_path)
    out = tmp_path / "runs"
    args = ("--source", src, "--target", tgt)
    assert _fit(out, "r", *args)[0] == 0
    (out / "r" / "report.json").unlink()  # as if killed before the end
    digest = out / "r" / "data-digest.json"
    if planted is None:
        digest.unlink()
    else:
        digest.write_text(planted, encoding="utf-8")
    code, text = _fit(out, "r", *args, "--resume")
    if planted is None:
        assert code == 0, text
        assert _has(text, "warning:") and _has(text, "data-digest.json is missing"), text
        assert digest.is_file()  # recorded now: the next resume is checked
    else:
        assert code == 2, text
        assert _has(text, "is not a data digest this transferkit writes") and "Traceback" not in text, text


# -- NaN weights in the starting model are named at load time ----------------------------------------------------
def test_init_from_a_model_with_nan_weights_names_the_file(tmp_path: Path) -> None:
    src, _ = _domains(tmp_path)
    out = tmp_path / "runs"
    assert _fit(out, "A", "--source", src)[0] == 0
    start = out / "A" / "model.safetensors"
    from safetensors import safe_open

    with safe_open(str(start), framework="pt") as f:
        meta = f.metadata()
    state = load_file(start)
    key = next(k for k in state if k.startswith("backbone.") and state[k].is_floating_point())
    state[key][..., 0] = float("nan")
    bad = tmp_path / "nan.safetensors"
    save_file(state, str(bad), metadata=meta)
    code, text = _fit(out, "B", "--source", src, "--init-from", bad)
    assert code == 2, text
    line = " ".join(text.split())
    assert str(bad) in line and "NaN" in line and "train.lr" not in line and "Traceback" not in text
    assert not (out / "B").exists()


def test_every_file_the_model_starts_from_enters_the_twin_key_by_content(tmp_path: Path) -> None:
    from transferkit.config import parse_config
    from transferkit.data.domain import DomainDataset
    from transferkit.train.twin_cache import twin_key

    data = [DomainDataset(np.zeros((4, 3), np.float32), np.array([0, 1, 0, 1]), "d", ["a", "b"], "vector"), None,
            None]
    weights, model_file, folder = tmp_path / "w.safetensors", tmp_path / "m.safetensors", tmp_path / "m.backbone"
    save_file({"w": torch.zeros(2)}, str(weights))
    folder.mkdir()
    (folder / "vocab.txt").write_text("a\nb\n")
    save_file({"w": torch.zeros(2)}, str(model_file), metadata={"transferkit.backbone": "hf:m.backbone"})

    def keys() -> list[str | None]:
        cfgs = [{"backbone": "mlp", "weights": str(weights)}, {"backbone": f"file:{model_file}"},
                {"backbone": f"hf:{folder}"}]
        return [twin_key(parse_config({"output_dir": str(tmp_path), "model": m}), 0, 10, data) for m in cfgs]

    before = keys()
    assert None not in before
    save_file({"w": torch.ones(2)}, str(weights))  # the same path, other weights
    (folder / "vocab.txt").write_text("a\nc\n")  # a file the file: model names beside it, and the hf: folder
    after = keys()
    assert all(a != b for a, b in zip(before, after, strict=True))
    assert keys() == after  # and stable while nothing changes


# -- the fresh attacker's pass: ~ in a backbone path, a folder's tokenizer, resume on rewritten model files ----------
def test_a_backbone_path_with_a_tilde_enters_the_twin_key_by_content(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """hf:~/mini reaches transferkit literally (no shell expands it there) and the loaders expand it: the key did
    not, so the folder's content never entered it and a twin of the old weights was reused."""
    from transferkit.config import parse_config
    from transferkit.data.domain import DomainDataset
    from transferkit.train.twin_cache import twin_key

    monkeypatch.setenv("HOME", str(tmp_path))
    folder = tmp_path / "mini"
    folder.mkdir()
    save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
    data = [DomainDataset(np.zeros((4, 3), np.float32), np.array([0, 1, 0, 1]), "d", ["a", "b"], "vector")]
    cfg = parse_config({"output_dir": str(tmp_path), "model": {"backbone": "hf:~/mini"}})
    before = twin_key(cfg, 0, 10, data)
    save_file({"w": torch.ones(2)}, str(folder / "model.safetensors"))
    assert before is not None and twin_key(cfg, 0, 10, data) != before


@pytest.mark.parametrize("spec", ["hf", "file"])
def test_a_folder_s_tokenizer_and_config_enter_the_feature_cache_key(tmp_path: Path, spec: str) -> None:
    """The feature cache hashed a text backbone's weights and repr only: a tokenizer.json or config.json rewritten
    in place served the old features."""
    from types import SimpleNamespace

    from transferkit.data.domain import DomainDataset
    from transferkit.features import cache_key

    folder = tmp_path / ("mini" if spec == "hf" else "m.backbone")
    folder.mkdir()
    (folder / "tokenizer.json").write_text('{"great": 1, "terrible": 2}', encoding="utf-8")
    (folder / "config.json").write_text('{"hidden_act": "gelu"}', encoding="utf-8")
    model_file = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(2)}, str(model_file))
    name = f"hf:{folder}" if spec == "hf" else f"file:{model_file}"
    backbone = SimpleNamespace(spec=name, kwargs={}, transform=None, state_dict=lambda: {"w": torch.zeros(2)})
    data = DomainDataset(["a review"], np.array([0]), "d", ["a"], "text")
    keys = [cache_key(backbone, data)]
    (folder / "tokenizer.json").write_text('{"great": 2, "terrible": 1}', encoding="utf-8")
    keys.append(cache_key(backbone, data))
    (folder / "config.json").write_text('{"hidden_act": "relu"}', encoding="utf-8")
    keys.append(cache_key(backbone, data))
    assert len(set(keys)) == 3 and cache_key(backbone, data) == keys[-1]


def test_resume_refuses_a_starting_model_whose_content_changed(tmp_path: Path) -> None:
    src, tgt = _domains(tmp_path)
    out = tmp_path / "runs"
    start = out / "A" / "model.safetensors"
    assert _fit(out, "A", "--source", src)[0] == 0
    args = ("--source", src, "--target", tgt, "--init-from", start)
    assert _fit(out, "B", *args)[0] == 0
    (out / "B" / "report.json").unlink()  # as if killed before the end
    assert _fit(out, "A", "--source", src, "--lr", "0.05", "--overwrite")[0] == 0  # the same path, other weights
    code, text = _fit(out, "B", *args, "--resume")
    assert code == 2, text
    assert _has(text, "the files of model.init_from") and _has(text, "changed since the run started"), text


def test_a_file_rewritten_with_its_mtime_put_back_gets_a_new_digest(tmp_path: Path) -> None:
    """The digest memo is keyed by the file's identity; a same-size rewrite with its mtime restored (cp -p,
    rsync -t, os.utime) kept (device, inode, size, mtime) and was served the old digest in the same process."""
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 64)
    old = path.stat().st_mtime_ns - 10 * 10**9  # older than the memo's two-second window: remembered
    os.utime(path, ns=(old, old))
    first = file_digest(path)
    assert file_digest(path) == first  # served from the memo
    path.write_bytes(b"b" * 64)
    os.utime(path, ns=(old, old))
    assert file_digest(path) != first
