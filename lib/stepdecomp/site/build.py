"""The report as a static site that works offline (what `make site` and `make report` write).

    python -m stepdecomp.site.build [--out DIR] [--notebooks DIR] [--figures DIR] [--data ROOT] [--site DIR]

Layout of SITE (``OUT/site``, ``reports/site`` by default)::

    index.html              FINDINGS.md rendered (markdown-it, tables), its figures inline, then
                            the run's other figures; a header naming the dataset; links to
                            every notebook page
    appendix.html           APPENDIX.md (the tables FINDINGS links to), when the run wrote it;
                            every heading has the id its markdown anchor names
    FINDINGS.md             the source of index.html, as rendered (the browser check counts
                            its tables and figures)
    figures/*.png           the figures FINDINGS references and those of the run's figures dir
    <notebook>.html         one page per executed notebook, code inputs folded in <details>
    <notebook>_files/*.png  that notebook's image outputs
    site.css, lab-*.css     the site's styles; nbconvert's JupyterLab styles, shared by the pages
    screenshots/            written by the browser check (stepdecomp.site.check), not here

Nothing on a page is loaded from the network: nbconvert's lab template is used without its
require.js, MathJax, mermaid and widget-manager scripts (templates/site/notebook.html.j2), so
LaTeX in a notebook's markdown would show as its source. The wording of the pages lives in
templates/site/*.j2; this module only gathers paths, titles and the dataset.

The dataset the header names is the one the run analysed: ``--data`` if given (make passes
DATA), else what 01_load recorded (OUT/interim/dataset.json), else the ``data_root`` parameter
papermill gave the executed notebooks, else the default data root; the build prints which.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import jinja2
from markupsafe import Markup

from ..core.paths import display_path, resolve_data_root, resolve_figures_dir, resolve_out_dir

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from nbconvert import HTMLExporter

SITE_TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "site"
CSS_NAME = "site.css"
#: nbconvert's lab stylesheets are written beside the pages as lab-<name>.css.
LAB_CSS_PREFIX = "lab-"
FIGURES_SUBDIR = "figures"
#: The first screen of FINDINGS: its "## Answer" section, whose first figure is the key figure
#: (given KEY_FIGURE_CLASS, which site.css fits into the first viewport with the Answer).
ANSWER_HEADING = "Answer"
KEY_FIGURE_CLASS = "site-key-figure"
#: Links to files with these suffixes are links to figures (copied to SITE/figures/).
FIGURE_SUFFIXES = frozenset({".png", ".svg", ".jpg", ".jpeg"})
FINDINGS_NAME = "FINDINGS.md"
INDEX_NAME = "index.html"
#: The appendix FINDINGS links its tables to (report.APPENDIX_NAME) and its page.
APPENDIX_MD = "APPENDIX.md"
APPENDIX_PAGE = "appendix.html"
#: Links between the markdown documents, as the site names their pages.
PAGE_OF_DOCUMENT = {FINDINGS_NAME: INDEX_NAME, APPENDIX_MD: APPENDIX_PAGE}
SCREENSHOTS_SUBDIR = "screenshots"
#: The executed notebook that records the data root (OUT/interim/dataset.json).
LOAD_NOTEBOOK = "01_load.ipynb"


class SiteError(RuntimeError):
    """The site cannot be built (a missing FINDINGS.md or notebooks directory)."""


@dataclass(frozen=True)
class NotebookPage:
    source: Path
    href: str
    title: str


@dataclass
class SiteResult:
    site: Path
    pages: list[str]
    figures: list[str]
    #: figure references of FINDINGS.md whose file does not exist (kept as they are, counted)
    missing_figures: list[str] = field(default_factory=list)
    data_root: str = ""
    data_source: str = ""


# --------------------------------------------------------------------------- dataset

def recorded_data_root(out: Path, notebooks: list[Path], data: str | None) -> tuple[str, str]:
    """(data root as displayed, where it was read): see the module docstring for the order."""
    if data:
        return display_path(Path(data).expanduser().resolve()), "--data"
    meta = out / "interim" / "dataset.json"
    if meta.is_file():
        return json.loads(meta.read_text(encoding="utf-8"))["data_root"], display_path(meta)
    for nb in notebooks:
        params = json.loads(nb.read_text(encoding="utf-8")).get("metadata", {}) \
            .get("papermill", {}).get("parameters", {})
        if params.get("data_root"):
            return display_path(params["data_root"]), f"papermill parameters of {nb.name}"
    return display_path(resolve_data_root(None)), "the default data root (nothing recorded)"


def dataset_context(data_root: str) -> dict[str, str]:
    from ..core.paths import data_kind          # the one place that knows the dataset kinds
    from ..report import dataset_note_context

    return dataset_note_context(data_kind(data_root), data_root)


# --------------------------------------------------------------------------- FINDINGS

@functools.lru_cache(maxsize=1)
def _markdown() -> "MarkdownIt":
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table")


def _is_local(src: str) -> bool:
    parts = urlsplit(src)
    return not parts.scheme and not parts.netloc


def render_findings(findings: Path, site: Path) -> tuple[str, list[str], list[str]]:
    """A markdown document of the report (FINDINGS.md, APPENDIX.md) as HTML with every local
    figure copied to SITE/figures/ and its src rewritten there, each heading given the id its
    markdown anchor names (report.render.heading_anchor, as GitHub forms it) and links to the
    other document pointed at its page (PAGE_OF_DOCUMENT). Returns (html, figure files
    copied, references to missing files). References are resolved against the document's
    directory; remote ones are left as they are (the browser check reports them)."""
    from ..report.render import heading_anchor

    md = _markdown()
    tokens = md.parse(findings.read_text(encoding="utf-8"))
    copied: list[str] = []
    missing: list[str] = []
    section, key_figure_seen = "", False
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open" and i + 1 < len(tokens):
            tok.attrSet("id", heading_anchor(tokens[i + 1].content))
            if tok.tag == "h2":
                section = tokens[i + 1].content.strip()
        for child in tok.children or []:
            if child.type == "image" and section == ANSWER_HEADING and not key_figure_seen:
                child.attrSet("class", KEY_FIGURE_CLASS)
                key_figure_seen = True
            if child.type == "link_open":
                _relink(child)
            src = child.attrGet("src") if child.type == "image" else None
            if not isinstance(src, str) or not _is_local(src):
                continue
            path = (findings.parent / unquote(urlsplit(src).path)).resolve()
            if not path.is_file():
                missing.append(src)
                print(f"site: {display_path(findings)}: figure {src} not found "
                      f"({display_path(path)}); left as it is", file=sys.stderr)
                continue
            rel = f"{FIGURES_SUBDIR}/{path.name}"
            _copy(path, site / rel)
            child.attrSet("src", rel)
            copied.append(rel)
    return md.renderer.render(tokens, md.options, {}), copied, missing


def _relink(link: Any) -> None:
    """A link to FINDINGS.md or APPENDIX.md (with its #anchor) pointed at the site's page; a
    link to a figure (the key figure opens full size) at its copy in SITE/figures/."""
    href = link.attrGet("href")
    if not isinstance(href, str) or not _is_local(href):
        return
    parts = urlsplit(href)
    name = PurePosixPath(unquote(parts.path)).name
    page = PAGE_OF_DOCUMENT.get(name)
    if page is not None:
        link.attrSet("href", page + (f"#{parts.fragment}" if parts.fragment else ""))
    elif PurePosixPath(name).suffix.lower() in FIGURE_SUFFIXES:
        link.attrSet("href", f"{FIGURES_SUBDIR}/{name}")


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


# --------------------------------------------------------------------------- notebooks

def notebook_title(nb: dict[str, Any], fallback: str) -> str:
    """The notebook's first markdown heading (``# 01 · Load traces``), else ``fallback``."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        for line in source.splitlines():
            if line.startswith("#"):
                return line.lstrip("#").strip()
    return fallback


@functools.lru_cache(maxsize=1)
def _exporter() -> "HTMLExporter":
    """nbconvert's lab HTML with our template, image outputs extracted to files, and the
    template's stylesheets (~270 kB) linked as files the pages share instead of inlined in each
    (``css_files``: file name -> CSS, written beside the pages)."""
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    class SiteHTMLExporter(HTMLExporter):
        css_files: dict[str, str] = {}

        def _init_resources(self, resources):  # type: ignore[no-untyped-def]
            resources = super()._init_resources(resources)

            def link_css(name: str) -> Markup:
                href = f"{LAB_CSS_PREFIX}{PurePosixPath(name).name}"
                self.css_files[href] = self.environment.loader.get_source(self.environment, name)[0]
                return Markup(f'<link rel="stylesheet" href="{href}">')

            resources["include_css"] = link_css
            return resources

    config = Config({"ExtractOutputPreprocessor": {"enabled": True}})
    return SiteHTMLExporter(config=config, template_name="lab", template_file="notebook.html.j2",
                            extra_template_paths=[str(SITE_TEMPLATES)])


def render_notebook(page: NotebookPage, site: Path, nav: str) -> list[str]:
    """Write SITE/<page.href> and its image outputs (SITE/<stem>_files/); returns the files."""
    import nbformat

    stem = PurePosixPath(page.href).stem
    resources = {"metadata": {"name": page.title}, "unique_key": stem,
                 "output_files_dir": f"{stem}_files",
                 "site": {"nav": nav, "css": CSS_NAME}}
    body, res = _exporter().from_notebook_node(nbformat.read(page.source, as_version=4),
                                               resources=resources)
    (site / page.href).write_text(body, encoding="utf-8")
    written = [page.href]
    for name, data in sorted(res.get("outputs", {}).items()):
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_bytes(data)
        written.append(name)
    for name, css in sorted(_exporter().css_files.items()):      # type: ignore[attr-defined]
        if not (site / name).is_file():
            (site / name).write_text(css, encoding="utf-8")
            written.append(name)
    return written


# --------------------------------------------------------------------------- site

@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(SITE_TEMPLATES),
                              undefined=jinja2.StrictUndefined, autoescape=True,
                              trim_blocks=True, lstrip_blocks=True)


def build_site(out: Path, site: Path, notebooks_dir: Path, figures_dir: Path,
               data: str | None = None) -> SiteResult:
    """Write the site of the report in ``out`` (FINDINGS.md) into ``site``, replacing it."""
    findings = out / FINDINGS_NAME
    if not findings.is_file():
        raise SiteError(f"no {display_path(findings)}: run `make report` first")
    if not notebooks_dir.is_dir():
        raise SiteError(f"no executed notebooks in {display_path(notebooks_dir)}")
    sources = sorted(notebooks_dir.glob("*.ipynb"))
    if site.exists():
        shutil.rmtree(site)
    site.mkdir(parents=True)
    data_root, data_source = recorded_data_root(out, sources, data)
    pages = [NotebookPage(nb, f"{nb.stem}.html",
                          notebook_title(json.loads(nb.read_text(encoding="utf-8")), nb.stem))
             for nb in sources]
    env = environment()
    page_rows = [{"href": p.href, "title": p.title, "source": display_path(p.source)}
                 for p in pages]
    dataset = dataset_context(data_root)

    appendix_md = out / APPENDIX_MD
    appendix = APPENDIX_PAGE if appendix_md.is_file() else None

    def nav(current: str) -> str:
        return env.get_template("_nav.html.j2").render(dataset=dataset, pages=page_rows,
                                                       current=current, appendix=appendix)

    findings_html, inline, missing = render_findings(findings, site)
    shutil.copyfile(findings, site / FINDINGS_NAME)
    others = [f for f in sorted(figures_dir.glob("*.png")) if f"{FIGURES_SUBDIR}/{f.name}" not in inline]
    for fig in others:
        _copy(fig, site / FIGURES_SUBDIR / fig.name)
    (site / INDEX_NAME).write_text(env.get_template("findings.html.j2").render(
        nav=Markup(nav(INDEX_NAME)), pages=page_rows, css=CSS_NAME,
        findings=Markup(findings_html),
        other_figures=[{"src": f"{FIGURES_SUBDIR}/{f.name}", "name": f.name} for f in others]),
        encoding="utf-8")
    shutil.copyfile(SITE_TEMPLATES / CSS_NAME, site / CSS_NAME)
    site_pages = [INDEX_NAME]
    if appendix is not None:
        appendix_html, more, gone = render_findings(appendix_md, site)
        inline += more
        missing += gone
        shutil.copyfile(appendix_md, site / APPENDIX_MD)
        (site / appendix).write_text(env.get_template("appendix.html.j2").render(
            nav=Markup(nav(appendix)), css=CSS_NAME, appendix=Markup(appendix_html)),
            encoding="utf-8")
        site_pages.append(appendix)
    for page in pages:
        render_notebook(page, site, nav(page.href))
    return SiteResult(site=site, pages=site_pages + [p.href for p in pages],
                      figures=inline + [f"{FIGURES_SUBDIR}/{f.name}" for f in others],
                      missing_figures=missing, data_root=data_root, data_source=data_source)


def _size_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="", help="report directory holding FINDINGS.md (default: reports/)")
    ap.add_argument("--notebooks", default="", help="executed notebooks (default: OUT/notebooks)")
    ap.add_argument("--figures", default="", help="the run's figures (default: figures/ or OUT/figures)")
    ap.add_argument("--data", default="", help="data root to name (default: what the run recorded)")
    ap.add_argument("--site", default="", help="where to write (default: OUT/site)")
    args = ap.parse_args(argv)
    out = resolve_out_dir(args.out or None)
    site = Path(args.site).resolve() if args.site else out / "site"
    t0 = time.perf_counter()
    try:
        result = build_site(out, site,
                            Path(args.notebooks).resolve() if args.notebooks else out / "notebooks",
                            resolve_figures_dir(out, args.figures or None), args.data or None)
    except SiteError as exc:
        print(f"make site: {exc}", file=sys.stderr)
        return 1
    print(f"site: {len(result.pages)} pages, {len(result.figures)} figures, "
          f"{_size_bytes(site) / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s "
          f"-> {display_path(site / INDEX_NAME)}")
    print(f"site: dataset {result.data_root} (from {result.data_source})")
    if result.missing_figures:
        print(f"site: {len(result.missing_figures)} figure reference(s) of {FINDINGS_NAME} "
              f"point to no file: {', '.join(result.missing_figures)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
