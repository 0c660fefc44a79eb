"""The wiki server's search page in a real browser (Debian's headless
chromium, driven through its DevTools protocol by tests/browser.py): type
a query, see the titles appear as you type, open one.

Skipped only where chromium is missing AND PYPARALLEL_NO_BROWSER is set
(the CI lanes that run in a chroot without it); a missing chromium is a
failure otherwise."""

import urllib.parse

import pytest

from browser import browser  # noqa: F401 (browser: a fixture)
from wiki_support import Wiki, make_export

PAGES = [("Apple", "A fruit.", None), ("Apple pie", "A pie.", None),
         ("Application", "A use.", None), ("Banana", "Yellow.", None),
         ("Émile Zola", "Écrivain.", None), ("Applesauce", "#REDIRECT [[Apple]]", "Apple")]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("wiki") / "browse.xml")
    pages = make_export(path, PAGES)
    w = Wiki(path)
    yield w, pages
    w.stop().assert_no_crash_output()


def test_type_see_results_open_one(browser, served):
    w, pages = served
    base = f"http://127.0.0.1:{w.port}"
    page = browser.new_page()
    try:
        page.goto(base + "/")
        assert "browse.xml" in page.text()
        page.type("#q", "app")
        page.wait_for("document.querySelectorAll('#results a').length === 4")
        links = page.eval("[...document.querySelectorAll('#results a')]"
                          ".map(a => [a.textContent, a.getAttribute('href')])")
        assert links == [["Apple", "/wiki/Apple"], ["Apple pie", "/wiki/Apple_pie"],
                         ["Applesauce", "/wiki/Applesauce"], ["Application", "/wiki/Application"]]
        assert "4 titles" in page.eval("document.getElementById('status').textContent")
        # Typing on narrows the list as you type (case ignored).
        page.type("#q", "LES")
        page.wait_for("document.querySelectorAll('#results a').length === 1")
        # Unicode: a new query, with an accent, in lower case.
        page.eval("document.getElementById('q').value = ''")
        page.type("#q", "émi")
        page.wait_for("document.querySelectorAll('#results a').length === 1 && "
                      "document.querySelector('#results a').textContent === 'Émile Zola'")
        page.click("#results a")
        page.wait_for("location.pathname.startsWith('/wiki/') && document.readyState === 'complete'")
        assert urllib.parse.unquote(page.eval("location.pathname")) == "/wiki/Émile_Zola"
        assert "Écrivain." in page.text()
        # A redirect's link lands on its target.
        page.goto(base + "/")
        page.type("#q", "applesa")
        page.wait_for("document.querySelectorAll('#results a').length === 1")
        page.click("#results a")
        page.wait_for("location.pathname === '/wiki/Apple' && document.readyState === 'complete'")
        assert "A fruit." in page.text()
    finally:
        page.close()
