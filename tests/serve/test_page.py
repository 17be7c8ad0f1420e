"""The web page end to end in headless Chromium (Debian's, driven by Playwright): load the
page, get recommendations, click like, and find the feedback stored."""

from __future__ import annotations

import shutil
import sqlite3

from playwright import sync_api

from directrec.serve.feedback import default_path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def test_page_recommend_like_and_feedback_is_stored(server, world):
    db, _ = world
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless"])
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.fill("#user", "u4")
            page.click("#load")
            page.wait_for_selector("#recs li")
            items = page.locator("#recs li")
            assert items.count() == 10
            first = items.first.get_attribute("data-item")
            assert page.locator("#history li").count() > 0
            assert page.inner_text("#version").startswith("v")
            items.first.locator("button.like").click()
            page.wait_for_function(
                "document.getElementById('status').textContent.startsWith('Saved')"
            )
            # the liked item is now the newest history entry and out of the list
            page.wait_for_function(
                f"[...document.querySelectorAll('#recs li')].every(e => e.dataset.item !== '{first}')"
            )
            assert page.locator("#history li").first.inner_text().endswith(f"({first})")
        finally:
            browser.close()
    with sqlite3.connect(default_path(db)) as con:
        rows = con.execute(
            "SELECT type FROM events WHERE user_id = 'u4' AND item_id = ?", (first,)
        ).fetchall()
    assert rows == [("like",)]
