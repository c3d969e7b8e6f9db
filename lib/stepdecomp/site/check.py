"""Open every page of a built site in a real browser and check it (`make site-check`).

    python -m stepdecomp.site.check [SITE] [--no-screenshots]

Headless Debian chromium, driven by Playwright on that executable (no browser download), opens
every SITE/*.html from file:// and reports, naming the page and the resource:

- a console error or an uncaught exception;
- a failed request, and any request that is not file: or data: (it is blocked, not sent);
- an <img> that did not load (naturalWidth 0);
- on index.html: fewer or more tables than SITE/FINDINGS.md has, a figure FINDINGS.md
  references or one of SITE/figures/*.png that is not shown, a notebook page not linked;
  the Answer heading or the key figure (the Answer section's first figure in FINDINGS.md)
  not wholly within the first viewport of FOLD_VIEWPORT ("above the fold").

The expectations are read from the markdown and the files with simple line rules, not from
the renderer that built the pages. A full-page screenshot of each page goes to
SITE/screenshots/<page>.png. Exit status 1 when anything is reported.

Without chromium (``chromium`` or ``chromium-browser`` on PATH, or $STEPDECOMP_CHROMIUM) the
check prints one line and exits 0, unless $STEPDECOMP_REQUIRE_BROWSER is set (CI sets it).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Iterator
from urllib.parse import unquote, urlsplit

from ..core.paths import display_path, resolve_out_dir
from .build import ANSWER_HEADING, FIGURES_SUBDIR, FINDINGS_NAME, INDEX_NAME, SCREENSHOTS_SUBDIR

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM_NAMES = ("chromium", "chromium-browser")
ENV_CHROMIUM = "STEPDECOMP_CHROMIUM"
#: Set (to anything non-empty) where a missing browser is a failure, not a skip (CI).
ENV_REQUIRE = "STEPDECOMP_REQUIRE_BROWSER"
#: URL schemes a page may load from: its own files and inline data.
LOCAL_SCHEMES = frozenset({"file", "data"})
VIEWPORT = {"width": 1280, "height": 900}
#: The first screen a reader sees, where the Answer and the key figure must be.
FOLD_VIEWPORT = {"width": 1280, "height": 800}
#: Per browser action (load, evaluate, screenshot); generous: a full-page screenshot of the
#: 23,000 px index took over 30 s on a loaded 2-core machine.
PAGE_TIMEOUT_MS = 120_000

_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_DELIMITER_ROW = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
_IMAGE_REF = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)")


# --------------------------------------------------------------------------- expectations

def _outside_fences(markdown: str) -> list[str]:
    lines, fenced = [], False
    for line in markdown.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def _cells(row: str) -> int:
    return len(row.replace("\\|", "").strip().strip("|").split("|"))


def count_markdown_tables(markdown: str) -> int:
    """GFM tables: a header row followed by a delimiter row (|---|:--:|) with as many cells,
    both with a pipe, outside code fences."""
    lines = _outside_fences(markdown)
    return sum(1 for head, delim in zip(lines, lines[1:])
               if "|" in head and "|" in delim and _DELIMITER_ROW.match(delim)
               and _cells(head) == _cells(delim))


def markdown_figures(markdown: str) -> list[str]:
    """The targets of ``![alt](target)`` outside code fences, in order."""
    return [m.group(1) for line in _outside_fences(markdown) for m in _IMAGE_REF.finditer(line)]


def _basename(src: str) -> str:
    return PurePosixPath(unquote(urlsplit(src).path)).name


@dataclass(frozen=True)
class IndexExpectation:
    tables: int
    #: figure file names index.html must show: FINDINGS' references and SITE/figures/*.png
    figures: tuple[str, ...]
    #: the pages index.html must link to
    pages: tuple[str, ...]
    #: whether FINDINGS.md has the "## Answer" section, and its first figure (file name)
    answer: bool = False
    key_figure: str | None = None


def answer_section(markdown: str) -> tuple[bool, str | None]:
    """Whether the markdown has a level-2 heading ANSWER_HEADING, and the file name of the
    first figure between it and the next level-2 heading (None without one)."""
    lines = _outside_fences(markdown)
    heading = f"## {ANSWER_HEADING}"
    if heading not in (line.rstrip() for line in lines):
        return False, None
    start = [line.rstrip() for line in lines].index(heading) + 1
    for line in lines[start:]:
        if line.startswith("## "):
            break
        refs = _IMAGE_REF.findall(line)
        if refs:
            return True, _basename(refs[0])
    return True, None


def expected_index(site: Path) -> IndexExpectation:
    findings = site / FINDINGS_NAME
    markdown = findings.read_text(encoding="utf-8") if findings.is_file() else ""
    names = [_basename(s) for s in markdown_figures(markdown)]
    names += [p.name for p in sorted((site / FIGURES_SUBDIR).glob("*.png")) if p.name not in names]
    pages = tuple(p.name for p in sorted(site.glob("*.html")) if p.name != INDEX_NAME)
    answer, key_figure = answer_section(markdown)
    return IndexExpectation(count_markdown_tables(markdown), tuple(names), pages, answer,
                            key_figure)


# --------------------------------------------------------------------------- browser

def find_chromium() -> str | None:
    explicit = os.environ.get(ENV_CHROMIUM)
    if explicit:
        return explicit
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


@contextmanager
def open_browser(executable: str) -> Iterator["Browser"]:
    """Headless chromium at ``executable`` (Playwright drives it; nothing is downloaded)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def _watch(page: "Page", name: str, problems: list[str]) -> None:
    """Record console errors, uncaught exceptions, failed and external requests of ``page``."""
    external: set[str] = set()

    def on_request(request) -> None:
        if urlsplit(request.url).scheme not in LOCAL_SCHEMES and request.url not in external:
            external.add(request.url)
            problems.append(f"{name}: external request {request.url} (blocked: the site "
                            f"must not leave the page)")

    def on_failed(request) -> None:
        if request.url not in external:
            problems.append(f"{name}: request failed {_local(request.url)}: {request.failure}")

    def on_console(message) -> None:
        if message.type == "error":
            where = message.location.get("url", "") if message.location else ""
            problems.append(f"{name}: console error: {message.text}"
                            + (f" ({_local(where)})" if where else ""))

    page.on("request", on_request)
    page.on("requestfailed", on_failed)
    page.on("console", on_console)
    page.on("pageerror", lambda exc: problems.append(f"{name}: uncaught exception: {exc}"))
    page.route(re.compile(r"^(?!(file|data):)"), lambda route: route.abort("blockedbyclient"))


def _local(url: str) -> str:
    """A file: URL as a display path (the page's own resources), anything else as is."""
    parts = urlsplit(url)
    return display_path(unquote(parts.path)) if parts.scheme == "file" else url


_BROKEN_IMAGES_JS = """() => Array.from(document.images)
    .filter(img => !img.complete || img.naturalWidth === 0)
    .map(img => img.getAttribute('src') || '(no src)')"""
_INDEX_JS = """() => ({
    tables: document.querySelectorAll('#findings table').length,
    images: Array.from(document.images).map(img => img.getAttribute('src') || ''),
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href')),
})"""


def check_index(page: "Page", expect: IndexExpectation) -> list[str]:
    dom = page.evaluate(_INDEX_JS)
    problems = []
    if dom["tables"] != expect.tables:
        problems.append(f"{INDEX_NAME}: {dom['tables']} tables in #findings, {FINDINGS_NAME} "
                        f"has {expect.tables}")
    shown = {_basename(src) for src in dom["images"]}
    problems += [f"{INDEX_NAME}: figure {name} is not shown" for name in expect.figures
                 if name not in shown]
    linked = {_basename(href) for href in dom["links"]}
    problems += [f"{INDEX_NAME}: page {name} is not linked" for name in expect.pages
                 if name not in linked]
    return problems


_FOLD_JS = """([heading, figure]) => {
    const box = el => { if (!el) return null; const r = el.getBoundingClientRect();
                        return {top: r.top + window.scrollY, bottom: r.bottom + window.scrollY,
                                height: r.height}; };
    const h = Array.from(document.querySelectorAll('#findings h2'))
        .find(e => e.textContent.trim() === heading);
    const img = figure === null ? null : Array.from(document.querySelectorAll('#findings img'))
        .find(e => (e.getAttribute('src') || '').split('/').pop() === figure);
    return {heading: box(h), figure: box(img)};
}"""


def check_fold(browser: "Browser", site: Path, expect: IndexExpectation) -> list[str]:
    """The Answer heading and the key figure wholly within the first FOLD_VIEWPORT of
    index.html (nothing to check when FINDINGS.md has no Answer: a seed-only report)."""
    if not expect.answer:
        return []
    height = FOLD_VIEWPORT["height"]
    page = browser.new_page(viewport=FOLD_VIEWPORT)
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        page.goto((site / INDEX_NAME).resolve().as_uri(), wait_until="load")
        dom = page.evaluate(_FOLD_JS, [ANSWER_HEADING, expect.key_figure])
    finally:
        page.close()
    problems = []
    where = f"within the first {FOLD_VIEWPORT['width']}×{height} viewport"
    if dom["heading"] is None:
        problems.append(f"{INDEX_NAME}: no '{ANSWER_HEADING}' heading in #findings")
    elif dom["heading"]["bottom"] > height:
        problems.append(f"{INDEX_NAME}: the {ANSWER_HEADING} heading ends at "
                        f"{dom['heading']['bottom']:.0f} px, not {where}")
    if expect.key_figure is None:
        problems.append(f"{INDEX_NAME}: the {ANSWER_HEADING} section of {FINDINGS_NAME} has "
                        f"no key figure")
    elif dom["figure"] is None or dom["figure"]["height"] == 0:
        problems.append(f"{INDEX_NAME}: key figure {expect.key_figure} is not shown")
    elif dom["figure"]["bottom"] > height:
        problems.append(f"{INDEX_NAME}: key figure {expect.key_figure} ends at "
                        f"{dom['figure']['bottom']:.0f} px, not {where}")
    return problems


def check_page(browser: "Browser", site: Path, name: str, screenshots: Path | None,
               expect: IndexExpectation | None = None) -> list[str]:
    from playwright.sync_api import Error as PlaywrightError

    problems: list[str] = []
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        _watch(page, name, problems)
        page.goto((site / name).resolve().as_uri(), wait_until="load")
        problems += [f"{name}: image {src} did not load (naturalWidth 0)"
                     for src in page.evaluate(_BROKEN_IMAGES_JS)]
        if expect is not None:
            problems += check_index(page, expect)
        if screenshots is not None:
            page.screenshot(path=str(screenshots / f"{PurePosixPath(name).stem}.png"),
                            full_page=True)
    except PlaywrightError as exc:        # a timeout or a crash: name the page, keep checking
        problems.append(f"{name}: the browser failed: {str(exc).splitlines()[0]}")
    finally:
        page.close()
    return problems


def check_site(site: Path, browser: "Browser", screenshots: bool = True) -> list[str]:
    """Every problem of every page of ``site`` (empty: the site passes)."""
    if not (site / INDEX_NAME).is_file():
        return [f"no {display_path(site / INDEX_NAME)}: build the site first (make site)"]
    shots = site / SCREENSHOTS_SUBDIR if screenshots else None
    if shots is not None:
        shutil.rmtree(shots, ignore_errors=True)
        shots.mkdir(parents=True)
    expect = expected_index(site)
    problems = check_page(browser, site, INDEX_NAME, shots, expect)
    problems += check_fold(browser, site, expect)
    for name in expect.pages:
        problems += check_page(browser, site, name, shots)
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("site", nargs="?", default="", help="site directory (default: reports/site)")
    ap.add_argument("--no-screenshots", action="store_true")
    args = ap.parse_args(argv)
    site = Path(args.site).resolve() if args.site else resolve_out_dir(None) / "site"
    executable = find_chromium()
    if executable is not None and not os.access(executable, os.X_OK):
        print(f"site-check: {executable} (${ENV_CHROMIUM}) is not an executable file", file=sys.stderr)
        return 1
    if executable is None:
        line = (f"site-check: no chromium ({' or '.join(CHROMIUM_NAMES)} on PATH, or "
                f"${ENV_CHROMIUM}); install Debian's chromium package to run the browser check")
        if os.environ.get(ENV_REQUIRE):
            print(f"{line} — required here (${ENV_REQUIRE} is set)", file=sys.stderr)
            return 1
        print(f"{line} — skipped")
        return 0
    t0 = time.perf_counter()
    with open_browser(executable) as browser:
        problems = check_site(site, browser, screenshots=not args.no_screenshots)
    n_pages = len(list(site.glob("*.html")))
    for problem in problems:
        print(f"site-check: {problem}", file=sys.stderr)
    if problems:
        print(f"site-check: {len(problems)} problem(s) on the {n_pages} pages of "
              f"{display_path(site)}", file=sys.stderr)
        return 1
    print(f"site-check: {n_pages} pages of {display_path(site)} OK in chromium "
          f"({time.perf_counter() - t0:.1f} s)"
          + ("" if args.no_screenshots else f"; screenshots in {display_path(site / SCREENSHOTS_SUBDIR)}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
