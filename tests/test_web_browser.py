"""The web pages in a real browser: Debian's Chromium, driven by Playwright, against `papersim web` on 127.0.0.1.

The test command installs Chromium when it is missing (scripts/test.sh); these tests never skip. With
PAPERSIM_SCREENSHOTS=docs one more test serves the bundled sample (run the main command first) and
saves the README's screenshots of the paper page and of compare there.
"""

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, free_port, stop_group
from papersim.retrieval.search import MAX_QUERY_CHARS

# Without these Chromium reaches for the network at start (closed here) and on every page.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise RuntimeError("no chromium on PATH: the browser tests need Debian's chromium "
                           "(`apt-get install -y chromium`; bash scripts/test.sh installs it)")
    return found


def start_web(cwd: Path, env: dict[str, str], log: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """`papersim web` on a free port of 127.0.0.1 in a process group of its own; waits for /health."""
    port = free_port()
    out = log.open("w")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("papersim")), "web", "--port", str(port), *args],
                            cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_group(proc) if proc.poll() is None else None
            raise RuntimeError(f"papersim web did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def server(web_site, tmp_path_factory):
    proc, url = start_web(web_site.root, web_site.env, tmp_path_factory.mktemp("web-log") / "web.log")
    yield url
    stop_group(proc)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)  # a fresh profile each launch
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.dialogs = []  # any alert() would be a script that ran
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    yield page
    context.close()


def test_search_open_a_paper_and_walk_to_a_similar_one(page, server):
    page.goto(server + "/")
    page.fill("input[name=q]", "supersonic wing flutter")
    page.select_option("select[name=mode]", "served")
    page.press("input[name=q]", "Enter")
    page.wait_for_selector("ol.hits li.hit")
    assert "q=supersonic+wing+flutter" in page.url
    hits = page.locator("ol.hits li.hit")
    assert hits.count() == 10
    first = hits.nth(0)
    assert first.locator(".rank").inner_text() == "1" and first.locator(".score").inner_text().startswith("score ")
    assert first.locator("p.abstract").inner_text() and first.locator(".source").count() == 1
    title = first.locator("a.title").inner_text()
    first.locator("a.title").click()
    page.wait_for_selector("article.paper h1")
    assert page.locator("article.paper h1").inner_text() == title
    assert page.locator("article.paper p.abstract.full").inner_text()
    assert page.locator("section.similar h2").inner_text() == "Similar papers"
    similar = page.locator("section.similar li.hit").nth(0)
    target_id, target_title = similar.get_attribute("data-paper-id"), similar.locator("a.title").inner_text()
    similar.locator("a.title").click()
    page.wait_for_selector("article.paper h1")
    assert page.url.endswith("/paper/" + target_id)
    assert page.locator("article.paper h1").inner_text() == target_title
    assert page.locator("section.similar li.hit").count() == 10 and page.dialogs == []


def test_compare_champion_and_challenger_marks_the_rows(page, server, web_site):
    page.goto(server + "/compare")
    assert page.locator("select[name=a]").input_value() == "champion"
    assert page.locator("select[name=b]").input_value() == "challenger"
    page.fill("input[name=q]", "supersonic wing flutter")
    page.click("form.compare button")
    page.wait_for_selector("div.columns")
    versions = page.locator("section.version")
    assert versions.count() == 2
    assert f"v{web_site.versions[0]}" in versions.nth(0).locator("h2").inner_text()
    assert versions.nth(0).locator(".gate strong").inner_text() == "champion"
    assert "below" in versions.nth(1).locator(".reason").inner_text()
    assert versions.nth(1).locator("table.metrics tr").count() == 7  # header + 3 metrics x 2 sets
    a_ids = page.locator("[data-side=a] li.hit").evaluate_all("rows => rows.map(r => r.dataset.paperId)")
    b_rows = page.locator("[data-side=b] li.hit").evaluate_all(
        "rows => rows.map(r => [r.dataset.paperId, r.dataset.move, r.classList.contains('both'), "
        "r.querySelector('.mark').textContent.trim()])")
    assert len(a_ids) == len(b_rows) == 10
    for rank, (paper_id, move, both, mark) in enumerate(b_rows, 1):
        assert both == (paper_id in a_ids)
        if move == "new":
            assert paper_id not in a_ids and mark == "new"
        else:
            by = a_ids.index(paper_id) + 1 - rank
            assert move == ("up" if by > 0 else "down" if by < 0 else "same")
            assert mark == ("=" if by == 0 else f"{'▲' if by > 0 else '▼'} {abs(by)}")
    shared = sum(both for _, _, both, _ in b_rows)
    assert page.locator(".overlap-value").inner_text() == f"{shared / 10:.2f}"
    assert page.locator("[data-side=a] li.hit.both").count() == shared


def test_hostile_paper_text_shows_as_text_and_runs_nothing(page, server):
    from conftest import HOSTILE_PAPERS

    for paper in HOSTILE_PAPERS:
        page.goto(f"{server}/paper/{paper['paper_id']}")
        assert page.locator("article.paper h1").inner_text() == paper["title"]
        assert page.locator("article.paper p.abstract.full").inner_text() == paper["abstract"]
    page.goto(server + "/?q=wing+flutter+supersonic&k=30")
    titles = page.locator("li.hit a.title").all_inner_texts()
    assert {p["title"] for p in HOSTILE_PAPERS} <= set(titles)
    for url in ("/paper/xss-script", "/paper/xss-link", "/?q=wing+flutter+supersonic&k=30",
                "/compare?q=wing+flutter+supersonic&k=30"):
        page.goto(server + url)
        found = page.evaluate("""() => ({pwned: window.__pwned === undefined ? null : String(window.__pwned),
            scripts: document.querySelectorAll('script').length, images: document.querySelectorAll('img').length,
            js_links: document.querySelectorAll('a[href^="javascript:" i]').length})""")
        assert found == {"pwned": None, "scripts": 0, "images": 0, "js_links": 0}, url
    assert page.dialogs == []


def test_a_listing_shows_authors_date_link_why_and_rendered_math(page, server):
    from conftest import MATH_PAPER

    page.goto(server + "/?q=supersonic+wing+flutter+bounds&k=30")
    hit = page.locator("li.hit[data-paper-id=math]")
    assert hit.locator("a.title math").count() == 1  # $\mathcal{O}(n^2)$ as MathML, laid out by the browser
    title = hit.locator("a.title").inner_text()
    assert "\\" not in title and "$" not in title and "supersonic" in title  # \textit{} is plain text
    assert hit.locator(".authors").inner_text() == "Ada Lovelace, Alan Turing"
    assert hit.locator("time.date").inner_text() == "5 Apr 2021"
    assert hit.locator("time.date").get_attribute("datetime") == "2021-04-05"
    link = hit.locator("a.link")
    assert link.get_attribute("href") == MATH_PAPER["url"] and link.inner_text() == "arxiv.org/abs/2104.01234"
    assert hit.locator(".venue").inner_text() == "Journal of Flutter"
    why = hit.locator("p.why").inner_text()
    assert why.startswith("matches: ") and "flutter" in why
    assert "flutter" in [m.lower() for m in hit.locator("a.title mark").all_inner_texts()]  # the query's words marked
    box = hit.locator("a.title math").bounding_box()
    assert box and box["width"] > 10  # rendered, not hidden
    page.goto(server + "/paper/math")
    assert page.locator("article.paper h1 math").count() == 1 and page.locator("p.abstract.full math").count() == 1
    assert page.title().startswith("Flutter bounds of 𝒪(n^2)")  # the tab's title: Unicode, no markup
    similar = page.locator("section.similar li.hit").nth(0)
    assert similar.locator("p.why").inner_text().startswith("why: ")
    assert page.dialogs == []


def test_filters_narrow_the_answer_and_their_url_can_be_shared(page, server):
    page.goto(server + "/?q=wing+flutter")
    page.fill("input[name=since]", "2016")
    page.fill("input[name=group]", "cat0; cat1")
    page.press("input[name=q]", "Enter")
    page.wait_for_selector("p.count")
    assert "since=2016" in page.url and "group=cat0%3B+cat1" in page.url
    dates = page.locator("li.hit time.date").evaluate_all("els => els.map(e => e.getAttribute('datetime'))")
    assert dates and all(d >= "2016" for d in dates)
    assert page.locator("li.hit").count() == len(dates)  # undated papers are left out by a date filter
    assert "since 2016, in cat0 or cat1" in page.locator("p.count").inner_text()
    shared = page.url
    page.goto(server + "/")
    page.goto(shared)  # the same answer from the address alone
    assert page.locator("li.hit time.date").count() == len(dates)
    assert page.input_value("input[name=since]") == "2016"
    page.goto(server + "/paper/p0?until=2012")
    page.wait_for_selector("section.similar")
    dates = page.locator("section.similar li.hit time.date").evaluate_all(
        "els => els.map(e => e.getAttribute('datetime'))")
    assert dates and all(d <= "2012-12-31" for d in dates)
    response = page.goto(server + "/?q=flutter&since=2019-02-30")
    assert response.status == 400 and "since: '2019-02-30' is not a date" in page.locator("p.error").inner_text()
    response = page.goto(server + "/?q=flutter&since=%3Cscript%3E")
    assert response.status == 400 and "<script>" in page.locator("p.error").inner_text()  # shown as text
    assert page.evaluate("document.querySelectorAll('script').length") == 0 and page.dialogs == []


def test_bad_input_pages_and_their_status(page, server):
    cases = [("/paper/no-such-paper", 404, "unknown paper id 'no-such-paper'"),
             ("/?q=flutter&k=0", 400, "k must be between 1 and 100"),
             ("/?q=flutter&mode=fuzzy", 400, "unknown mode 'fuzzy'"),
             ("/compare?a=champion&b=seven", 400, "unknown version 'seven'"),
             ("/?q=" + "x" * 1_000_000, 400, "query too long (1000000 characters")]
    for url, status, message in cases:
        response = page.goto(server + url)
        assert response.status == status, url[:80]
        assert page.locator("h1.status").inner_text().startswith(str(status))
        assert message in page.locator("p.error").inner_text()
    page.goto(server + "/")
    page.fill("input[name=q]", "y" * (MAX_QUERY_CHARS + 1))  # typed into the box, over the limit
    with page.expect_navigation() as navigation:
        page.click("form.search button")
    assert navigation.value.status == 400 and "query too long" in page.locator("p.error").inner_text()
    assert page.goto(server + "/?q=flutter").status == 200 and page.locator("li.hit").count() == 10


def test_registry_page_in_the_browser(page, server, web_site):
    assert page.goto(server + "/registry").status == 200
    rows = page.locator("table.registry tbody tr")
    assert rows.count() == 2
    assert rows.nth(1).locator(".gate").inner_text() == "champion"
    assert "<b>below</b>" in rows.nth(0).locator(".reason").inner_text()  # the tag's text, not markup


if os.environ.get("PAPERSIM_SCREENSHOTS"):  # only when asked: it needs the main command's index and registry
    def test_screenshots_of_the_bundled_sample(browser, tmp_path):
        """The README's pictures: the paper page and compare, served from the bundled sample's workspace."""
        folder = REPO / os.environ["PAPERSIM_SCREENSHOTS"]
        folder.mkdir(parents=True, exist_ok=True)
        proc, url = start_web(REPO, dict(os.environ), tmp_path / "web.log")
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1000}, device_scale_factor=1)
            page = context.new_page()
            page.goto(url + "/?q=siamese+networks+learn+a+similarity+metric&k=1")
            page.locator("li.hit a.title").first.click()
            page.wait_for_selector("section.similar li.hit")
            page.screenshot(path=str(folder / "web_paper.png"), full_page=False)
            paper_id = page.url.rsplit("/paper/", 1)[1]  # its similar papers: where versions differ most
            answer = page.goto(url + f"/compare?paper={paper_id}&k=8")
            assert answer.status == 200, page.locator("main").inner_text()  # e.g. no registered version yet
            page.screenshot(path=str(folder / "web_compare.png"), full_page=True)
            context.close()
        finally:
            stop_group(proc)
