"""Running the web demo for tests: the page served on a free port of 127.0.0.1 from a thread of the
test process (so a test can look at the server's files and caches), and headless Chromium to drive it."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
import pytest
from PIL import Image

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic")


class DemoServer:
    """The page of :func:`ivfusion.demo.build_app` at :attr:`url`, its Gradio folder at :attr:`temp_dir`."""

    def __init__(self, app: Any, url: str, temp_dir: Path) -> None:
        self.app, self.url, self.temp_dir = app, url, temp_dir

    def files(self) -> List[Path]:
        """Every file the server holds now."""
        return sorted(p for p in self.temp_dir.rglob("*") if p.is_file())


@contextlib.contextmanager
def demo_server() -> Iterator[DemoServer]:
    """Serve the demo from this process with a private ``GRADIO_TEMP_DIR``; closed and the
    environment restored on exit."""
    pytest.importorskip("gradio", reason="the demo needs the extra [demo] (gradio)")
    from ivfusion.demo import build_app, free_port, launch_options

    temp_dir = Path(tempfile.mkdtemp(prefix="ivfusion-demo-test-")).resolve()
    previous = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(temp_dir)
    app = None
    try:
        app = build_app()
        port = free_port()
        app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                   **launch_options())
        yield DemoServer(app, f"http://127.0.0.1:{port}/", temp_dir)
    finally:
        if app is not None:
            app.close()
        if previous is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = previous
        shutil.rmtree(temp_dir, ignore_errors=True)


def chromium_paths() -> tuple:
    """``(chromium, chromedriver)`` from the system's packages; skips the test when either is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("Chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver; "
                    ".ci/run installs them where it can)")
    return browser, driver


def start_chromium(profile: Path, downloads: Path, size: Sequence[int] = (1400, 1000)):
    """Headless Chromium (Selenium) with a fresh profile, downloading into ``downloads``."""
    pytest.importorskip("selenium", reason="the browser tests need selenium (extra [test])")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={size[0]},{size[1]}")
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    return chrome


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == "PNG", f"{path.name} is {img.format}, not PNG"
        return np.asarray(img)


def result_pngs(outputs: Sequence[Any], methods: Sequence[str]) -> Dict[str, Path]:
    """``{method: downloaded PNG}`` from the outputs of the ``/fuse`` endpoint (gradio_client): the
    download buttons' files are named ``<stem>_<method>.png``."""
    found = {}
    for value in outputs:
        if isinstance(value, str) and value.endswith(".png"):
            method = Path(value).stem.rsplit("_", 1)[-1]
            if method in methods:
                found[method] = Path(value)
    return found


def metrics_rows(outputs: Sequence[Any]) -> Dict[str, Dict[str, Any]]:
    """``{method: {column: value}}`` of the metrics table among the ``/fuse`` outputs."""
    table = next(v for v in outputs if isinstance(v, dict) and "headers" in v and "data" in v)
    return {row[0]: dict(zip(table["headers"], row)) for row in table["data"]}


def option_values(**given: Any) -> Dict[str, Any]:
    """Every option of the page by name, the defaults unless ``given``."""
    from ivfusion.demo._work import demo_options

    values = {o.name: o.default for o in demo_options()}
    unknown = set(given) - set(values)
    assert not unknown, f"no such option: {unknown}"
    values.update(given)
    return values


def optional(path: Optional[Path]):
    from gradio_client import handle_file

    return handle_file(str(path)) if path is not None else None
