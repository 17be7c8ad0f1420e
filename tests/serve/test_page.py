"""The web page end to end in headless Chromium (Debian's, driven by Playwright): the
shareable link to a user's list, the sentence box for new users, and like → feedback
stored. Every test fails on a console error or an uncaught exception in the page."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from playwright import sync_api

from directrec.serve.feedback import default_path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@contextmanager
def browser_page() -> Iterator[sync_api.Page]:
    """A fresh page; on leaving, the console errors and page exceptions it logged must be
    none."""
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless"])
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield page
        finally:
            browser.close()
    assert errors == []


def test_page_recommend_like_and_feedback_is_stored(server, world):
    db, _ = world
    with browser_page() as page:
        page.goto(server.url + "/")
        page.fill("#user", "u4")
        page.click("#load")
        page.wait_for_selector("#recs li")
        items = page.locator("#recs li")
        assert items.count() == 10
        first = items.first.get_attribute("data-item")
        assert page.locator("#history li").count() > 0
        assert page.inner_text("#version").startswith("v")
        # each item shows its categories and a short reason
        assert page.locator("#recs li .cats").count() == 10
        assert page.locator("#recs li .reason").count() == 10
        # the address bar is now the shareable link to this list
        assert page.url == server.url + "/?user=u4"
        items.first.locator("button.like").click()
        page.wait_for_function("document.getElementById('status').textContent.startsWith('Saved')")
        # the liked item is now the newest history entry and out of the list
        page.wait_for_function(
            f"[...document.querySelectorAll('#recs li')].every(e => e.dataset.item !== '{first}')"
        )
        assert page.locator("#history li").first.inner_text().endswith(f"({first})")
    with sqlite3.connect(default_path(db)) as con:
        rows = con.execute(
            "SELECT type FROM events WHERE user_id = 'u4' AND item_id = ?", (first,)
        ).fetchall()
    assert rows == [("like",)]


def test_page_link_opens_that_users_list(server):
    """`/?user=ID` opens the list without a click, the same list the API gives."""
    want = server.client.get("/v1/users/u9/recommendations", params={"k": 10, "explain": True})
    want_ids = [it["item_id"] for it in want.json()["items"]]
    with browser_page() as page:
        page.goto(server.url + "/?user=u9")
        page.wait_for_selector("#recs li")
        got = [e.get_attribute("data-item") for e in page.locator("#recs li").all()]
        assert got == want_ids
        assert page.input_value("#user") == "u9"
        assert page.locator("#history li").count() > 0


def test_page_sentence_box_recommends_for_a_new_user(server):
    with browser_page() as page:
        page.goto(server.url + "/?user=u9")
        page.wait_for_selector("#recs li")
        page.fill("#query", "haunted houses, ghosts and zombies")
        page.press("#query", "Enter")
        page.wait_for_function("document.getElementById('status').textContent.includes('haunted')")
        items = page.locator("#recs li")
        ids = [e.get_attribute("data-item") for e in items.all()]
        assert len(ids) == 10
        assert sum(int(i[1:]) // 20 == 4 for i in ids) >= 5  # the planted horror cluster
        assert page.locator("#recs li .cats").count() == 10
        # no user to post feedback for, no history, and the link no longer names u9
        assert page.locator("#recs li button").count() == 0
        assert page.locator("#history li").count() == 0
        assert page.url == server.url + "/"
