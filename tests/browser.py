"""Look at a Prefect flow run page the way a user does: headless Debian Chromium, driven by playwright.

The run graph at the top of the page is a canvas (its labels are not in the DOM), so the check reads the
page's tabs instead: "Task Runs" lists one `.task-run-list-item` per task run, with the run name as a
link to `/runs/task-run/<id>`; "Artifacts" shows one `.artifact-card` per artifact (title = key, then
the description). Each tab is saved as a PNG; a failure names what was missing and where the PNGs are.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking/component/sync flags Chromium's own connections to the internet
# (none reachable here) end in refused connections; --disable-quic keeps it on plain HTTP to localhost.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# A tall "screen": the UI's lists are virtual scrollers that render only the chunks in view (50 task runs
# a chunk), so on a 1000 px screen a long run's oldest task runs are not in the DOM at all. 8000 px shows
# ~80 task runs without scrolling; the screenshots are then cut at the bottom of the tab's content (the
# UI scrolls an inner element, not the document, so playwright's full_page would stop at the viewport).
WIDTH, HEIGHT = 1400, 8000

TABLIST = "[role=tablist]"
TASK_RUN_NAME = ".task-run-list-item a[href^='/runs/task-run/']"
ARTIFACT_CARD, ARTIFACT_TITLE = ".artifact-card", ".artifact-card__title"
TAB_CONTENT = "section.p-tabs__content"


class UICheckError(AssertionError):
    """What the flow run page should show and does not (an AssertionError, so pytest reports it as a failure)."""


def log_in(page, ui_url: str, auth_string: str, timeout_ms: float) -> None:
    """Type the auth string into the UI's login page (a server with basic auth shows it instead of any
    page) and wait until the UI has left it: the UI keeps the string in localStorage for later calls."""
    page.goto(f"{ui_url.rstrip('/')}/login", wait_until="domcontentloaded", timeout=timeout_ms)
    field = page.locator("input[type=password]").first
    field.fill(auth_string, timeout=timeout_ms)
    field.press("Enter")
    page.wait_for_url(lambda url: "/login" not in url, timeout=timeout_ms)


def capture_flow_run(ui_url: str, flow_run_id: str, out_dir: Path, expect_tasks: list[str],
                     expect_artifact_key: str, expect_artifact_description: str | None = None,
                     timeout_s: float = 60.0, auth_string: str | None = None) -> dict[str, Any]:
    """Open `<ui_url>/runs/flow-run/<flow_run_id>`, screenshot its "Task Runs" and "Artifacts" tabs into
    `out_dir`, and check that every name in `expect_tasks` and the artifact card are on screen.
    `auth_string` ("admin:<password>", the server's PREFECT_API_AUTH_STRING): log in first, through the
    UI's own login page, as a person would.

    Returns {"url", "tasks_visible", "tasks_missing", "tasks_shown", "artifact_key_visible",
    "artifact_description", "artifact_keys_shown", "screenshots", "text" (visible text per tab), "seconds"}.
    Raises UICheckError when something expected is missing (or a page never renders within `timeout_s`),
    RuntimeError when Chromium or playwright are absent.
    """
    if not CHROMIUM.is_file():
        raise RuntimeError(f"Debian chromium is not installed ({CHROMIUM} missing): run `apt-get install -y "
                           "chromium` as root (infra/local/bootstrap.sh does it when run as root)")
    try:
        from playwright.sync_api import TimeoutError as PlaywrightTimeout
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        raise RuntimeError("playwright is not installed: run infra/local/bootstrap.sh (requirements.lock)") from error

    out_dir.mkdir(parents=True, exist_ok=True)
    url = f"{ui_url.rstrip('/')}/runs/flow-run/{flow_run_id}"
    started = time.monotonic()

    def left_ms(keep_s: float = 0.0) -> float:
        """What is left of the overall budget (less `keep_s` kept for later steps), so that a stuck page
        fails at about `timeout_s`, and a missing task name still leaves time to look at the artifacts."""
        return max(1000.0, (timeout_s - keep_s - (time.monotonic() - started)) * 1000)

    found: dict[str, Any] = {"url": url, "tasks_visible": [], "tasks_missing": list(expect_tasks), "tasks_shown": [],
                             "artifact_key_visible": False, "artifact_description": None, "artifact_keys_shown": [],
                             "screenshots": [], "text": {}}
    step = "starting Chromium"
    with sync_playwright() as playwright:
        # launch() gives Chromium a fresh, empty, temporary user-data-dir; never `playwright install`:
        # its browser download needs the internet.
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})

        def shoot(name: str) -> None:
            """Save the screen down to the bottom of the open tab's content (the rest is empty space)."""
            bottom = page.evaluate(f"document.querySelector('{TAB_CONTENT}')?.getBoundingClientRect().bottom ?? 0")
            if not bottom:  # no run page (an error page centres its message): an ordinary screen shows it
                page.set_viewport_size({"width": WIDTH, "height": 1000})
            height = min(HEIGHT, max(1000, int(bottom) + 24))
            path = out_dir / f"flow-run-{name}.png"
            page.screenshot(path=path, clip={"x": 0, "y": 0, "width": WIDTH, "height": height})
            found["screenshots"].append(path)
            found["text"][name] = page.inner_text("body")

        try:
            if auth_string:
                step = "logging in"
                log_in(page, ui_url, auth_string, left_ms())
            step = f"loading {url}"
            page.goto(url, wait_until="domcontentloaded", timeout=left_ms())
            page.locator(TABLIST).wait_for(timeout=left_ms())  # the run header rendered (a 404 page has none)

            step = "the Task Runs tab"
            page.locator(TABLIST).get_by_text("Task Runs", exact=True).click(timeout=left_ms())
            names = page.locator(TASK_RUN_NAME)
            try:  # the list fills in from the API: wait until every expected name is there, or time is up
                page.wait_for_function(
                    "([sel, want]) => { const got = new Set([...document.querySelectorAll(sel)]"
                    ".map(e => e.innerText.trim())); return want.every(n => got.has(n)); }",
                    arg=[TASK_RUN_NAME, expect_tasks], timeout=left_ms(keep_s=timeout_s / 4))
            except PlaywrightTimeout:
                pass  # reported below, with the screenshot
            shoot("task-runs")
            # Exact names, not substrings: "validate" must not pass because "validate_clean" is shown.
            visible = {text.strip() for text in names.filter(visible=True).all_inner_texts()}
            found["tasks_shown"] = sorted(visible)
            found["tasks_visible"] = [n for n in expect_tasks if n in visible]
            found["tasks_missing"] = [n for n in expect_tasks if n not in visible]

            step = "the Artifacts tab"
            page.locator(TABLIST).get_by_text("Artifacts", exact=True).click(timeout=left_ms())
            card = page.locator(ARTIFACT_CARD).filter(
                has=page.locator(ARTIFACT_TITLE).get_by_text(expect_artifact_key, exact=True))
            try:
                card.first.wait_for(state="visible", timeout=left_ms())
            except PlaywrightTimeout:
                pass
            shoot("artifacts")
            found["artifact_keys_shown"] = [t.strip() for t in page.locator(ARTIFACT_TITLE).all_inner_texts()]
            if card.count() and card.first.is_visible():
                found["artifact_key_visible"] = True
                description = card.first.locator(".artifact-card__description")
                found["artifact_description"] = description.inner_text().strip() if description.count() else ""
        except PlaywrightTimeout as error:
            try:
                shoot("failure")
            except Exception:  # the timeout is the error to report, not a failed screenshot
                pass
            shots = ", ".join(str(p) for p in found["screenshots"]) or "none"
            shown = " ".join(found["text"].get("failure", "").split())[:300]
            raise UICheckError(f"Prefect UI: timed out on {step} after {time.monotonic() - started:.0f}s; the page "
                               f"shows {shown!r}; screenshots: {shots}") from error
        finally:
            browser.close()

    found["seconds"] = round(time.monotonic() - started, 1)
    problems = []
    if found["tasks_missing"]:
        problems.append(f"task runs not listed on the Task Runs tab: {found['tasks_missing']} "
                        f"(listed: {found['tasks_shown']})")
    if not found["artifact_key_visible"]:
        problems.append(f"no artifact card {expect_artifact_key!r} on the Artifacts tab "
                        f"(cards: {found['artifact_keys_shown']})")
    elif expect_artifact_description is not None and found["artifact_description"] != expect_artifact_description:
        problems.append(f"artifact {expect_artifact_key!r} shows description {found['artifact_description']!r}, "
                        f"expected {expect_artifact_description!r}")
    if problems:
        shots = ", ".join(str(p) for p in found["screenshots"])
        raise UICheckError(f"Prefect UI at {url}: " + "; ".join(problems) + f". Screenshots: {shots}")
    return found


def capture_offline_page(page_file: Path, png: Path, ready_selector: str, expect_count: int,
                         timeout_s: float = 60.0) -> dict[str, Any]:
    """Open a local HTML file with the network cut off (every request that is not the file itself is aborted, as on
    a machine without the internet), wait for `expect_count` elements matching `ready_selector`, and save the
    page as `png`. Returns {"count", "blocked" (the URLs it tried to fetch), "png"}; UICheckError when the
    elements do not appear in time."""
    from playwright.sync_api import sync_playwright

    blocked: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://")
                       else (blocked.append(route.request.url), route.abort()))
            page.goto(page_file.resolve().as_uri(), wait_until="load", timeout=timeout_s * 1000)
            deadline = time.monotonic() + timeout_s
            while (count := page.locator(ready_selector).count()) < expect_count:
                if time.monotonic() > deadline:
                    page.screenshot(path=png, full_page=True)
                    raise UICheckError(f"{page_file}: {count} of {expect_count} {ready_selector!r} rendered in "
                                       f"{timeout_s:.0f} s (blocked requests: {blocked}); screenshot: {png}")
                time.sleep(0.2)
            page.screenshot(path=png, full_page=True)
        finally:
            browser.close()
    return {"count": count, "blocked": blocked, "png": png}
