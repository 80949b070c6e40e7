"""The documentation site builds from a fresh clone (`mkdocs build --strict`, what `make docs` runs), and a
person with a browser sees it: the home page and a tutorial render, and the navigation lists the sections
(headless Debian Chromium, driven by playwright, on the built files served from 127.0.0.1). The bash blocks
the pages mark runnable run, as written, in a scratch clone."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, CHROMIUM_FLAGS
from tests.helpers import clean_env, scratch_clone

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ["Getting started", "Tutorials", "Concepts", "Reference", "Operations", "Benchmarks", "Decisions"]
PAGES = {"home": ("", "flowtune"),
         "tutorial": ("tutorials/ner-own-data/", "Train NER on your own CoNLL or JSONL files")}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built from a clone of HEAD: only committed files, as in a user's fresh clone."""
    work = tmp_path_factory.mktemp("docs")
    clone = work / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(work / "site")],
                           cwd=clone, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stderr[-3000:]
    for page in ("reference/params-ner/index.html", "reference/cli/index.html", "reference/http/index.html",
                 "reference/openapi.json"):
        assert (work / "site" / page).is_file(), page
    return work / "site"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # one line per request would bury a failure's report
        pass


@pytest.fixture(scope="module")
def served(site: Path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_the_home_page_and_a_tutorial_render_with_the_navigation(served: str, tmp_path: Path):
    if not CHROMIUM.is_file():
        pytest.fail(f"Debian chromium is not installed ({CHROMIUM}): run infra/local/bootstrap.sh as root")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for name, (path, title) in PAGES.items():
            page.goto(served + path, wait_until="load", timeout=30_000)
            heading = page.locator("article h1").first.inner_text(timeout=10_000)
            assert heading.removesuffix("¶").strip() == title, name  # ¶: the heading's permalink
            nav = page.locator("nav.md-nav--primary").first.inner_text(timeout=10_000)
            missing = [section for section in SECTIONS if section not in nav]
            assert not missing, f"{name}: the navigation lacks {missing}: {nav!r}"
            shot = tmp_path / f"docs-{name}.png"
            page.screenshot(path=shot, full_page=False)
            assert shot.stat().st_size > 10_000, f"blank? {shot}"
        browser.close()


# A page marks a bash block runnable with this comment on the line before its fence (invisible on the site).
RUNNABLE = "<!-- runnable"


def runnable_blocks() -> list[tuple[str, str]]:
    """(page:line, script) of each bash block right after a `<!-- runnable ... -->` line."""
    found = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        lines = page.read_text().splitlines()
        for index, line in enumerate(lines[:-1]):
            if line.startswith(RUNNABLE) and lines[index + 1].strip() == "```bash":
                end = lines.index("```", index + 2)
                found.append((f"{page.relative_to(ROOT)}:{index + 3}", "\n".join(lines[index + 2:end])))
    return found


def test_the_runnable_blocks_of_the_pages_run(tmp_path: Path):
    blocks = runnable_blocks()
    assert blocks, f"no bash block follows a {RUNNABLE!r} line in docs/"
    clone = scratch_clone(tmp_path / "clone")
    env = clean_env(PYTHONPATH=str(clone))  # the clone's code, not the editable install's
    for where, script in blocks:
        ran = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=clone, env=env, capture_output=True,
                             text=True, timeout=900)
        assert ran.returncode == 0, f"{where}: exit {ran.returncode}\n{ran.stdout[-2000:]}\n{ran.stderr[-3000:]}"
