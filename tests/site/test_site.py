"""The offline site (stepdecomp.site.build) and its browser check (stepdecomp.site.check), on a tiny
hand-made report: a FINDINGS.md with two tables and one figure, a second figure it does not
reference, and one executed notebook with a text and an image output."""

from __future__ import annotations

import base64
import io
import json
import os
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from PIL import Image

from stepdecomp.site import build as site_mod
from stepdecomp.site import check as sitecheck
from stepdecomp.core.paths import RAW_DIR, display_path

pytestmark = pytest.mark.integration

FINDINGS = """# Tiny findings

Intro with `code`.

| a | b |
|---|---|
| 1 | 2 |

![phase shares](figures/tiny.png)

```text
| not | a table |
|-----|---------|
```

| x |
|:-:|
| 3 |
"""


def _png(color: str, size: tuple[int, int] = (4, 3)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def make_report(root: Path, findings: str = FINDINGS, data_root: str | None = "/some/traces",
                papermill_data: str | None = None) -> Path:
    """OUT with FINDINGS.md, figures/{tiny,extra}.png, interim/dataset.json (unless data_root
    is None) and notebooks/01_tiny.ipynb (executed: a stream and a PNG output)."""
    out = root / "out"
    (out / "figures").mkdir(parents=True)
    (out / "notebooks").mkdir()
    (out / "FINDINGS.md").write_text(findings, encoding="utf-8")
    (out / "figures" / "tiny.png").write_bytes(_png("red"))
    (out / "figures" / "extra.png").write_bytes(_png("blue"))
    if data_root is not None:
        (out / "interim").mkdir()
        (out / "interim" / "dataset.json").write_text(json.dumps({"data_root": data_root}))
    image = base64.b64encode(_png("green")).decode()
    code = new_code_cell("print('hello')", execution_count=1, outputs=[
        new_output("stream", name="stdout", text="hello\n"),
        new_output("display_data", data={"image/png": image, "text/plain": "<Figure>"})])
    nb = new_notebook(cells=[new_markdown_cell("# 01 · Tiny\n\nA tiny notebook."), code])
    if papermill_data:
        nb.metadata["papermill"] = {"parameters": {"data_root": papermill_data}}
    nbformat.write(nb, out / "notebooks" / "01_tiny.ipynb")
    return out


def build(out: Path, data: str | None = None) -> site_mod.SiteResult:
    return site_mod.build_site(out, out / "site", out / "notebooks", out / "figures", data)


class Tags(HTMLParser):
    """Every start tag with its attributes, and the page's text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def attrs(self, tag: str, name: str) -> list[str]:
        return [a[name] for t, a in self.tags if t == tag and a.get(name) is not None]

    def count(self, tag: str) -> int:
        return sum(1 for t, _ in self.tags if t == tag)

    def joined_text(self) -> str:
        return " ".join(" ".join(self.text).split())


def _remote(tags: Tags) -> list[str]:
    return [v for t, a in tags.tags for k, v in a.items()
            if k in ("src", "href") and v and v.startswith(("http:", "https:", "//"))]


# --------------------------------------------------------------------------- no browser

def test_counts_tables_and_figures_outside_code_fences():
    assert sitecheck.count_markdown_tables(FINDINGS) == 2
    assert sitecheck.markdown_figures(FINDINGS) == ["figures/tiny.png"]
    assert sitecheck.count_markdown_tables("| a |\n| b |\n\nno | delimiter\n---\n") == 0
    assert sitecheck.count_markdown_tables("| a \\| b | c |\n|---|---|\n| 1 | 2 |\n") == 1
    assert sitecheck.count_markdown_tables("| a | b |\n|---|\n") == 0


def test_index_page_structure(tmp_path):
    out = make_report(tmp_path)
    result = build(out)
    site = out / "site"
    assert result.pages == ["index.html", "01_tiny.html"]
    assert result.figures == ["figures/tiny.png", "figures/extra.png"]
    assert result.missing_figures == []
    index = Tags((site / "index.html").read_text(encoding="utf-8"))
    assert index.count("table") == 2
    assert index.attrs("img", "src") == ["figures/tiny.png", "figures/extra.png"]
    assert (site / "figures" / "tiny.png").read_bytes() == (out / "figures" / "tiny.png").read_bytes()
    assert (site / "figures" / "extra.png").read_bytes() == _png("blue")
    assert "01_tiny.html" in index.attrs("a", "href")
    assert index.attrs("link", "href") == ["site.css"] and (site / "site.css").is_file()
    assert index.attrs("script", "src") == [] and _remote(index) == []
    text = index.joined_text()
    assert "Dataset: your traces, /some/traces ." in text
    assert "01 · Tiny" in text and "Tiny findings" in text
    assert (site / "FINDINGS.md").read_text(encoding="utf-8") == FINDINGS


def test_notebook_page_structure(tmp_path):
    out = make_report(tmp_path)
    build(out)
    html = (out / "site" / "01_tiny.html").read_text(encoding="utf-8")
    page = Tags(html)
    assert page.attrs("script", "src") == [] and _remote(page) == []
    assert "mathjax" not in html.lower() and "require.min.js" not in html
    assert page.attrs("details", "class") == ["site-input"]       # the one code cell, folded
    images = page.attrs("img", "src")
    assert len(images) == 1 and images[0].startswith("01_tiny_files/")
    assert (out / "site" / images[0]).read_bytes() == _png("green")
    assert "index.html" in page.attrs("a", "href")
    assert sorted(page.attrs("link", "href")) == ["lab-index.css", "lab-theme-light.css", "site.css"]
    assert (out / "site" / "lab-index.css").stat().st_size > 100_000   # shared, not inlined
    assert len(html) < 20_000
    assert page.joined_text().startswith("01 · Tiny")               # <title>
    assert "hello" in page.joined_text()


def test_bundled_dataset_is_named_generated(tmp_path):
    out = make_report(tmp_path, data_root=display_path(RAW_DIR))
    result = build(out)
    text = Tags((out / "site" / "index.html").read_text(encoding="utf-8")).joined_text()
    assert result.data_root == "data/raw"
    assert result.data_source == display_path(out / "interim" / "dataset.json")
    assert "the bundled reference dataset data/raw — generated by replaying" in text


def test_data_root_order(tmp_path, monkeypatch):
    monkeypatch.delenv("STEPDECOMP_DATA", raising=False)
    out = make_report(tmp_path, data_root=None, papermill_data="/papermill/traces")
    nbs = [out / "notebooks" / "01_tiny.ipynb"]
    assert site_mod.recorded_data_root(out, nbs, "/given") == ("/given", "--data")
    assert site_mod.recorded_data_root(out, nbs, None) == (
        "/papermill/traces", "papermill parameters of 01_tiny.ipynb")
    nb = nbformat.read(nbs[0], as_version=4)
    nb.metadata.pop("papermill")
    nbformat.write(nb, nbs[0])
    assert site_mod.recorded_data_root(out, nbs, None) == (
        display_path(RAW_DIR), "the default data root (nothing recorded)")


def test_missing_figure_is_counted_and_named(tmp_path, capsys):
    out = make_report(tmp_path, findings=FINDINGS + "\n![gone](figures/nothere.png)\n")
    result = build(out)
    err = capsys.readouterr().err
    assert result.missing_figures == ["figures/nothere.png"]
    assert f"{display_path(out / 'FINDINGS.md')}: figure figures/nothere.png not found" in err
    assert result.figures == ["figures/tiny.png", "figures/extra.png"]
    assert (out / "site" / "index.html").is_file()


def test_missing_findings_stops_with_a_message(tmp_path, capsys):
    out = make_report(tmp_path)
    (out / "FINDINGS.md").unlink()
    with pytest.raises(site_mod.SiteError, match="FINDINGS.md: run `make report` first"):
        build(out)
    assert site_mod.main(["--out", str(out)]) == 1
    assert "make site: no " in capsys.readouterr().err


def test_rebuild_replaces_the_site(tmp_path):
    out = make_report(tmp_path)
    build(out)
    (out / "site" / "stale.html").write_text("old")
    build(out)
    assert not (out / "site" / "stale.html").exists()


def test_check_without_chromium_skips_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(sitecheck.ENV_CHROMIUM, raising=False)
    monkeypatch.delenv(sitecheck.ENV_REQUIRE, raising=False)
    assert sitecheck.main([str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("site-check: no chromium") and "skipped" in lines[0]
    monkeypatch.setenv(sitecheck.ENV_REQUIRE, "1")
    assert sitecheck.main([str(tmp_path)]) == 1
    assert "required here" in capsys.readouterr().err
    monkeypatch.setenv(sitecheck.ENV_CHROMIUM, str(tmp_path / "no-such-chromium"))
    assert sitecheck.main([str(tmp_path)]) == 1
    assert capsys.readouterr().err == (f"site-check: {tmp_path / 'no-such-chromium'} "
                                       f"(${sitecheck.ENV_CHROMIUM}) is not an executable file\n")


# --------------------------------------------------------------------------- in chromium

@pytest.fixture(scope="module")
def browser():
    executable = sitecheck.find_chromium()
    if executable is None:
        reason = "no chromium on PATH (install Debian's chromium package)"
        if os.environ.get(sitecheck.ENV_REQUIRE):
            pytest.fail(f"{reason}; required here (${sitecheck.ENV_REQUIRE} is set)")
        pytest.skip(reason)
    with sitecheck.open_browser(executable) as b:
        yield b


@pytest.fixture
def built(tmp_path) -> Path:
    out = make_report(tmp_path)
    build(out)
    return out / "site"


def test_good_site_passes_and_is_screenshot(browser, built):
    assert sitecheck.check_site(built, browser) == []
    shots = sorted(p.name for p in (built / "screenshots").iterdir())
    assert shots == ["01_tiny.png", "index.png"]
    for shot in shots:
        assert (built / "screenshots" / shot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _append(page: Path, html: str) -> None:
    page.write_text(page.read_text(encoding="utf-8").replace("</body>", html + "</body>"),
                    encoding="utf-8")


def test_broken_image_names_page_and_image(browser, built):
    _append(built / "index.html", '<img src="figures/nothere.png">')
    problems = sitecheck.check_site(built, browser, screenshots=False)
    assert "index.html: image figures/nothere.png did not load (naturalWidth 0)" in problems
    assert any(p.startswith("index.html: request failed ") and p.find("figures/nothere.png") > 0
               for p in problems)


def test_undecodable_notebook_image_names_page_and_image(browser, built):
    (png,) = (built / "01_tiny_files").iterdir()
    png.write_bytes(b"not a png")
    problems = sitecheck.check_site(built, browser, screenshots=False)
    assert problems == [f"01_tiny.html: image 01_tiny_files/{png.name} did not load (naturalWidth 0)"]


def test_cdn_script_names_page_and_url(browser, built):
    (built / "cdn.html").write_text('<!DOCTYPE html><html><head><script '
                                    'src="https://cdn.example.invalid/lib.js"></script></head>'
                                    '<body><p>x</p></body></html>', encoding="utf-8")
    problems = sitecheck.check_site(built, browser, screenshots=False)
    assert ("cdn.html: external request https://cdn.example.invalid/lib.js "
            "(blocked: the site must not leave the page)") in problems
    assert "index.html: page cdn.html is not linked" in problems


def test_missing_table_figure_and_console_error(browser, built):
    index = built / "index.html"
    text = index.read_text(encoding="utf-8")
    start, end = text.index("<table>"), text.index("</table>") + len("</table>")
    text = text[:start] + text[end:]
    text = text.replace('<img src="figures/extra.png" alt="extra.png">', "")
    index.write_text(text.replace("</body>", "<script>console.error('boom')</script></body>"),
                     encoding="utf-8")
    problems = sitecheck.check_site(built, browser, screenshots=False)
    assert "index.html: 1 tables in #findings, FINDINGS.md has 2" in problems
    assert "index.html: figure extra.png is not shown" in problems
    assert any(p.startswith("index.html: console error: boom") for p in problems)


def test_page_that_never_loads_is_named_and_the_check_goes_on(browser, built, monkeypatch):
    monkeypatch.setattr(sitecheck, "PAGE_TIMEOUT_MS", 2_000)
    (built / "hang.html").write_text("<!DOCTYPE html><html><body><script>while (true) {}</script>"
                                     "</body></html>", encoding="utf-8")
    problems = sitecheck.check_site(built, browser, screenshots=False)
    assert [p.split(":")[0] for p in problems] == ["index.html", "hang.html"]
    assert problems[0] == "index.html: page hang.html is not linked"
    assert problems[1].startswith("hang.html: the browser failed: ") and "Timeout" in problems[1]


# --------------------------------------------------------------------------- the first screen

ANSWERED = """# Tiny findings

## Answer

**Answer.** Short.

[![the key figure](figures/tiny.png)](../elsewhere/figures/tiny.png)

Link to [Table A1: Per run](APPENDIX.md#table-a1-per-run).

## Details

| a | b |
|---|---|
| 1 | 2 |
"""
APPENDIX = "# Appendix\n\n### Table A1: Per run\n\n| x |\n|---|\n| 3 |\n\nBack to [FINDINGS](FINDINGS.md).\n"


def _answered(tmp_path: Path, findings: str = ANSWERED) -> Path:
    out = make_report(tmp_path, findings=findings)
    (out / site_mod.APPENDIX_MD).write_text(APPENDIX, encoding="utf-8")
    build(out)
    return out / "site"


def test_appendix_page_anchors_and_links(tmp_path):
    site = _answered(tmp_path)
    index = Tags((site / "index.html").read_text(encoding="utf-8"))
    assert "appendix.html#table-a1-per-run" in index.attrs("a", "href")
    assert "appendix.html" in index.attrs("a", "href")                      # in the nav
    assert index.attrs("h2", "id") == ["answer", "details"]
    assert index.attrs("img", "class") == [site_mod.KEY_FIGURE_CLASS]     # only the Answer's
    assert "figures/tiny.png" in index.attrs("a", "href")       # the figure's link: its copy
    appendix = Tags((site / "appendix.html").read_text(encoding="utf-8"))
    assert appendix.attrs("h3", "id") == ["table-a1-per-run"]
    assert "index.html" in appendix.attrs("a", "href") and appendix.count("table") == 1
    assert (site / site_mod.APPENDIX_MD).read_text(encoding="utf-8") == APPENDIX
    assert sitecheck.answer_section(ANSWERED) == (True, "tiny.png")
    assert sitecheck.answer_section(FINDINGS) == (False, None)
    assert sitecheck.answer_section("## Answer\n\nno figure\n\n## Next\n\n![x](figures/x.png)\n") \
        == (True, None)


def test_answer_and_key_figure_above_the_fold(browser, tmp_path):
    site = _answered(tmp_path)
    assert sitecheck.check_site(site, browser, screenshots=False) == []
    # a long Answer pushes the key figure below the first 800 px
    pushed = ANSWERED.replace("**Answer.** Short.", "\n\n".join(["Filler paragraph."] * 40))
    site = _answered(tmp_path / "pushed", pushed)
    problems = sitecheck.check_site(site, browser, screenshots=False)
    assert len(problems) == 1
    assert problems[0].startswith("index.html: key figure tiny.png ends at ")
    assert problems[0].endswith(" px, not within the first 1280×800 viewport")
