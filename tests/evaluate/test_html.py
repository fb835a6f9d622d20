"""report.html: one self-contained page per run (and per multi-seed run), checked on real tiny runs.

Structure is checked with the standard library's HTML parser; the slow test opens the page in headless Chromium
and checks that every embedded image decodes there too.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import invoke_ok
from transferkit.evaluate.html import render_html

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATA_PNG = "data:image/png;base64,"
EVIL = "<script>alert(1)</script>"


class Page(HTMLParser):
    """Tags, headings, images, references and text of one page."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.h2: list[str] = []
        self.imgs: list[dict[str, str | None]] = []
        self.refs: list[str] = []
        self.text: list[str] = []
        self._in: str | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        self.refs += [v for k, v in attrs if k in ("src", "href", "action", "data", "poster") and v]
        self._in = tag if tag in ("h2", "script") else self._in

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            self._in = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in == "h2":
            self.h2.append(data.strip())

    @property
    def all_text(self) -> str:
        return " ".join(self.text)


def _npz(path: Path, shift: float, classes: list[str]) -> Path:
    rng = np.random.default_rng(int(shift * 10))

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 2, n)
        return (rng.normal(size=(n, 6)) + 2.0 * y[:, None] + shift).astype(np.float32), y

    (xtr, ytr), (xte, yte) = make(120), make(60)
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte, classes=np.array(classes))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A DANN run with the guard (one seed; a class name that is HTML) and a source-only run with two seeds."""
    tmp = tmp_path_factory.mktemp("html")
    classes = ["neg", EVIL]
    src, tgt = _npz(tmp / "src.npz", 0.0, classes), _npz(tmp / "tgt.npz", 0.8, classes)
    common = ("--target", tgt, "--backbone", "mlp", "--epochs", "2", "--lr", "0.01", "--output-dir", tmp / "runs",
              "--no-progress", "--set", "data.val_fraction=0.1")
    invoke_ok("fit", "--source", src, "--method", "dann", "--name", "dann", *common)
    invoke_ok("fit", "--source", src, "--seeds", "0,1", "--name", "plain", *common)
    return {"dann": tmp / "runs" / "dann", "plain": tmp / "runs" / "plain"}


def _page(path: Path) -> tuple[str, Page]:
    text = path.read_text(encoding="utf-8")
    return text, Page(text)


def _check_self_contained(text: str, page: Page) -> None:
    assert page.tags.count("html") == 1 and page.tags.count("body") == 1 and page.tags.count("head") == 1
    assert "script" not in page.tags  # works without JavaScript, and runs none
    assert "link" not in page.tags and "iframe" not in page.tags
    assert not re.search(r"https?://", text), "external reference in the report"
    assert "url(" not in text  # no CSS resource either
    assert page.imgs, "no image"
    for img in page.imgs:
        src = img.get("src") or ""
        assert src.startswith(DATA_PNG), src[:60]
        data = base64.b64decode(src[len(DATA_PNG):], validate=True)
        assert data[:8] == PNG_MAGIC
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        assert img.get("alt")
    for ref in page.refs:  # links are to the page's own sections, a seed's page or (from a seed) the run's page
        assert ref.startswith(("#", DATA_PNG)) or re.fullmatch(r"seed-\d+/report\.html|\.\./report\.html", ref), ref


def test_dann_run_report_is_self_contained_with_every_section(runs: dict[str, Path]) -> None:
    text, page = _page(runs["dann"] / "report.html")
    _check_self_contained(text, page)
    assert page.h2 == ["Results", "Negative-transfer guard", "Domain gap", "Feature map: before and after adaptation",
                       "Learning curves", "Confusion matrices", "Per-class accuracy", "Configuration"]
    # learning curves, 4 confusion matrices (target, source, both guard candidates on the target), the map
    assert len(page.imgs) == 6
    alts = [img["alt"] for img in page.imgs]
    assert "2-D map of source and target features" in alts and "confusion matrix (target)" in alts
    words = page.all_text
    report = json.loads((runs["dann"] / "report.json").read_text())
    assert f"Kept: {report['guard']['keep']}" in " ".join(words.split())
    assert "before (source-only)" in words and "after (adapted)" in words and "MMD²" in words
    mmd = report["guard"]["gap"]["source-only"]["mmd2"]["value"]
    assert f"{mmd:.4f}" in words  # the guard's gap numbers, before and after
    assert "t-SNE" in words and "before adaptation (the guard's source-only twin)" in words
    assert "<details" in text and "method: dann" in words  # the resolved config, collapsible
    assert report["feature_map"]["before"] is True and report["feature_map"]["embedding"] == "t-SNE"
    assert report["plots"]["feature map"] == "feature_map.png"


def test_feature_map_npz_holds_both_models_features_of_a_small_sample(runs: dict[str, Path]) -> None:
    with np.load(runs["dann"] / "feature_map.npz", allow_pickle=False) as z:
        keys = set(z.files)
        assert {"before_source", "before_target", "after_source", "after_target", "source_labels"} <= keys
        assert not any("target_label" in k for k in keys)  # target labels are never saved
        assert z["after_source"].shape == z["before_source"].shape and len(z["after_source"]) <= 500
        assert z["after_target"].shape[0] == 120 and z["after_target"].shape[1] <= 50  # target train, unlabelled
        assert str(z["target_split"]) == "target train (unlabelled)" and str(z["note"]) == ""
    with np.load(runs["plain"] / "seed-0" / "feature_map.npz", allow_pickle=False) as z:
        assert "before_source" not in z.files and "source-only run" in str(z["note"])


def test_user_strings_are_escaped(runs: dict[str, Path]) -> None:
    text, page = _page(runs["dann"] / "report.html")
    assert EVIL not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # a class name
    assert EVIL in page.all_text  # ... shown to the reader as the text it is
    report = json.loads((runs["dann"] / "report.json").read_text())
    report["name"] = f'run {EVIL} "quoted"'
    report["guard"]["reasons"] = [f"reason with {EVIL}"]
    out = render_html(report, runs["dann"])
    assert EVIL not in out and "script" not in Page(out).tags
    assert f"run {EVIL} \"quoted\"" in Page(out).all_text and f"reason with {EVIL}" in Page(out).all_text


def test_multi_seed_source_only_report(runs: dict[str, Path]) -> None:
    text, page = _page(runs["plain"] / "report.html")
    _check_self_contained(text, page)
    assert page.h2 == ["Results over seeds", "Domain gap", "Feature map", "Learning curves", "Confusion matrices",
                       "Seeds", "Configuration"]  # no guard: a source-only run
    report = json.loads((runs["plain"] / "report.json").read_text())
    acc = report["summary"]["target"]["accuracy"]
    m, s = 100 * acc["mean"], 100 * acc["std"]
    assert f"{m:.1f} ± {s:.1f}" in page.all_text and "Mean ± sample standard deviation over 2 seeds" in page.all_text
    assert {"seed-0/report.html", "seed-1/report.html"} <= set(page.refs)
    assert "'Before' is unavailable: a source-only run (adapt.method none)" in page.all_text
    assert "PCA, not t-SNE" in page.all_text  # 12 source-val + 60 target-test points: too few for t-SNE
    _check_self_contained(*_page(runs["plain"] / "seed-0" / "report.html"))  # the seed whose plots are drawn
    seed_page = _page(runs["plain"] / "seed-1" / "report.html")[1]
    assert "Negative-transfer guard" not in seed_page.h2 and "Configuration" in seed_page.h2
    assert "seeds:" in seed_page.all_text  # the run's config, one level up
    assert "../report.html" in seed_page.refs


def test_report_command_rewrites_report_html(runs: dict[str, Path]) -> None:
    for run in (runs["dann"], runs["plain"]):
        before = (run / "report.html").read_text(encoding="utf-8")
        (run / "report.html").write_text("stale", encoding="utf-8")
        invoke_ok("report", run)
        assert (run / "report.html").read_text(encoding="utf-8") == before  # deterministic, maps included
    (runs["plain"] / "seed-0" / "report.html").unlink()
    invoke_ok("report", runs["plain"])
    assert (runs["plain"] / "seed-0" / "report.html").is_file()  # the aggregate page links it: rewritten


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="no chromium binary (apt-get install chromium; `make test-slow` does)")
def test_report_renders_in_headless_chromium(runs: dict[str, Path], tmp_path: Path) -> None:
    """Every embedded image decodes in a real browser (naturalWidth > 0), and the page has a real layout."""
    for run in (runs["dann"], runs["plain"]):
        text = (run / "report.html").read_text(encoding="utf-8")
        n_img = len(Page(text).imgs)
        probe = ("<script>addEventListener('load', () => { const im = [...document.images]; document.title = "
                 "'loaded ' + im.filter(i => i.complete && i.naturalWidth > 0).length + ' of ' + im.length; });"
                 "</script>")
        copy = tmp_path / f"{run.name}.html"
        copy.write_text(text.replace("</body>", probe + "</body>"), encoding="utf-8")
        args = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                "--virtual-time-budget=10000"]
        dom = subprocess.run([*args, "--dump-dom", copy.as_uri()], capture_output=True, text=True, timeout=120)
        title = re.search(r"<title>(.*?)</title>", dom.stdout)
        assert title and title.group(1) == f"loaded {n_img} of {n_img}", (title, dom.stderr[-2000:])
        shot = tmp_path / f"{run.name}.png"
        subprocess.run([*args, f"--screenshot={shot}", "--window-size=1280,2400", (run / "report.html").as_uri()],
                       capture_output=True, timeout=120, check=True)
        with Image.open(shot) as im:
            assert im.size == (1280, 2400)
            colours = im.convert("L").getextrema()
            assert colours[1] - colours[0] > 100  # not a blank page


def test_adapted_run_without_the_guard_says_why_there_is_no_before(runs: dict[str, Path]) -> None:
    report = json.loads((runs["dann"] / "report.json").read_text())
    del report["guard"]
    report["feature_map"].update(before=False, note="the negative-transfer guard was off (adapt.guard false), so "
                                                    "no source-only twin was trained")
    page = Page(render_html(report, runs["dann"]))
    assert "Negative-transfer guard" not in page.h2 and "Feature map" in page.h2
    words = " ".join(page.all_text.split())
    assert "'Before' is unavailable: the negative-transfer guard was off" in words
    assert "Not measured: the negative-transfer guard was off" in words


def test_only_the_first_seed_draws_its_plots_and_report_draws_any_other(runs: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    shutil.copytree(runs["plain"], tmp_path / "plain")
    first, second = tmp_path / "plain" / "seed-0", tmp_path / "plain" / "seed-1"
    pngs = ("feature_map.png", "learning_curves.png", "confusion_target.png")
    assert all((first / f).is_file() for f in pngs) and not any((second / f).exists() for f in pngs)
    report = json.loads((second / "report.json").read_text())
    assert report["plots"] == {} and "transferkit report" in report["plots_note"]
    assert _page(second / "report.html")[1].all_text.count("drawn for the first seed only") == 3
    invoke_ok("report", second)
    assert all((second / f).is_file() for f in pngs)
    report = json.loads((second / "report.json").read_text())
    assert "plots_note" not in report and report["feature_map"]["embedding"] in ("t-SNE", "PCA")
