"""The web demo in a real browser: headless Chromium (Debian's package) driven by Selenium against the
page served on a free port of 127.0.0.1. Skipped, with the reason, only where Chromium or its driver
cannot be had (``.ci/run`` installs them)."""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Callable, List, Sequence

import numpy as np
import pytest

import ivfusion

from .demo_support import chromium_paths, demo_server, read_png, start_chromium

TIMEOUT_S = 180  # a fusion on a busy 2-core machine


@pytest.fixture(scope="module")
def server():
    chromium_paths()  # skip before starting anything when there is no browser
    with demo_server() as s:
        yield s


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory):
    downloads = tmp_path_factory.mktemp("downloads")
    chrome = start_chromium(tmp_path_factory.mktemp("profile"), downloads)
    chrome.downloads = downloads
    try:
        yield chrome
    finally:
        driver_process = chrome.service.process
        chrome.quit()
        assert driver_process.poll() is not None, "chromedriver still running after quit()"


def wait_for(what: str, check: Callable[[], object], timeout: float = TIMEOUT_S, poll: float = 0.1):
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def by_css(chrome, selector: str) -> List:
    from selenium.webdriver.common.by import By

    return chrome.find_elements(By.CSS_SELECTOR, selector)


def open_page(chrome, url: str) -> None:
    chrome.get(url)
    wait_for("the page", lambda: by_css(chrome, "#fuse"), timeout=60)


def upload(chrome, slot: str, path: Path) -> None:
    """Choose ``path`` in the file input of ``#<slot>-file`` and wait until the upload is shown."""
    [field] = by_css(chrome, f"#{slot}-file input[type=file]")
    field.send_keys(str(path))
    wait_for(f"the upload of {path.name}", lambda: path.stem in by_css(chrome, f"#{slot}-file")[0].text)


def choose_methods(chrome, names: Sequence[str]) -> None:
    for box in by_css(chrome, "#methods input[type=checkbox]"):
        if box.is_selected() != (box.get_attribute("name") in names):
            box.click()
    wait_for("the method choice", lambda: sorted(b.get_attribute("name") for b in by_css(chrome, "#methods input")
                                                  if b.is_selected()) == sorted(names), timeout=10)


def shown_results(chrome, methods: Sequence[str]):
    """``{method: (naturalWidth, naturalHeight)}`` of each result image, once all are loaded."""
    sizes = {}
    for m in methods:
        imgs = [i for i in by_css(chrome, f"#slider-{m} img") if f"_{m}.png" in (i.get_attribute("src") or "")]
        if not imgs or not chrome.execute_script("return arguments[0].complete", imgs[0]):
            return None
        sizes[m] = (imgs[0].get_property("naturalWidth"), imgs[0].get_property("naturalHeight"))
    return sizes if all(w > 0 for w, _ in sizes.values()) else None


def metrics_table(chrome) -> List[List[str]]:
    """The body rows of the metrics table as the user sees them (cells' text)."""
    rows = [r for r in by_css(chrome, "#metrics [role=row]") if r.get_attribute("aria-rowindex") != "1"]
    return [[c.text for c in r.find_elements("css selector", "[role=gridcell]")] for r in rows]


def test_fuse_two_methods_in_the_browser(server, browser, tmp_path):
    ir, vis = ivfusion.data.sample_pair("night", as_path=True)
    methods = ["average", "guided"]
    open_page(browser, server.url)
    upload(browser, "ir", ir)
    upload(browser, "vis", vis)
    # uploading switches the example choice off (the uploads win in any case)
    wait_for("the example choice to switch to the uploads", timeout=30,
             check=lambda: by_css(browser, "#example input")[0].get_attribute("value") == "none: use the uploads")
    choose_methods(browser, methods)
    by_css(browser, "#fuse")[0].click()
    sizes = wait_for("both results", lambda: shown_results(browser, methods))
    assert sizes == {m: (640, 480) for m in methods}
    assert len(by_css(browser, "#grid img")) == 2  # the grid of several results

    status = wait_for("the status", lambda: by_css(browser, "#status")[0].text)
    assert status.startswith("Fused a 640x480 pair with 2 method(s)")
    rows = wait_for("the metrics table", lambda: metrics_table(browser))
    assert [r[0] for r in rows] == methods
    for row in rows:
        values = [float(c) for c in row[1:]]
        assert len(values) == 8 and all(math.isfinite(v) for v in values), row
    # the uploads are deleted once read, and the emptied inputs are ready for the next pair
    assert not [p for p in server.files() if p.name in (ir.name, vis.name)]
    wait_for("emptied upload inputs", lambda: by_css(browser, "#ir-file input[type=file]"), timeout=10)

    by_css(browser, "#download-average")[0].click()
    png = browser.downloads / "night_ir_average.png"
    wait_for("the download", lambda: png.is_file() and not list(browser.downloads.glob("*.crdownload")), timeout=30)
    np.testing.assert_array_equal(read_png(png), ivfusion.fuse(ir, vis, "average"))

    # Everything the page loaded came from the server itself (no web fonts, no CDN)
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(u.startswith(server.url) for u in loaded), [u for u in loaded if not u.startswith(server.url)]

    browser.execute_script("window.scrollTo(0, 0)")
    shot = tmp_path / "demo.png"
    assert browser.save_screenshot(str(shot))
    height, width = read_png(shot).shape[:2]
    assert width == 1400 and height >= 800


def test_a_corrupt_upload_shows_a_message_then_a_valid_request_works(server, browser, tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(os.urandom(3000))
    ir, vis = ivfusion.data.sample_pair("mri_pet", as_path=True)
    open_page(browser, server.url)
    upload(browser, "ir", corrupt)
    upload(browser, "vis", vis)
    choose_methods(browser, ["average"])
    by_css(browser, "#fuse")[0].click()
    message = wait_for("the error message", lambda: [t.text for t in by_css(browser, "[data-testid=toast-text]")
                                                     if t.text])  # empty while it slides in
    assert message == ["Infrared image 'corrupt.png' is not an image ivfusion can read: PNG, JPEG, TIFF, BMP or WebP, "
                       "8- or 16-bit (cannot identify image file 'corrupt.png')"]
    assert "Traceback" not in browser.page_source and str(server.temp_dir) not in message[0]
    wait_for("the failure note", lambda: "The last request failed" in by_css(browser, "#status")[0].text, timeout=10)
    assert not [p for p in server.files() if p.name == "corrupt.png"]
    by_css(browser, "[data-testid=toast-close]")[0].click()

    upload(browser, "ir", ir)  # the inputs were emptied: the same page takes a new pair
    upload(browser, "vis", vis)
    by_css(browser, "#fuse")[0].click()
    assert wait_for("the result", lambda: shown_results(browser, ["average"])) == {"average": (256, 256)}
    assert by_css(browser, "#status")[0].text.startswith("Fused a 256x256 pair with 1 method(s)")
    assert not by_css(browser, "[data-testid=toast-text]")
